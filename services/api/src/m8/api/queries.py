"""The API's reads: from the read models, plus the write side where it must be current.

MongoDB-specific (its queries need more than the recorder port offers); its driver errors
become EventStoreUnavailable through `mongo_errors`, as everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
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
from m8.domain import secret_id
from m8.eventstore.mongo import Document, mongo_errors
from m8.protocol.status import SETTLED

_FIRST_POLL = 0.05
_MAX_POLL = 1.0
# How long a wait trusts the change stream before it looks again for itself.
_SAFETY_NET = 5.0


class Queries:
    """Read models by the questions callers ask."""

    def __init__(self, db: AsyncDatabase[Document], replicas: int = 1) -> None:
        self.uploads = db[UPLOADS]
        self.secrets = db[SECRETS]
        self.upload_requests = db[UPLOAD_REQUESTS]
        self.settled = SettledUploads(self.uploads, replicas)

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
        outcome is projected, polling with backoff only while that cannot wake it.
        """
        deadline = time.monotonic() + wait
        pause = _FIRST_POLL
        with self.settled.waiting(upload_id) as woken:
            while True:
                woken.clear()  # before the read: a change after it still wakes the wait
                view = await self._upload(upload_id)
                if view is None or not visible(view.store, view.path):
                    return None
                remaining = deadline - time.monotonic()
                if view.status in SETTLED or remaining <= 0:
                    return view
                if self.settled.live:
                    timeout = min(remaining, _SAFETY_NET)
                else:
                    timeout, pause = min(remaining, pause), min(pause * 2, _MAX_POLL)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await woken.wait()

    async def _upload(self, upload_id: str) -> UploadView | None:
        with mongo_errors():
            doc = await self.uploads.find_one({"_id": upload_id})
            if doc is None:
                # Accepted but not projected yet: the write side knows it is pending.
                request = await self.upload_requests.find_one({"_id": upload_id})
                if request is None:
                    return None
                doc = {**request, "status": "pending", "updated_at": request["requested_at"]}
        return UploadView(upload_id=upload_id, **_fields(doc, UploadView))

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
