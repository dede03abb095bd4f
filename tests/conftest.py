"""Shared fixtures: real servers (tests/servers.py), and m8's stores on them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient

from m8.eventstore import MongoEventRecorder, MongoInbox
from m8.eventstore.mongo import Document
from m8.messaging import Broker as AmqpBroker
from tests.servers import (
    Broker,
    aws,
    broker,
    mongo,
    mongo_db_name,
    services,
    state_dir,
    vault,
)

__all__ = ["aws", "broker", "mongo", "mongo_db_name", "services", "state_dir", "vault"]


@pytest.fixture
async def recorder(mongo: AsyncMongoClient[Document], mongo_db_name: str) -> MongoEventRecorder:
    store = MongoEventRecorder(mongo[mongo_db_name])
    await store.create_indexes()
    return store


@pytest.fixture
async def inbox(mongo: AsyncMongoClient[Document], mongo_db_name: str) -> MongoInbox:
    box = MongoInbox(mongo[mongo_db_name])
    await box.create_indexes()
    return box


@pytest.fixture
async def amqp(broker: Broker) -> AsyncIterator[AmqpBroker]:
    connection = await AmqpBroker.connect(broker.url, name="test")
    yield connection
    await connection.close()


# The slow tiers: `make test` runs them, `make test-fast` leaves them out (pyproject.toml
# `markers` says what each is). Whole folders are marked here; single tests carry theirs.
_FOLDER_TIERS = {"chaos": "chaos", "packaging": "packaging"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.parent.name
        if folder in _FOLDER_TIERS:
            item.add_marker(_FOLDER_TIERS[folder])
