"""One writer per path at a time: the leases that order upstream writes (`reactor_path_leases`).

Reactors of a store type compete for its queue, so two uploads to one path can be in hand
at once, and so can two deliveries of one upload (a redelivery, a message published
twice). Before writing upstream, a reactor takes the path's lease for its upload; while
anyone else holds it, it waits (a few seconds: then the delivery goes back to its queue,
PathBusy, and comes again). So no two writes to a path ever overlap, not even a
twin's: the check "was a newer upload stored already, or this one settled?" made under
the lease decides for good whether the upload may be written (m8.reactors.reactor).

A lease is held by an upload in one reactor process (`owner`). Within a process, handlers
of one path queue on a lock of their own (`LocalPaths`), so the process that holds a
path's lease may take it again for the same upload at once: a retry of the handler.
Another process may take it when it expired, or when its upload has settled (the caller
read so in the Secret). The holder renews it while it works (`Hold`), so a lease runs out
soon after its reactor died or lost MongoDB, and a holder sends the request that writes
the value only while its lease has more left than that request and what follows it can
take (the adapter calls `Hold.check` right before it): it can never still be writing when
another takes the path. A holder that fails gives the lease back so that the
redelivery need not wait; one cancelled mid-write (a shutdown) does not, since its last
request may still reach upstream: that lease runs out.

A path's document stays: "no lease document" must mean "no upload of this path ever took
one", or a reactor could miss a newer upload stored meanwhile (so no TTL index either).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from m8.eventsourcing import EventStoreUnavailable
from m8.eventstore.mongo import Document, mongo_errors
from m8.messaging import NotNow

log = logging.getLogger(__name__)

COLLECTION = "reactor_path_leases"
# `until` of a lease given back: long past, so anyone may take it.
GIVEN_BACK = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Taken:
    """The lease is ours; `previous` held it before (None: nobody). That may be the same
    upload: an earlier delivery of it, which may have settled it since."""

    previous: str | None


@dataclass(frozen=True)
class Held:
    """Another upload, or another process, holds the lease until `until`."""

    holder: str
    until: datetime


@dataclass(frozen=True)
class LeaseTerms:
    """How long a lease lasts, how often its holder renews it, and how much of it must be
    left for a write attempt to start."""

    ttl: timedelta
    renew_every: timedelta
    write_margin: timedelta

    @classmethod
    def for_upstream_timeout(cls, timeout: float) -> LeaseTerms:
        """Terms for upstream requests of at most `timeout` seconds each. A write attempt
        starts, and its request that writes the value is sent, only while five timeouts
        of the lease are left: that request, then the write's record (KV v2) and a
        check-and-set conflict's short wait, end well within them."""
        return cls(
            ttl=timedelta(seconds=6 * timeout),
            renew_every=timedelta(seconds=timeout / 2),
            write_margin=timedelta(seconds=5 * timeout),
        )


class LeaseLost(Exception):
    """This process no longer holds the path's lease for certain long enough to write."""


class PathLeases:
    """The leases of every path (by the Secret's id), one document each; `owner` names
    the reactor process taking them."""

    def __init__(self, db: AsyncDatabase[Document], owner: str) -> None:
        self.collection = db[COLLECTION]
        self.owner = owner

    async def take(
        self, path: str, upload_id: str, until: datetime, now: datetime, settled: str | None = None
    ) -> Taken | Held:
        """Takes the lease of `path` for `upload_id` until `until` if it is free: nobody
        holds it, this process does for this upload, it expired, or its holder is
        `settled` (an upload the caller knows to have settled). Otherwise who holds it.

        Read, then compare-and-set on exactly what was read (so who held it before is
        known for certain), or insert for a new path; either lost to a rival, it looks
        again. Not one findAndModify: SecantusDB, the local MongoDB server, scans the
        whole collection for each, which grows with every path ever written.
        """
        ours = {"holder": upload_id, "owner": self.owner, "until": until}
        while True:
            with mongo_errors():
                doc = await self.collection.find_one({"_id": path})
                if doc is None:
                    try:
                        await self.collection.insert_one({"_id": path, **ours})
                    except DuplicateKeyError:
                        continue  # a rival took it first
                    return Taken(None)
                holder, held_until = str(doc["holder"]), doc["until"]  # tz_aware client
                free = (
                    held_until < now
                    or (holder == upload_id and doc.get("owner") == self.owner)
                    or holder == settled
                )
                if not free:
                    return Held(holder, held_until)
                seen = {k: doc.get(k) for k in ("holder", "owner", "until")}
                changed = await self.collection.update_one({"_id": path, **seen}, {"$set": ours})
            if changed.matched_count == 1:
                return Taken(holder)
            # It changed between the read and the write: look again.

    async def renew(self, path: str, upload_id: str, until: datetime) -> bool:
        """Extends our lease to `until`; False if it is no longer ours. A lease given back
        stays given back: a renewal sent before `give_back` that lands after it changes
        nothing, rather than keep the path from the redelivery for a whole TTL."""
        with mongo_errors():
            result = await self.collection.update_one(
                {
                    "_id": path,
                    "holder": upload_id,
                    "owner": self.owner,
                    "until": {"$gt": GIVEN_BACK},
                },
                {"$set": {"until": until}},
            )
        return result.matched_count == 1

    async def give_back(self, path: str, upload_id: str) -> None:
        """Frees our lease at once (a failed holder's redelivery need not wait for it)."""
        with mongo_errors():
            await self.collection.update_one(
                {"_id": path, "holder": upload_id, "owner": self.owner},
                {"$set": {"until": GIVEN_BACK}},
            )


class Hold:
    """Our lease on a path while we work under it: renewed in the background."""

    def __init__(
        self,
        leases: PathLeases,
        path: str,
        upload_id: str,
        terms: LeaseTerms,
        until: datetime,
        now: Callable[[], datetime],
    ) -> None:
        self.leases = leases
        self.path = path
        self.upload_id = upload_id
        self.terms = terms
        self.until = until
        self.now = now
        self.lost = False

    def check(self) -> None:
        """LeaseLost unless the lease is ours for longer than a write attempt can take."""
        if self.lost or self.until - self.now() < self.terms.write_margin:
            raise LeaseLost(f"upload {self.upload_id} no longer holds its path long enough")

    async def renew_until_cancelled(self) -> None:
        """Renews the lease every `renew_every`; stops once it is not ours any more."""
        while not self.lost:
            await asyncio.sleep(self.terms.renew_every.total_seconds())
            until = self.now() + self.terms.ttl
            try:
                if await self.leases.renew(self.path, self.upload_id, until):
                    self.until = until
                else:
                    self.lost = True
            except EventStoreUnavailable as exc:
                # It may come back before the lease runs out; `check` stops writes meanwhile.
                log.warning("could not renew a path's lease: %s", exc)


class PathBusy(NotNow):
    """Another upload has held the path for as long as a delivery waits for it: the
    message goes back to the end of its queue, uncounted, and is taken again later."""


class LocalPaths:
    """A lock per path within this process: its handlers of one path take turns."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, path: str, deadline: float | None = None) -> AsyncIterator[None]:
        """Waits for this process's turn at `path`, until `deadline` (loop time; None: as
        long as it takes); PathBusy if it did not come."""
        lock, users = self._locks.get(path, (asyncio.Lock(), 0))
        self._locks[path] = (lock, users + 1)
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    await lock.acquire()
            except TimeoutError:
                raise PathBusy("another delivery of this process holds the path") from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._locks[path]
            if users == 1:
                del self._locks[path]
            else:
                self._locks[path] = (lock, users - 1)
