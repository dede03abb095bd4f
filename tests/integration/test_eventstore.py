"""The MongoDB event store: optimistic concurrency, atomic appends, indexed loads."""

from __future__ import annotations

import asyncio

import pytest

from m8.eventsourcing import ConcurrencyConflict
from m8.eventstore import MongoEventRecorder
from tests.support.events import METADATA, SampleHappened


async def test_two_writers_at_the_same_version_one_wins_one_conflicts(
    recorder: MongoEventRecorder,
) -> None:
    await recorder.append("test", "agg", 0, [SampleHappened(0)], METADATA)
    outcomes = await asyncio.gather(
        recorder.append("test", "agg", 1, [SampleHappened(1)], METADATA),
        recorder.append("test", "agg", 1, [SampleHappened(2)], METADATA),
        return_exceptions=True,
    )
    conflicts = [o for o in outcomes if isinstance(o, ConcurrencyConflict)]
    assert len(conflicts) == 1
    assert conflicts[0].expected_version == 1
    assert [e.version for e in await recorder.load("test", "agg")] == [1, 2]


async def test_several_events_land_together_or_not_at_all(recorder: MongoEventRecorder) -> None:
    await recorder.append("test", "agg", 0, [SampleHappened(1)], METADATA)
    with pytest.raises(ConcurrencyConflict):
        # Stale expected version: neither of the two may be stored.
        await recorder.append("test", "agg", 0, [SampleHappened(2), SampleHappened(3)], METADATA)
    await recorder.append("test", "agg", 1, [SampleHappened(2), SampleHappened(3)], METADATA)
    loaded = await recorder.load("test", "agg")
    assert [e.decode() for e in loaded] == [SampleHappened(1), SampleHappened(2), SampleHappened(3)]


async def test_loading_an_aggregate_reads_only_its_events_by_index(
    recorder: MongoEventRecorder,
) -> None:
    for name in ("a", "b", "c"):
        await recorder.append("test", name, 0, [SampleHappened(1), SampleHappened(2)], METADATA)
    events = await recorder.load("test", "b")
    assert {e.aggregate_id for e in events} == {"b"}
    plan = await recorder.events.find({"aggregate_type": "test", "aggregate_id": "b"}).explain()
    assert "COLLSCAN" not in str(plan["queryPlanner"]["winningPlan"])


async def test_stored_event_round_trips_with_metadata(recorder: MongoEventRecorder) -> None:
    [stored] = await recorder.append("test", "agg", 0, [SampleHappened(7)], METADATA)
    loaded = await recorder.get(stored.event_id)
    assert loaded == stored
    assert loaded.routing_key == "test.sample_happened"
    assert await recorder.get("not-an-id") is None


async def test_read_all_continues_after_a_position(recorder: MongoEventRecorder) -> None:
    written = []
    for n in range(5):
        written += await recorder.append("test", f"agg{n}", 0, [SampleHappened(n)], METADATA)
    after_second = [e.event_id async for e in recorder.read_all(after=written[1].event_id)]
    assert after_second == [e.event_id for e in written[2:]]


async def test_racing_multi_event_appends_one_wins_one_conflicts(
    recorder: MongoEventRecorder,
) -> None:
    outcomes = await asyncio.gather(
        *(
            recorder.append("test", "race", 0, [SampleHappened(n), SampleHappened(n)], METADATA)
            for n in range(4)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(o, list) for o in outcomes) == 1
    assert all(isinstance(o, (list, ConcurrencyConflict)) for o in outcomes), outcomes
    assert len(await recorder.load("test", "race")) == 2
