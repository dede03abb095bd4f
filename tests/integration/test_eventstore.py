"""What only the MongoDB recorder does: indexed loads, conflicts between concurrent
transactions, driver errors translated. The rest of its contract, which the in-memory
recorder shares, is in test_recorder_contract.py."""

from __future__ import annotations

import asyncio

import pytest
from pymongo import AsyncMongoClient

from m8.eventsourcing import EventStoreUnavailable, TransactionConflict
from m8.eventstore import MongoEventRecorder
from m8.eventstore.mongo import Document
from tests.support.events import METADATA, SampleHappened


async def test_loading_an_aggregate_reads_only_its_events_by_index(
    recorder: MongoEventRecorder,
) -> None:
    for name in ("a", "b", "c"):
        await recorder.append("test", name, 0, [SampleHappened(1), SampleHappened(2)], METADATA)
    events = await recorder.load("test", "b")
    assert {e.aggregate_id for e in events} == {"b"}
    plan = await recorder.events.find({"aggregate_type": "test", "aggregate_id": "b"}).explain()
    assert "COLLSCAN" not in str(plan["queryPlanner"]["winningPlan"])


async def test_transactions_writing_the_same_document_conflict_and_only_one_lands(
    recorder: MongoEventRecorder,
) -> None:
    await recorder.records("test_counters").insert({"_id": "c", "n": 0})
    first_wrote, second_tried = asyncio.Event(), asyncio.Event()

    async def set_to(n: int) -> None:
        async with recorder.transaction() as unit:
            counters = unit.records("test_counters")
            await counters.delete("c")
            await counters.insert({"_id": "c", "n": n})
            if n == 1:
                first_wrote.set()
                await second_tried.wait()

    async def second() -> None:
        await first_wrote.wait()
        try:
            await set_to(10)
        finally:
            second_tried.set()

    outcomes = await asyncio.gather(set_to(1), second(), return_exceptions=True)

    assert outcomes[0] is None
    assert isinstance(outcomes[1], TransactionConflict)
    assert await recorder.records("test_counters").get("c") == {"_id": "c", "n": 1}


async def test_a_database_failure_is_event_store_unavailable_with_no_driver_type(
    mongo_db_name: str,
) -> None:
    # Nothing listens on port 1: the driver gives up after the selection timeout.
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200", tz_aware=True
    )
    unreachable = MongoEventRecorder(client[mongo_db_name])
    try:
        with pytest.raises(EventStoreUnavailable) as failed:
            await unreachable.load("test", "agg")
        with pytest.raises(EventStoreUnavailable):
            await unreachable.records("anything").get("x")
    finally:
        await client.close()

    assert str(failed.value) == "MongoDB failed (ServerSelectionTimeoutError)"
