"""The stage of a pending upload (GET /v1/uploads/{id}), from what the API reads: the
outbox mark of its request and the reactors' lease on its path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.errors import OperationFailure

from m8.api.models import UploadView
from m8.api.queries import PATH_LEASES, PathLease, Queries, pending_stage
from m8.eventsourcing import EventStoreUnavailable
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


def queries_failing_with(code: int) -> Queries:
    names = ("rm_uploads", "rm_secrets", "upload_requests", "events", PATH_LEASES)
    database = {name: Refusing(code) for name in names}
    return Queries(database)  # type: ignore[arg-type]  # a dict of collections stands in


PENDING = UploadView(
    upload_id=OURS,
    status="pending",
    store="vault-a",
    path="team/db",
    requested_by="alice",
    requested_at=NOW,
    updated_at=NOW,
)


async def test_a_role_that_may_not_read_the_leases_shows_no_stage_rather_than_fail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queries = queries_failing_with(13)  # Unauthorized: users.js not applied again
    assert await queries._stage(PENDING, projected=True) is None
    assert await queries._stage(PENDING, projected=False) is None
    assert len([r for r in caplog.records if "users.js" in r.getMessage()]) == 1  # once


async def test_another_database_failure_of_the_stage_is_reported() -> None:
    with pytest.raises(EventStoreUnavailable):
        await queries_failing_with(2)._stage(PENDING, projected=True)
