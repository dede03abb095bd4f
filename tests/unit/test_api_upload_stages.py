"""The stage of a pending upload (GET /v1/uploads/{id}), from what the API reads: the
outbox mark of its request and the reactors' lease on its path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.errors import OperationFailure

from m8.api.models import UploadView
from m8.api.queries import (
    PATH_LEASES,
    STAGE_WARNING_INTERVAL,
    PathLease,
    Queries,
    pending_stage,
)
from m8.eventsourcing.memory import InMemoryEventRecorder
from m8.eventstore import EVENTS
from m8.reactors import path_leases

NOW = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=60)
OURS, EARLIER = "u-ours", "u-earlier"


def test_an_upload_not_yet_published_is_accepted() -> None:
    assert pending_stage(OURS, False, None, NOW) == "accepted"


def test_a_published_upload_no_reactor_holds_a_lease_for_is_queued() -> None:
    assert pending_stage(OURS, True, None, NOW) == "queued"


def test_an_upload_whose_path_lease_it_holds_is_being_written() -> None:
    assert pending_stage(OURS, True, PathLease(OURS, LATER), NOW) == "writing"


def test_an_upload_behind_another_pending_upload_holding_its_path_is_waiting() -> None:
    held = PathLease(EARLIER, LATER)
    assert pending_stage(OURS, True, held, NOW, holder_pending=True) == "waiting"


def test_a_lease_kept_by_an_upload_that_settled_holds_nobody_up() -> None:
    # A reactor keeps the lease of an upload it stored until it runs out.
    held = PathLease(EARLIER, LATER)
    assert pending_stage(OURS, True, held, NOW, holder_pending=False) == "queued"


def test_an_expired_or_given_back_lease_says_nothing_is_being_written() -> None:
    for until in (NOW - timedelta(seconds=1), path_leases.GIVEN_BACK):
        assert pending_stage(OURS, True, PathLease(OURS, until), NOW) == "queued"
        gone = PathLease(EARLIER, until)
        assert pending_stage(OURS, True, gone, NOW, holder_pending=True) == "queued"


def test_an_upload_not_yet_published_waits_for_nobody_it_is_accepted() -> None:
    held = PathLease(EARLIER, LATER)
    assert pending_stage(OURS, False, held, NOW, holder_pending=True) == "accepted"


def test_the_lease_document_is_read_as_the_reactors_write_it() -> None:
    assert PATH_LEASES == path_leases.COLLECTION
    doc = {"_id": "vault-a:team/db", "holder": OURS, "owner": "reactor-1", "until": LATER}
    assert PathLease.of(doc) == PathLease(OURS, LATER)
    naive = {**doc, "until": LATER.replace(tzinfo=None)}  # a client without tz_aware
    assert PathLease.of(naive) == PathLease(OURS, LATER)
    assert PathLease.of(None) is None
    assert PathLease.of({"_id": "vault-a:team/db", "holder": OURS}) is None


class Refusing:
    """A MongoDB collection whose reads fail with `code` (unit tests only)."""

    def __init__(self, code: int) -> None:
        self.code = code

    async def find_one(self, *_args: Any, **_kwargs: Any) -> None:
        raise OperationFailure("refused", code=self.code)


class Clock:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def queries_failing_with(code: int, clock: Clock | None = None) -> Queries:
    names = ("rm_uploads", "rm_secrets", "upload_requests", EVENTS, PATH_LEASES)
    database = {name: Refusing(code) for name in names}
    # A dict of collections stands in for the database.
    return Queries(database, clock=clock or Clock())  # type: ignore[arg-type]


PENDING = UploadView(
    upload_id=OURS,
    status="pending",
    store="vault-a",
    path="team/db",
    requested_by="alice",
    requested_at=NOW,
    updated_at=NOW,
)


def warnings_naming(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


@pytest.mark.parametrize("code", [13, 8000])  # Unauthorized; Atlas's AtlasError
async def test_a_role_that_may_not_read_the_leases_shows_no_stage_rather_than_fail(
    caplog: pytest.LogCaptureFixture, code: int
) -> None:
    queries = queries_failing_with(code)  # users.js not applied again
    assert await queries._stage(PENDING, projected=True) is None
    assert await queries._stage(PENDING, projected=False) is None
    [warning] = warnings_naming(caplog, "users.js")  # once
    assert PATH_LEASES in warning
    assert "events" not in warning  # the API's role has always read the events


async def test_another_database_failure_of_the_stage_shows_no_stage_and_is_logged_now_and_then(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    queries = queries_failing_with(2, clock)
    for _ in range(3):
        assert await queries._stage(PENDING, projected=True) is None
        assert await queries._stage(PENDING, projected=False) is None
    assert len(warnings_naming(caplog, "stage could not be read")) == 1
    clock.now += STAGE_WARNING_INTERVAL
    assert await queries._stage(PENDING, projected=True) is None
    assert len(warnings_naming(caplog, "stage could not be read")) == 2
    assert warnings_naming(caplog, "users.js") == []


class Counted:
    """A MongoDB collection that answers `find_one` from its documents by _id and counts
    what it is asked (unit tests only)."""

    def __init__(self, *docs: dict[str, Any]) -> None:
        self.docs = {doc["_id"]: doc for doc in docs}
        self.reads = 0

    async def find_one(self, query: dict[str, Any], *_args: Any, **_kwargs: Any) -> Any:
        self.reads += 1
        return self.docs.get(query.get("_id"))


class CountingRecorder(InMemoryEventRecorder):
    """The in-memory recorder, counting the published lookups."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    async def published(self, *args: Any) -> bool:
        self.lookups += 1
        return await super().published(*args)


async def test_an_upload_that_settles_before_its_first_answer_costs_no_stage_read() -> None:
    stored = {
        **PENDING.model_dump(exclude={"upload_id", "stage"}),
        "_id": OURS,
        "status": "stored",
        "fingerprint": "fp1:" + "ab" * 21,
    }
    # Held for an hour from now: the query compares with the real clock.
    held_until = datetime.now(UTC) + timedelta(hours=1)
    leases = Counted({"_id": "vault-a:team/db", "holder": OURS, "until": held_until})
    database = {
        "rm_uploads": Counted(stored),
        "rm_secrets": Counted(),
        "upload_requests": Counted(),
        PATH_LEASES: leases,
    }
    recorder = CountingRecorder()
    queries = Queries(database, recorder=recorder)  # type: ignore[arg-type]
    view = await queries.upload(OURS, lambda _store, _path: True, wait=5)
    assert view is not None
    assert (view.status, view.stage) == ("stored", None)
    assert (recorder.lookups, leases.reads) == (0, 0)
    # Pending at the answer: the stage is read (projected: the lease, not the events).
    database["rm_uploads"].docs[OURS]["status"] = "pending"
    view = await queries.upload(OURS, lambda _store, _path: True)
    assert view is not None
    assert (view.stage, recorder.lookups, leases.reads) == ("writing", 0, 1)
    # Not projected yet: its request event's mark first; unpublished, no lease read.
    del database["rm_uploads"].docs[OURS]
    request = {k: stored[k] for k in ("store", "path", "requested_by", "requested_at")}
    database["upload_requests"].docs[OURS] = {"_id": OURS, **request}
    view = await queries.upload(OURS, lambda _store, _path: True)
    assert view is not None
    assert (view.stage, recorder.lookups, leases.reads) == ("accepted", 1, 1)
