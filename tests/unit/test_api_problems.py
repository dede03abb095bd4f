"""Errors become problem answers in one place, the same wherever a code comes from."""

from __future__ import annotations

from typing import Any, cast

import httpx
import pytest
from aiormq.exceptions import (
    AMQPConnectionError,
    ChannelClosed,
    ChannelInvalidStateError,
    ConnectionClosed,
)
from fastapi import FastAPI
from pydantic import BaseModel

from m8.api import problems
from m8.api.problems import Unavailable
from m8.api.rotator import RotatorClient
from m8.domain import errors
from m8.eventsourcing import ConcurrencyConflict, EventStoreUnavailable, TransactionConflict
from m8.messaging import Broker, RpcClient, RpcError

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


class _Thing(BaseModel):
    name: str


def _body_app() -> FastAPI:
    """An app with a path parameter, a query parameter and a JSON body, as the API's own."""
    app = FastAPI()
    problems.install(app, retry_after=RETRY_AFTER)

    @app.post("/things/{number}")
    async def put_thing(number: int, thing: _Thing, limit: int = 10) -> dict[str, str]:
        return {"name": thing.name}

    return app


async def _post(url: str, content: bytes, content_type: str) -> httpx.Response:
    transport = httpx.ASGITransport(_body_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://m8") as client:
        return await client.post(url, content=content, headers={"content-type": content_type})


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/merge-patch+json", "Application/JSON; charset=utf-8"],
)
async def test_a_body_whose_content_type_fastapi_reads_as_json_is_taken(
    content_type: str,
) -> None:
    answer = await _post("/things/1", b'{"name": "x"}', content_type)

    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    "content_type", ["text/x+json", "text/json", "application/jsonx", "text/plain", "json"]
)
async def test_a_body_whose_content_type_is_not_json_is_an_unsupported_media_type(
    content_type: str,
) -> None:
    answer = await _post("/things/1", b'{"name": "x"}', content_type)

    assert answer.status_code == 415
    assert answer.json()["type"] == "urn:m8:problem:unsupported_media_type"


@pytest.mark.parametrize(
    ("url", "field"), [("/things/one", "path.number"), ("/things/1?limit=many", "query.limit")]
)
async def test_a_bad_parameter_is_named_even_when_the_body_is_not_json(
    url: str, field: str
) -> None:
    answer = await _post(url, b'{"name": "x"}', "text/plain")

    assert answer.status_code == 422
    assert answer.json()["type"] == "urn:m8:problem:validation_error"
    assert field in [error["field"] for error in answer.json()["errors"]]


async def test_a_json_body_with_a_bad_field_is_a_validation_error_not_a_media_type() -> None:
    answer = await _post("/things/1", b'{"name": 5}', "application/merge-patch+json")

    assert answer.status_code == 422
    assert [error["field"] for error in answer.json()["errors"]] == ["body.name"]


class _BrokerDown:
    """An RPC client whose broker is gone, raising what aio-pika raises then."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def call(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        ChannelInvalidStateError("<RobustChannel> closed"),
        AMQPConnectionError(111, "Connect call failed"),
        ChannelClosed(320, "CONNECTION_FORCED"),
        ConnectionClosed(320, "CONNECTION_FORCED"),
    ],
    ids=["channel-invalid-state", "connection-error", "channel-closed", "connection-closed"],
)
async def test_a_rotator_call_while_the_broker_is_down_is_unavailable_not_a_crash(
    error: Exception,
) -> None:
    rotator = RotatorClient(cast(Broker, None), timeout=1.0)
    rotator.rpc = cast(RpcClient, _BrokerDown(error))
    app = FastAPI()
    problems.install(app, retry_after=RETRY_AFTER)

    @app.get("/keys")
    async def keys() -> None:
        await rotator.verify_keys()

    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://m8") as client:
        answer = await client.get("/keys")

    assert answer.status_code == 503
    assert answer.headers["retry-after"] == str(RETRY_AFTER)
    assert answer.json()["type"] == "urn:m8:problem:unavailable"
    assert "broker is unavailable" in answer.json()["detail"]
