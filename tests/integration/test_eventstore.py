"""The MongoDB event store: optimistic concurrency, atomic appends, indexed loads."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest
from pymongo.asynchronous.client_session import AsyncClientSession

from m8.eventsourcing import Aggregate, ConcurrencyConflict, DomainEvent
from m8.eventstore import MongoEventRecorder, Repository
from tests.support.events import METADATA, SampleHappened


class Tally(Aggregate):
    """Sums the `n` of its events."""

    aggregate_type: ClassVar[str] = "test"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.total = 0

    def apply(self, event: DomainEvent) -> None:
        assert isinstance(event, SampleHappened)
        self.total += event.n

    def add(self, n: int) -> None:
        self._record(SampleHappened(n))


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


async def test_transactions_writing_the_same_document_conflict_and_only_one_lands(
    recorder: MongoEventRecorder,
) -> None:
    counters = recorder.db["test_counters"]
    await counters.insert_one({"_id": "c", "n": 0})
    first_wrote, second_tried = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with recorder.transaction() as session:
            await counters.update_one({"_id": "c"}, {"$inc": {"n": 1}}, session=session)
            first_wrote.set()
            await second_tried.wait()

    async def second() -> None:
        await first_wrote.wait()
        try:
            async with recorder.transaction() as session:
                await counters.update_one({"_id": "c"}, {"$inc": {"n": 10}}, session=session)
        finally:
            second_tried.set()

    outcomes = await asyncio.gather(first(), second(), return_exceptions=True)

    assert outcomes[0] is None
    assert isinstance(outcomes[1], ConcurrencyConflict)
    assert await counters.find_one({"_id": "c"}) == {"_id": "c", "n": 1}


async def test_work_in_a_transaction_runs_again_on_fresh_state_after_a_conflict(
    recorder: MongoEventRecorder,
) -> None:
    woken: list[str] = []
    repository = Repository(recorder, on_append=lambda: woken.append("relay"))
    seen_totals: list[int] = []

    async def add_five(session: AsyncClientSession) -> int:
        tally = await repository.load(Tally, "t")
        seen_totals.append(tally.total)
        if len(seen_totals) == 1:  # a rival appends between our load and our save
            await repository.update(Tally, "t", lambda rival: rival.add(1), METADATA)
        tally.add(5)
        await repository.save(tally, METADATA, session=session)
        await recorder.db["test_log"].insert_one({"total": tally.total}, session=session)
        assert woken == ["relay"]  # only the rival's append so far: this one is uncommitted
        return tally.total

    total = await repository.in_transaction(add_five)

    assert (total, seen_totals) == (6, [0, 1])
    assert [e.decode() for e in await recorder.load("test", "t")] == [
        SampleHappened(1),
        SampleHappened(5),
    ]
    assert [d["total"] async for d in recorder.db["test_log"].find({}, {"_id": 0})] == [6]
    assert woken == ["relay", "relay"]
