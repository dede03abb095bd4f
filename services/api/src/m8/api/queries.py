"""The API's reads: from the read models, plus the write side where it must be current.

MongoDB-specific (its queries need more than the recorder port offers); its driver errors
become EventStoreUnavailable through `mongo_errors`, as everywhere.

The stage of a pending upload (`UploadView.stage`, for display) is read from what others
own, read-only: the outbox mark of its SecretUploadRequested event (the recorder's
`published`) and the reactors' lease on its path (`reactor_path_leases`, see
docs/contracts.md). Only for an answer that is pending, so an upload that settles before
its first answer costs no read more; and a stage that cannot be read is none, never a
failed answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from m8.api.auth import covered
from m8.api.handlers import UPLOAD_REQUESTS
from m8.api.models import (
    HistoryEntry,
    SecretHistory,
    SecretList,
    SecretView,
    UploadView,
)
from m8.api.projections import SECRETS, UPLOADS
from m8.api.settled import SettledUploads
from m8.domain import Secret, secret_id
from m8.domain.events import SecretUploadRequested
from m8.eventsourcing import EventRecorder, EventStoreUnavailable
from m8.eventstore import MongoEventRecorder, unauthorized
from m8.eventstore.mongo import Document, mongo_errors
from m8.protocol.status import SETTLED, UploadStage

log = logging.getLogger(__name__)

_FIRST_POLL = 0.05
_MAX_POLL = 1.0
# How long a wait trusts the change stream before it looks again for itself.
_SAFETY_NET = 5.0
# The reactors' leases, one per path by the Secret's id: {_id, holder: upload id, owner,
# until} (m8.reactors.path_leases, which the API does not import). Read, never written.
PATH_LEASES = "reactor_path_leases"
# At most one warning per this many seconds that stages cannot be read: a failing
# database must not flood the log at every status request.
STAGE_WARNING_INTERVAL = 60.0


@dataclass(frozen=True)
class PathLease:
    """Who holds a path's lease, and until when (a lease given back ended in 1970)."""

    holder: str
    until: datetime

    @classmethod
    def of(cls, doc: Document | None) -> PathLease | None:
        if doc is None or not isinstance(doc.get("holder"), str):
            return None
        until = doc.get("until")
        if not isinstance(until, datetime):
            return None
        return cls(doc["holder"], until if until.tzinfo else until.replace(tzinfo=UTC))


def pending_stage(
    upload_id: str,
    published: bool,
    lease: PathLease | None,
    now: datetime,
    holder_pending: bool = False,
) -> UploadStage:
    """The stage of a pending upload from what the reads found.

    `published`: its SecretUploadRequested reached the broker. `lease`: its path's lease;
    `holder_pending`: the lease's holder, if another upload, has not settled (a reactor
    keeps the lease of an upload it stored until it runs out). Whether a reactor already
    holds a `waiting` upload or the broker still does is not told apart: either way it
    waits for the holder.
    """
    if lease is not None and lease.until > now:
        if lease.holder == upload_id:
            return "writing"
        if published and holder_pending:
            return "waiting"
    return "queued" if published else "accepted"


class Queries:
    """Read models by the questions callers ask."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        replicas: int = 1,
        recorder: EventRecorder | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uploads = db[UPLOADS]
        self.secrets = db[SECRETS]
        self.upload_requests = db[UPLOAD_REQUESTS]
        self.path_leases = db[PATH_LEASES]
        self.recorder = recorder if recorder is not None else MongoEventRecorder(db)
        self.settled = SettledUploads(self.uploads, replicas)
        self._clock = clock
        self._stage_warned_at: float | None = None  # when a stage last could not be read

    async def create_indexes(self) -> None:
        # Each matches one query below: its filter's fields first, then its sort.
        await self.secrets.create_index([("store", ASCENDING), ("path", ASCENDING)])
        await self.uploads.create_index(
            [("store", ASCENDING), ("path", ASCENDING), ("requested_at", ASCENDING)]
        )

    async def upload(
        self, upload_id: str, visible: Callable[[str, str], bool], wait: float = 0
    ) -> UploadView | None:
        """The upload's state, None unless its (store, path) is `visible` to the caller.

        With `wait`, until it settles or time is up: woken by `SettledUploads` when its
        outcome is projected, polling with backoff only while that cannot wake it. A view
        still pending when answered carries its `stage`.
        """
        deadline = time.monotonic() + wait
        pause = _FIRST_POLL
        with self.settled.waiting(upload_id) as woken:
            while True:
                woken.clear()  # before the read: a change after it still wakes the wait
                found = await self._upload(upload_id)
                if found is None:
                    return None
                view, projected = found
                if not visible(view.store, view.path):
                    return None
                if view.status in SETTLED:
                    return view
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return view.model_copy(update={"stage": await self._stage(view, projected)})
                if self.settled.live:
                    timeout = min(remaining, _SAFETY_NET)
                else:
                    timeout, pause = min(remaining, pause), min(pause * 2, _MAX_POLL)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await woken.wait()

    async def _upload(self, upload_id: str) -> tuple[UploadView, bool] | None:
        """The upload's view, and whether the read model has it (else the write side's
        record of the request told it)."""
        with mongo_errors():
            doc = await self.uploads.find_one({"_id": upload_id})
            projected = doc is not None
            if doc is None:
                # Accepted but not projected yet: the write side knows it is pending.
                request = await self.upload_requests.find_one({"_id": upload_id})
                if request is None:
                    return None
                doc = {**request, "status": "pending", "updated_at": request["requested_at"]}
        return UploadView(upload_id=upload_id, **_fields(doc, UploadView)), projected

    async def _stage(self, view: UploadView, projected: bool) -> UploadStage | None:
        """The stage of a pending upload: one read by _id (the path's lease), a second
        for the lease's holder if another upload holds it, and while the upload is not
        projected yet, one of its own events first.

        None if any of them fails: a display must not fail the status it decorates. The
        failure is logged, at most once a STAGE_WARNING_INTERVAL.
        """
        try:
            return await self._read_stage(view, projected)
        except EventStoreUnavailable as exc:
            self._warn_no_stage(exc)
            return None

    def _warn_no_stage(self, exc: EventStoreUnavailable) -> None:
        now = self._clock()
        last = self._stage_warned_at
        if last is not None and now - last < STAGE_WARNING_INTERVAL:
            return
        self._stage_warned_at = now
        if unauthorized(exc):
            log.warning(
                "the API's MongoDB role may not read what an upload's stage needs (%s): "
                "GET /v1/uploads shows no stage until deploy/mongodb/users.js is applied "
                "again",
                PATH_LEASES,
            )
        else:
            log.warning(
                "an upload's stage could not be read (%s); GET /v1/uploads shows none meanwhile",
                exc,
            )

    async def _read_stage(self, view: UploadView, projected: bool) -> UploadStage:
        aggregate_id = secret_id(view.store, view.path)
        # The read model is projected from the broker's message: projected, it was
        # published (taken so after a rebuild of the read model too: docs/contracts.md).
        if not projected and not await self.recorder.published(
            Secret.aggregate_type,
            aggregate_id,
            SecretUploadRequested.event_type,
            {"upload_id": view.upload_id},
        ):
            return "accepted"
        with mongo_errors():
            lease = PathLease.of(await self.path_leases.find_one({"_id": aggregate_id}))
            now = datetime.now(UTC)
            holder_pending = False
            if lease is not None and lease.until > now and lease.holder != view.upload_id:
                holder = await self.uploads.find_one({"_id": lease.holder}, {"status": 1})
                # Not projected yet counts as pending: it holds the lease, so it was accepted.
                holder_pending = holder is None or holder.get("status") == "pending"
        return pending_stage(view.upload_id, True, lease, now, holder_pending)

    async def secrets_page(
        self,
        store: str | None,
        prefix: str | None,
        limit: int,
        after: str | None,
        scope: tuple[str, ...] | None,
        stores: tuple[str, ...] | None = (),
    ) -> SecretList:
        """Secrets in (store, path) order, `limit` at a time, after the secret `after`.

        Only those under a prefix of `scope` (None: all) in one of `stores` (None: all);
        `after` is a secret's id.
        """
        if (scope is not None and not scope) or (stores is not None and not stores):
            return SecretList(secrets=[], next_after=None)
        conditions: list[Document] = []
        if store is not None:
            conditions.append({"store": store})
        if prefix:
            conditions.append({"path": _starting_with(prefix)})
        if scope is not None:
            conditions.append({"$or": [_covered_by(allowed) for allowed in scope]})
        if stores is not None:
            conditions.append({"store": {"$in": list(stores)}})
        if after is not None:
            # Ids are "<store>:<path>" and store names hold no ':'.
            after_store, _, after_path = after.partition(":")
            conditions.append(
                {
                    "$or": [
                        {"store": {"$gt": after_store}},
                        {"store": after_store, "path": {"$gt": after_path}},
                    ]
                }
            )
        query = {"$and": conditions} if conditions else {}
        with mongo_errors():
            cursor = self.secrets.find(query).sort([("store", ASCENDING), ("path", ASCENDING)])
            docs = await cursor.limit(limit + 1).to_list()
        page = docs[:limit]
        return SecretList(
            secrets=[SecretView(**_fields(doc, SecretView)) for doc in page],
            next_after=page[-1]["_id"] if len(docs) > limit else None,
        )

    async def secret(self, store: str, path: str) -> SecretView | None:
        with mongo_errors():
            doc = await self.secrets.find_one({"_id": secret_id(store, path)})
        return SecretView(**_fields(doc, SecretView)) if doc else None

    async def history(self, store: str, path: str) -> SecretHistory | None:
        """Every upload to the secret, oldest first; None if there was none."""
        cursor = self.uploads.find({"store": store, "path": path}).sort("requested_at", ASCENDING)
        with mongo_errors():
            entries = [_history_entry(doc) async for doc in cursor]
        if not entries:
            return None
        return SecretHistory(store=store, path=path, history=entries)


def _history_entry(doc: Document) -> HistoryEntry:
    # The history has always shown an upload whose key expired as pending (its schema has
    # no `expired`): kept so until HistoryEntry.status takes every UploadStatus.
    if doc["status"] == "expired":
        doc = {**doc, "status": "pending"}
    return HistoryEntry(
        upload_id=doc["_id"],
        completed_at=None if doc["status"] == "pending" else doc["updated_at"],
        **_fields(doc, HistoryEntry),
    )


def _starting_with(prefix: str) -> Document:
    # A range, not a regex: it uses the index and needs no escaping.
    return {"$gte": prefix, "$lt": prefix + "\U0010ffff"}


def _covered_by(prefix: str) -> Document:
    """The query for the paths `prefix` covers (m8.api.auth.covered, the one rule)."""
    exact, start = covered(prefix)
    starting = {"path": _starting_with(start)}
    return starting if exact is None else {"$or": [{"path": exact}, starting]}


def _fields(doc: Document, model: type[BaseModel]) -> dict[str, Any]:
    # Read-model documents carry bookkeeping (_id, versions, key ids) a view does not show.
    return {name: doc.get(name) for name in model.model_fields if name in doc}
