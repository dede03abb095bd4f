"""The consumers' inbox on MongoDB: which events each consumer has handled."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from m8.eventstore.mongo import Document


class MongoInbox:
    """One small document per (consumer, event); old ones expire after `retention`."""

    def __init__(self, db: AsyncDatabase[Document], retention: timedelta = timedelta(days=7)):
        self.inbox = db["inbox"]
        self.retention = retention

    async def create_indexes(self) -> None:
        """The TTL index that keeps the inbox small."""
        await self.inbox.create_index(
            "at", expireAfterSeconds=int(self.retention.total_seconds()), name="ttl"
        )

    async def seen(self, consumer: str, event_id: str) -> bool:
        """Whether `consumer` already handled `event_id`."""
        return await self.inbox.find_one({"_id": f"{consumer}:{event_id}"}) is not None

    async def remember(self, consumer: str, event_id: str) -> None:
        """Notes that `consumer` handled `event_id`."""
        # A concurrent delivery of the same event may have got here first.
        with contextlib.suppress(DuplicateKeyError):
            await self.inbox.insert_one({"_id": f"{consumer}:{event_id}", "at": datetime.now(UTC)})
