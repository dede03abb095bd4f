"""The recorder port's contract, run against every recorder: MongoDB (on the real server
the tests start) and the in-memory one that handler unit tests use. Whatever a handler
may rely on is here, so that its fast tests mean something for production."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest
from pymongo import AsyncMongoClient

from m8.eventsourcing import (
    Aggregate,
    ConcurrencyConflict,
    DomainEvent,
    DuplicateRecord,
    EventRecorder,
    NotRecorded,
    OutsideUnitOfWork,
    Repository,
    Transaction,
    TransactionConflict,
    UnitOfWork,
)
from m8.eventsourcing.memory import InMemoryEventRecorder
from m8.eventstore import MongoEventRecorder
from m8.eventstore.mongo import Document
from m8.messaging.permissions import EventKind
from tests.support.events import METADATA, SampleHappened

# Both implement the port (mypy checks these).
_MONGO: type[EventRecorder] = MongoEventRecorder
_MEMORY: type[EventRecorder] = InMemoryEventRecorder
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["mongodb", "memory"])
async def any_recorder(
    request: pytest.FixtureRequest, mongo: AsyncMongoClient[Document], mongo_db_name: str
) -> EventRecorder:
    if request.param == "memory":
        return InMemoryEventRecorder()
    recorder = MongoEventRecorder(mongo[mongo_db_name])
    await recorder.create_indexes()
    return recorder


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
    any_recorder: EventRecorder,
) -> None:
    recorder = any_recorder
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


async def test_several_events_land_together_or_not_at_all(any_recorder: EventRecorder) -> None:
    recorder = any_recorder
    await recorder.append("test", "agg", 0, [SampleHappened(1)], METADATA)
    with pytest.raises(ConcurrencyConflict):
        # Stale expected version: neither of the two may be stored.
        await recorder.append("test", "agg", 0, [SampleHappened(2), SampleHappened(3)], METADATA)
    await recorder.append("test", "agg", 1, [SampleHappened(2), SampleHappened(3)], METADATA)
    loaded = await recorder.load("test", "agg")
    assert [e.decode() for e in loaded] == [SampleHappened(1), SampleHappened(2), SampleHappened(3)]


async def test_racing_multi_event_appends_one_wins_the_rest_conflict(
    any_recorder: EventRecorder,
) -> None:
    outcomes = await asyncio.gather(
        *(
            any_recorder.append("test", "race", 0, [SampleHappened(n), SampleHappened(n)], METADATA)
            for n in range(4)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(o, list) for o in outcomes) == 1
    assert all(isinstance(o, (list, ConcurrencyConflict)) for o in outcomes), outcomes
    assert len(await any_recorder.load("test", "race")) == 2


async def test_a_stored_event_round_trips(any_recorder: EventRecorder) -> None:
    [stored] = await any_recorder.append("test", "agg", 0, [SampleHappened(7)], METADATA)
    [loaded] = await any_recorder.load("test", "agg")
    assert loaded == stored
    assert loaded.routing_key == "test.sample_happened"


async def test_read_all_continues_after_a_position(any_recorder: EventRecorder) -> None:
    written = []
    for n in range(5):
        written += await any_recorder.append("test", f"agg{n}", 0, [SampleHappened(n)], METADATA)
    await any_recorder.append("other", "x", 0, [SampleHappened(9)], METADATA)
    after_second = [
        e.event_id async for e in any_recorder.read_all(written[1].event_id, aggregate_type="test")
    ]
    assert after_second == [e.event_id for e in written[2:]]


async def test_aggregates_come_one_at_a_time_with_their_events_in_order(
    any_recorder: EventRecorder,
) -> None:
    for name in ("b", "a"):
        await any_recorder.append("test", name, 0, [SampleHappened(1)], METADATA)
        await any_recorder.append("test", name, 1, [SampleHappened(2)], METADATA)
    await any_recorder.append("other", "c", 0, [SampleHappened(3)], METADATA)

    seen = [
        (aggregate_id, [e.version for e in events])
        async for aggregate_id, events in any_recorder.aggregates("test")
    ]

    assert sorted(seen) == [("a", [1, 2]), ("b", [1, 2])]


async def test_recorded_gives_the_stores_copy_and_refuses_an_event_it_does_not_hold(
    any_recorder: EventRecorder,
) -> None:
    [first, second] = await any_recorder.append(
        "test", "agg", 0, [SampleHappened(1), SampleHappened(2)], METADATA
    )
    [elsewhere] = await any_recorder.append("test", "other", 0, [SampleHappened(3)], METADATA)

    stored, events = await any_recorder.recorded(second)
    forged = type(elsewhere)(**{**elsewhere.__dict__, "aggregate_id": "agg"})

    assert (stored, events) == (second, [first, second])
    with pytest.raises(NotRecorded):
        await any_recorder.recorded(forged)


async def test_redacting_replaces_fields_of_one_event(any_recorder: EventRecorder) -> None:
    [event] = await any_recorder.append("test", "agg", 0, [SampleHappened(1)], METADATA)

    assert await any_recorder.redact(event.event_id, {"n": None})
    assert not await any_recorder.redact("0" * 24, {"n": None})
    [redacted] = await any_recorder.load("test", "agg")
    assert redacted.data == {"n": None}


async def test_a_unit_of_work_commits_its_appends_and_records_together(
    any_recorder: EventRecorder,
) -> None:
    async with any_recorder.transaction() as unit:
        await unit.append("test", "agg", 0, [SampleHappened(1)], METADATA)
        await unit.records("test_log").insert({"_id": "r1", "n": 1})
        # Inside, the unit sees its own writes.
        assert [e.version for e in await unit.load("test", "agg")] == [1]
        assert await unit.records("test_log").get("r1") == {"_id": "r1", "n": 1}

    assert [e.version for e in await any_recorder.load("test", "agg")] == [1]
    assert await any_recorder.records("test_log").get("r1") == {"_id": "r1", "n": 1}


async def test_a_unit_of_work_that_raises_leaves_nothing_behind(
    any_recorder: EventRecorder,
) -> None:
    await any_recorder.records("test_log").insert({"_id": "kept", "n": 0})

    async def change_of_mind() -> None:
        async with any_recorder.transaction() as unit:
            await unit.append("test", "agg", 0, [SampleHappened(1)], METADATA)
            await unit.records("test_log").insert({"_id": "r1", "n": 1})
            await unit.records("test_log").delete("kept")
            raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        await change_of_mind()

    assert await any_recorder.load("test", "agg") == []
    assert await any_recorder.records("test_log").get("r1") is None
    assert await any_recorder.records("test_log").get("kept") == {"_id": "kept", "n": 0}


async def test_records_taken_before_a_unit_of_work_see_what_it_committed(
    any_recorder: EventRecorder,
) -> None:
    records = any_recorder.records("test_log")
    async with any_recorder.transaction() as unit:
        await unit.records("test_log").insert({"_id": "r1", "n": 1})
    await records.insert({"_id": "r2", "n": 2})

    assert await records.get("r1") == {"_id": "r1", "n": 1}
    assert await any_recorder.records("test_log").get("r2") == {"_id": "r2", "n": 2}


async def test_a_record_id_is_taken_once(any_recorder: EventRecorder) -> None:
    records = any_recorder.records("test_log")
    await records.insert({"_id": "r1", "n": 1})
    with pytest.raises(DuplicateRecord):
        await records.insert({"_id": "r1", "n": 2})
    with pytest.raises(DuplicateRecord):
        async with any_recorder.transaction() as unit:
            await unit.records("test_log").insert({"_id": "r1", "n": 3})

    assert await records.get("r1") == {"_id": "r1", "n": 1}
    await records.delete("r1")
    await records.delete("r1")  # gone already: nothing happens
    assert await records.get("r1") is None


async def test_a_unit_of_work_fails_whole_after_a_duplicate_record(
    any_recorder: EventRecorder,
) -> None:
    await any_recorder.records("test_log").insert({"_id": "taken", "n": 0})

    async def carry_on_after_the_duplicate(then: Callable[[UnitOfWork], Awaitable[object]]) -> None:
        async with any_recorder.transaction() as unit:
            await unit.append("test", "agg", 0, [SampleHappened(1)], METADATA)
            await unit.records("test_log").insert({"_id": "mine", "n": 1})
            with pytest.raises(DuplicateRecord):
                await unit.records("test_log").insert({"_id": "taken", "n": 2})
            await then(unit)

    async def nothing_more(unit: UnitOfWork) -> None:
        pass

    # MongoDB aborts the transaction on a duplicate key: neither a later call nor the
    # commit may act as if nothing happened.
    for then in (
        nothing_more,
        lambda unit: unit.records("test_log").insert({"_id": "later", "n": 3}),
        lambda unit: unit.append("test", "other", 0, [SampleHappened(4)], METADATA),
    ):
        with pytest.raises(TransactionConflict):
            await carry_on_after_the_duplicate(then)

    assert await any_recorder.load("test", "agg") == []
    assert await any_recorder.load("test", "other") == []
    assert await any_recorder.records("test_log").get("mine") is None
    assert await any_recorder.records("test_log").get("later") is None
    assert await any_recorder.records("test_log").get("taken") == {"_id": "taken", "n": 0}


async def test_a_unit_of_work_deletes_no_record_inserted_after_it_began(
    any_recorder: EventRecorder,
) -> None:
    records = any_recorder.records("test_log")
    async with any_recorder.transaction() as unit:
        assert await unit.records("test_log").get("r1") is None  # the unit has begun
        await records.insert({"_id": "r1", "n": 1})  # a rival, outside it
        await unit.records("test_log").delete("r1")

    assert await records.get("r1") == {"_id": "r1", "n": 1}


async def test_a_unit_of_work_deleting_a_record_a_rival_changed_meanwhile_conflicts(
    any_recorder: EventRecorder,
) -> None:
    records = any_recorder.records("test_log")
    await records.insert({"_id": "r1", "n": 1})

    async def delete_what_it_saw() -> None:
        async with any_recorder.transaction() as unit:
            assert await unit.records("test_log").get("r1") == {"_id": "r1", "n": 1}
            await records.delete("r1")  # a rival replaces it, outside the unit
            await records.insert({"_id": "r1", "n": 2})
            await unit.records("test_log").delete("r1")

    with pytest.raises(TransactionConflict):
        await delete_what_it_saw()

    assert await records.get("r1") == {"_id": "r1", "n": 2}


async def test_an_open_unit_of_works_writes_are_invisible_outside_it(
    any_recorder: EventRecorder,
) -> None:
    async with any_recorder.transaction() as unit:
        await unit.append("test", "agg", 0, [SampleHappened(1)], METADATA)
        await unit.records("test_log").insert({"_id": "r1", "n": 1})

        assert await any_recorder.load("test", "agg") == []
        assert await any_recorder.records("test_log").get("r1") is None
        assert await any_recorder.unpublished(10) == []

    assert len(await any_recorder.load("test", "agg")) == 1
    assert await any_recorder.records("test_log").get("r1") == {"_id": "r1", "n": 1}


async def _racing_units(
    recorder: EventRecorder, write: Callable[[UnitOfWork, int], Awaitable[object]]
) -> list[object]:
    """Two units of work that each `write` before either commits; their outcomes."""
    both_wrote = asyncio.Barrier(2)

    async def unit_of_work(n: int) -> int:
        async with recorder.transaction() as unit:
            try:
                await write(unit, n)
            finally:
                await both_wrote.wait()
        return n

    return list(await asyncio.gather(unit_of_work(1), unit_of_work(2), return_exceptions=True))


async def test_two_units_of_work_inserting_one_record_id_one_commits_one_conflicts(
    any_recorder: EventRecorder,
) -> None:
    async def insert(unit: UnitOfWork, n: int) -> None:
        await unit.records("test_log").insert({"_id": "r1", "n": n})

    outcomes = await _racing_units(any_recorder, insert)

    [winner] = [o for o in outcomes if isinstance(o, int)]
    [loser] = [o for o in outcomes if not isinstance(o, int)]
    assert isinstance(loser, TransactionConflict | DuplicateRecord), loser
    assert await any_recorder.records("test_log").get("r1") == {"_id": "r1", "n": winner}


async def test_two_units_of_work_appending_to_one_aggregate_one_commits_one_conflicts(
    any_recorder: EventRecorder,
) -> None:
    await any_recorder.append("test", "agg", 0, [SampleHappened(0)], METADATA)

    async def append(unit: UnitOfWork, n: int) -> None:
        await unit.append("test", "agg", 1, [SampleHappened(n)], METADATA)

    outcomes = await _racing_units(any_recorder, append)

    [winner] = [o for o in outcomes if isinstance(o, int)]
    [loser] = [o for o in outcomes if not isinstance(o, int)]
    assert isinstance(loser, ConcurrencyConflict), loser  # TransactionConflict is one too
    loaded = await any_recorder.load("test", "agg")
    assert [e.decode() for e in loaded] == [SampleHappened(0), SampleHappened(winner)]


async def test_records_due_come_earliest_first(any_recorder: EventRecorder) -> None:
    records = any_recorder.records("test_due")
    for name, minutes in (("late", 30), ("first", 1), ("second", 2), ("future", 90)):
        await records.insert({"_id": name, "due": T0 + timedelta(minutes=minutes)})

    due = await records.ids_due("due", T0 + timedelta(minutes=30), 10)
    limited = await records.ids_due("due", T0 + timedelta(minutes=30), 2)

    assert due == ["first", "second", "late"]
    assert limited == ["first", "second"]


async def test_work_in_a_transaction_runs_again_on_fresh_state_after_a_conflict(
    any_recorder: EventRecorder,
) -> None:
    appended: list[list[int]] = []
    repository = Repository(
        any_recorder, on_append=lambda events: appended.append([e.version for e in events])
    )
    seen_totals: list[int] = []

    async def rival() -> None:
        await repository.update(Tally, "t", lambda tally: tally.add(1), METADATA)

    async def add_five(transaction: Transaction) -> int:
        tally = await transaction.load(Tally, "t")
        seen_totals.append(tally.total)
        if len(seen_totals) == 1:
            # A rival outside this unit of work appends between our load and our save.
            await asyncio.create_task(rival(), context=contextvars.Context())
        tally.add(5)
        await transaction.save(tally, METADATA)
        await transaction.records("test_log").insert({"_id": f"t{tally.total}"})
        assert appended == [[1]]  # only the rival's append so far: this one is uncommitted
        return tally.total

    total = await repository.in_transaction(add_five)

    assert (total, seen_totals) == (6, [0, 1])
    assert [e.decode() for e in await any_recorder.load("test", "t")] == [
        SampleHappened(1),
        SampleHappened(5),
    ]
    assert await any_recorder.records("test_log").get("t6") == {"_id": "t6"}
    assert await any_recorder.records("test_log").get("t5") is None
    assert appended == [[1], [2]]  # the committed attempt's events, never the abandoned one's


async def test_a_save_that_bypasses_the_open_unit_of_work_is_refused(
    any_recorder: EventRecorder,
) -> None:
    repository = Repository(any_recorder)

    async def work(transaction: Transaction) -> None:
        tally = await transaction.load(Tally, "t")
        tally.add(1)
        await repository.save(tally, METADATA)  # not through `transaction`

    with pytest.raises(OutsideUnitOfWork):
        await repository.in_transaction(work)
    assert await any_recorder.load("test", "t") == []


async def test_loads_and_updates_that_bypass_the_open_unit_of_work_are_refused(
    any_recorder: EventRecorder,
) -> None:
    repository = Repository(any_recorder)
    await repository.update(Tally, "t", lambda tally: tally.add(1), METADATA)

    async def load_outside(transaction: Transaction) -> None:
        await repository.load(Tally, "t")

    async def update_outside(transaction: Transaction) -> None:
        await repository.update(Tally, "t", lambda tally: tally.add(1), METADATA)

    for work in (load_outside, update_outside):
        with pytest.raises(OutsideUnitOfWork):
            await repository.in_transaction(work)
    assert (await repository.load(Tally, "t")).total == 1


async def test_a_task_started_in_a_unit_of_work_is_outside_it_once_the_unit_ends(
    any_recorder: EventRecorder,
) -> None:
    repository = Repository(any_recorder)
    unit_ended = asyncio.Event()
    refused_while_open: list[bool] = []

    async def later() -> int:
        try:
            await repository.load(Tally, "t")
        except OutsideUnitOfWork:
            refused_while_open.append(True)
        await unit_ended.wait()
        await repository.update(Tally, "t", lambda tally: tally.add(2), METADATA)
        return (await repository.load(Tally, "t")).total

    async def work(transaction: Transaction) -> asyncio.Task[int]:
        task = asyncio.create_task(later())  # copies the context, unit mark included
        await asyncio.sleep(0)
        return task

    task = await repository.in_transaction(work)
    unit_ended.set()

    assert refused_while_open == [True]
    assert await task == 2


async def test_unpublished_events_are_those_not_marked_and_of_the_kinds_asked(
    any_recorder: EventRecorder,
) -> None:
    first = await any_recorder.append("test", "a", 0, [SampleHappened(1)], METADATA)
    second = await any_recorder.append("test", "b", 0, [SampleHappened(2)], METADATA)
    other = await any_recorder.append("other", "c", 0, [SampleHappened(3)], METADATA)
    kind = EventKind("test", ("SampleHappened",))

    assert await any_recorder.unpublished(10) == first + second + other
    assert await any_recorder.unpublished(1) == first
    assert await any_recorder.unpublished(10, [kind]) == first + second
    await any_recorder.mark_published([first[0].event_id])
    assert await any_recorder.unpublished(10, [kind]) == second


async def test_published_tells_whether_the_newest_matching_event_was_confirmed(
    any_recorder: EventRecorder,
) -> None:
    events = [SampleHappened(1), SampleHappened(2), SampleHappened(1)]
    first, second, third = await any_recorder.append("test", "a", 0, events, METADATA)

    async def published(n: int, event_type: str = "SampleHappened") -> bool:
        return await any_recorder.published("test", "a", event_type, {"n": n})

    assert not await published(2)
    await any_recorder.mark_published([second.event_id])
    assert await published(2)
    await any_recorder.mark_published([first.event_id])
    assert not await published(1)  # the newest with n=1 is the third, not yet confirmed
    await any_recorder.mark_published([third.event_id])
    assert await published(1)
    assert not await published(3)  # no such event
    assert not await published(2, "OtherHappened")
    assert not await any_recorder.published("test", "b", "SampleHappened", {"n": 2})


async def test_a_lease_is_held_by_one_owner_until_it_lapses(any_recorder: EventRecorder) -> None:
    until = T0 + timedelta(seconds=10)

    assert await any_recorder.hold_lease("outbox:x", "a", T0, until) == until
    assert await any_recorder.hold_lease("outbox:x", "b", T0, until) is None
    renewed = until + timedelta(seconds=5)
    assert await any_recorder.hold_lease("outbox:x", "a", T0, renewed) == renewed
    later = renewed + timedelta(seconds=1)
    taken = later + timedelta(seconds=10)
    assert await any_recorder.hold_lease("outbox:x", "b", later, taken) == taken
    assert await any_recorder.hold_lease("outbox:y", "a", later, taken) == taken


async def test_a_read_model_record_is_never_replaced_by_an_older_version(
    any_recorder: EventRecorder,
) -> None:
    await any_recorder.write_read_model("test_rm", {"_id": "x", "n": 2}, version=2)
    await any_recorder.write_read_model("test_rm", {"_id": "x", "n": 1}, version=1)
    await any_recorder.write_read_model("test_rm", {"_id": "y", "n": 1}, version=1)
    await any_recorder.write_read_model("test_rm", {"_id": "y", "n": 3}, version=3)

    assert await _read_model(any_recorder, "test_rm") == {"x": 2, "y": 3}
    await any_recorder.clear_read_model("test_rm")
    assert await _read_model(any_recorder, "test_rm") == {}


async def _read_model(recorder: EventRecorder, name: str) -> dict[str, int]:
    # Reading a read model is no part of the port (each has its own queries).
    if isinstance(recorder, InMemoryEventRecorder):
        docs = list(recorder.read_models.get(name, {}).values())
    else:
        assert isinstance(recorder, MongoEventRecorder)
        docs = await recorder.db[name].find({}).to_list()
    return {str(doc["_id"]): int(doc["n"]) for doc in docs}
