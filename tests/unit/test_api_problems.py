"""Errors become problem answers in one place, the same wherever a code comes from."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from m8.api import problems
from m8.api.problems import Unavailable
from m8.domain import errors
from m8.eventsourcing import ConcurrencyConflict, EventStoreUnavailable, TransactionConflict
from m8.messaging import RpcError

RETRY_AFTER = 11


async def _answer(error: Exception) -> httpx.Response:
    """The API's answer to a request whose handler raised `error`."""
    app = FastAPI()
    problems.install(app, retry_after=RETRY_AFTER)

    @app.get("/fail")
    async def fail() -> None:
        raise error

    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://m8") as client:
        return await client.get("/fail")


@pytest.mark.parametrize(
    ("domain_error", "status"),
    [
        (errors.InvalidPath, 422),
        (errors.UnknownStore, 404),
        (errors.StoreInactive, 409),
        (errors.NoDefaultStore, 409),
        (errors.UploadKeyUsed, 409),
    ],
)
async def test_a_code_means_the_same_status_from_the_domain_and_from_the_key_rotator(
    domain_error: type[errors.DomainError], status: int
) -> None:
    # The rotator forwards DomainError.code over RPC.
    raised_here = await _answer(domain_error("what to do"))
    forwarded = await _answer(RpcError(domain_error.code, "what to do"))

    assert raised_here.status_code == forwarded.status_code == status
    assert raised_here.json() == forwarded.json()
    assert raised_here.json()["type"] == f"urn:m8:problem:{domain_error.code}"


async def test_a_rotator_code_nobody_knows_is_a_bad_gateway_not_a_guess() -> None:
    answer = await _answer(RpcError("surprise", "internal detail"))

    assert answer.status_code == 502
    assert "internal detail" not in answer.text


@pytest.mark.parametrize(
    "error",
    [
        Unavailable("MongoDB does not answer"),
        RpcError("unavailable", "its database is down"),
        EventStoreUnavailable("MongoDB failed (ServerSelectionTimeoutError)"),
    ],
    ids=["api", "rotator", "event-store"],
)
async def test_every_unavailable_answer_says_when_to_retry_as_configured(
    error: Exception,
) -> None:
    answer = await _answer(error)

    assert answer.status_code == 503
    assert answer.headers["retry-after"] == str(RETRY_AFTER)
    assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "conflict",
    [ConcurrencyConflict("secret", "vault-a:x", 3), TransactionConflict()],
    ids=["stale-version", "concurrent-transaction"],
)
async def test_a_conflict_that_outlived_the_retries_asks_to_send_again(
    conflict: ConcurrencyConflict,
) -> None:
    answer = await _answer(conflict)

    assert answer.status_code == 409
    assert answer.json()["type"] == "urn:m8:problem:conflict"
    assert "vault-a" not in answer.text
