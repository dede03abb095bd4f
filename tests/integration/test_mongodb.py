"""What m8 relies on from MongoDB, shown against the real MongoDB-wire server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

Client = AsyncMongoClient[dict[str, Any]]


async def test_unique_index_refuses_a_second_event_at_the_same_version(
    mongo: Client, mongo_db_name: str
) -> None:
    events = mongo[mongo_db_name]["events"]
    await events.create_index(
        [("aggregate_type", 1), ("aggregate_id", 1), ("version", 1)], unique=True
    )
    await events.insert_one({"aggregate_type": "secret", "aggregate_id": "a", "version": 1})
    with pytest.raises(DuplicateKeyError):
        await events.insert_one({"aggregate_type": "secret", "aggregate_id": "a", "version": 1})
    assert await events.count_documents({}) == 1


async def test_transaction_commits_both_writes_or_neither(
    mongo: Client, mongo_db_name: str
) -> None:
    db = mongo[mongo_db_name]
    await db.create_collection("a")
    await db.create_collection("b")
    async with mongo.start_session() as session, await session.start_transaction():
        await db["a"].insert_one({"n": 1}, session=session)
        await db["b"].insert_one({"n": 1}, session=session)
    async with mongo.start_session() as session:
        await session.start_transaction()
        await db["a"].insert_one({"n": 2}, session=session)
        await db["b"].insert_one({"n": 2}, session=session)
        await session.abort_transaction()
    assert [d["n"] for d in await db["a"].find({}, {"_id": 0}).to_list()] == [1]
    assert await db["b"].count_documents({}) == 1


async def test_change_stream_sees_inserts_in_order(mongo: Client, mongo_db_name: str) -> None:
    events = mongo[mongo_db_name]["events"]
    await events.insert_one({"n": 0})
    async with await events.watch() as stream:
        await events.insert_many([{"n": 1}, {"n": 2}])
        seen: list[int] = []
        async with asyncio.timeout(10):
            while len(seen) < 2:
                change = await stream.next()
                seen.append(change["fullDocument"]["n"])
    assert seen == [1, 2]
