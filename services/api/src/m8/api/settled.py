"""Wakes the long-polls of uploads as soon as their outcome is in the read model.

The replica that projects an outcome wakes its own waiters (`wake`). With several
replicas (`M8_API_REPLICAS` > 1) the outcome may be projected by another one, so each
also follows a change stream on `rm_uploads` for documents that reach a settled status.
While that stream is down (the database restarting, or a server without change streams),
waiters poll instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from m8.eventstore.mongo import Document
from m8.protocol.status import SETTLED

log = logging.getLogger(__name__)

_RETRY_SECONDS = 1.0


class SettledUploads:
    """Who waits for which upload, and the change stream that wakes them."""

    def __init__(self, uploads: AsyncCollection[Document], replicas: int = 1) -> None:
        self.uploads = uploads
        self.replicas = replicas
        self._waiters: dict[str, set[asyncio.Event]] = {}
        # Whether every projection wakes the waiters here, so they need not poll: always
        # with one replica, with several while the change stream is open.
        self.live = replicas == 1

    @contextlib.contextmanager
    def waiting(self, upload_id: str) -> Iterator[asyncio.Event]:
        """An event set when the upload's document settles, while the block runs.

        Enter it before reading the document, so that no change falls between the read
        and the wait.
        """
        woken = asyncio.Event()
        self._waiters.setdefault(upload_id, set()).add(woken)
        try:
            yield woken
        finally:
            waiters = self._waiters[upload_id]
            waiters.discard(woken)
            if not waiters:
                del self._waiters[upload_id]

    def wake(self, upload_id: str) -> None:
        """Wakes whoever waits here for `upload_id` (its document settled)."""
        for woken in self._waiters.get(upload_id, ()):
            woken.set()

    async def run(self) -> None:
        """With several replicas, follows the change stream until cancelled, reopening it
        after a failure; with one, returns at once."""
        if self.replicas == 1:
            return
        pipeline: list[dict[str, Any]] = [
            {
                "$match": {
                    "operationType": {"$in": ["insert", "replace"]},
                    "fullDocument.status": {"$in": sorted(SETTLED)},
                }
            },
            {"$project": {"documentKey": 1}},
        ]
        resume: Any = None
        while True:
            try:
                async with await self.uploads.watch(pipeline, resume_after=resume) as stream:
                    self.live = True
                    self._wake_all()  # whatever settled while the stream was down
                    async for change in stream:
                        resume = stream.resume_token
                        self.wake(str(change["documentKey"]["_id"]))
            except PyMongoError as exc:
                log.warning("the change stream of settled uploads failed, polling: %s", exc)
                resume = None if _unresumable(exc) else resume
            finally:
                self.live = False
            await asyncio.sleep(_RETRY_SECONDS)

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for woken in waiters:
                woken.set()


def _unresumable(exc: PyMongoError) -> bool:
    # ChangeStreamHistoryLost (286): the token is too old; start from now.
    return getattr(exc, "code", None) == 286
