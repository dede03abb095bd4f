"""A relay in a process of its own, for tests that kill it mid-stream."""

from __future__ import annotations

import asyncio

from m8.config import Settings
from m8.eventstore import MongoEventRecorder, OutboxRelay, connect_database
from m8.messaging import Broker


async def main() -> None:
    settings = Settings()
    assert settings.mongodb_uri
    db = await connect_database(settings.mongodb_uri, settings.mongodb_database)
    broker = await Broker.connect(settings.amqp_url, name="test-relay-process")
    # Small batches, so that a kill lands between publishing and marking.
    relay = OutboxRelay(
        MongoEventRecorder(db), broker, owner="doomed", batch=5, lease_seconds=1, grace=0
    )
    await relay.run()


if __name__ == "__main__":
    asyncio.run(main())
