"""One writer per path at a time: the leases that order upstream writes (`reactor_path_leases`).

Reactors of a store type compete for its queue, so two uploads to one path can be in hand
at once. Before writing upstream, a reactor takes the path's lease for its upload; while
another upload holds it unexpired and unsettled, it waits. With the writes of different
uploads to a path never overlapping, the check "was a newer upload stored already?" made
under the lease decides for good whether an upload may be written (m8.reactors.reactor).
Twin deliveries of one upload share its lease and may write at once: the adapters'
idempotency by upload id makes that one upstream version.

A lease is held by an upload, not by a process: a redelivery of the same upload to
another reactor takes it over at once. It is never given back: it is free once its upload
has settled (the Secret says so), or once it expired. Expiry bounds the wait for a holder
that died, or whose delivery went back to the queue and cannot get past the uploads that
wait for its path; giving the lease back on a failure instead would let a newer upload
write while a twin delivery of the holder still may. A path's document stays: "no lease
document" must mean "no upload of this path ever took one", or a reactor could miss a
newer upload stored meanwhile (so no TTL index either).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from m8.eventsourcing import EventStoreUnavailable
from m8.eventstore.mongo import Document, mongo_errors

COLLECTION = "reactor_path_leases"


@dataclass(frozen=True)
class Taken:
    """The lease is ours; `previous` held it before (None: nobody). That may be the same
    upload: a twin delivery of it, which may have settled it since."""

    previous: str | None


@dataclass(frozen=True)
class Held:
    """Another upload holds the lease until `until`."""

    holder: str
    until: datetime


class PathLeases:
    """The leases of every path (by the Secret's id), one document each."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection = db[COLLECTION]

    async def take(
        self, path: str, upload_id: str, until: datetime, now: datetime, settled: str | None = None
    ) -> Taken | Held:
        """Takes the lease of `path` for `upload_id` until `until` if it is free: nobody
        holds it, we do, it expired, or its holder is `settled` (an upload the caller knows
        to have settled). Otherwise who holds it."""
        free: list[Document] = [{"holder": upload_id}, {"until": {"$lt": now}}]
        if settled is not None:
            free.append({"holder": settled})
        while True:
            try:
                with mongo_errors():
                    before = await self.collection.find_one_and_update(
                        {"_id": path, "$or": free},
                        {"$set": {"holder": upload_id, "until": until}},
                        upsert=True,
                        return_document=ReturnDocument.BEFORE,
                    )
            except EventStoreUnavailable as exc:
                if not isinstance(exc.__cause__, DuplicateKeyError):
                    raise
                # The document exists and matched none of the above: another holds it.
                with mongo_errors():
                    doc = await self.collection.find_one({"_id": path})
                if doc is None:  # removed by hand meanwhile
                    continue
                return Held(str(doc["holder"]), doc["until"])
            return Taken(None if before is None else str(before["holder"]))
