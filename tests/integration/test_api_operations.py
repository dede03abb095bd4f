"""Health, readiness, metrics, problem answers and request size limits."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from m8.devservices import Services
from tests.servers import Broker
from tests.support.api import (
    VAULT_STORE,
    RunningApi,
    api_settings,
    auth,
    running_api,
)

LIMIT = 4096
RETRY_AFTER = 7


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def api(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> AsyncIterator[RunningApi]:
    settings = api_settings(
        broker,
        services,
        mongo_db_name,
        tmp_path,
        api_max_body_bytes=LIMIT,
        api_retry_after_seconds=RETRY_AFTER,
    )
    async with running_api(settings) as running:
        yield running


async def test_health_and_readiness_answer_when_the_servers_are_there(api: RunningApi) -> None:
    health = await api.client.get("/healthz")
    ready = await api.client.get("/readyz")

    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"mongodb": "ok", "broker": "ok"}}


async def test_readiness_fails_while_the_broker_connection_is_down_and_says_when_to_retry(
    api: RunningApi,
) -> None:
    api.context.runtime.broker.connection.connected.clear()  # as during a reconnect
    try:
        ready = await api.client.get("/readyz")
    finally:
        api.context.runtime.broker.connection.connected.set()

    assert ready.status_code == 503
    assert "RabbitMQ" in ready.json()["detail"]
    assert ready.headers["retry-after"] == str(RETRY_AFTER)  # as configured


async def test_metrics_count_requests_by_route_template_never_by_path(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> None:
    port = _free_port()
    settings = api_settings(broker, services, mongo_db_name, tmp_path, api_metrics_port=port)
    async with running_api(settings) as api:
        await api.add_store(VAULT_STORE)
        await api.call("GET", "/v1/secrets/vault-a/team-a/very-secret-name")
        await api.call("GET", "/v1/no/such/route/for-a-secret-path")
        on_the_api_port = await api.client.get("/metrics")

        async with httpx.AsyncClient() as scraper:
            metrics = (await scraper.get(f"http://127.0.0.1:{port}/metrics")).text

    assert on_the_api_port.status_code == 404
    assert (
        'm8_api_requests_total{method="GET",route="/v1/secrets/{store}/{path:path}",status="404"}'
        in metrics
    )
    assert 'm8_api_requests_total{method="POST",route="/v1/stores",status="201"}' in metrics
    assert 'route="unmatched"' in metrics
    assert "very-secret-name" not in metrics
    assert "for-a-secret-path" not in metrics


@pytest.mark.parametrize("url", ["/metrics", "/docs", "/redoc", "/openapi.json"])
async def test_metrics_and_api_documents_are_not_public_by_default(
    api: RunningApi, url: str
) -> None:
    anonymous = await api.client.get(url)
    as_admin = await api.call("GET", url)

    assert anonymous.status_code == as_admin.status_code == 404


async def test_the_api_documents_are_served_when_asked_for(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> None:
    settings = api_settings(broker, services, mongo_db_name, tmp_path, api_public_docs=True)
    async with running_api(settings) as api:
        docs = await api.client.get("/docs")
        document = await api.client.get("/openapi.json")

    assert docs.status_code == document.status_code == 200
    assert document.json()["info"]["title"] == "m8 secrets API"


async def test_unknown_routes_and_methods_answer_with_problems(api: RunningApi) -> None:
    route = await api.client.get("/v2/anything", headers=auth("admin"))
    method = await api.client.delete("/v1/stores", headers=auth("admin"))

    assert route.status_code == 404
    assert route.headers["content-type"] == "application/problem+json"
    assert route.json()["detail"].startswith("there is no such resource")
    assert method.status_code == 405
    assert method.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("method", "url", "allowed"),
    [
        ("DELETE", "/v1/stores", {"GET", "POST"}),
        ("PUT", "/v1/secrets", {"GET", "POST"}),
        ("POST", "/v1/secrets/vault-a/team-a/db", {"GET"}),
        ("GET", "/v1/upload-keys", {"POST"}),
    ],
)
async def test_a_method_not_allowed_lists_every_method_the_path_takes(
    api: RunningApi, method: str, url: str, allowed: set[str]
) -> None:
    response = await api.call(method, url)

    assert response.status_code == 405
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_body_over_the_limit_is_refused_by_its_declared_length(api: RunningApi) -> None:
    response = await api.call("POST", "/v1/stores", content=b"{" + b" " * LIMIT + b"}")

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert str(LIMIT) in response.json()["detail"]


async def test_a_streamed_body_over_the_limit_is_refused_as_it_arrives(api: RunningApi) -> None:
    chunks_sent = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(100):
            chunks_sent += 1
            yield b" " * 1024

    response = await api.call("POST", "/v1/secrets", content=stream())

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert chunks_sent < 100  # it stopped reading


async def test_a_body_that_is_not_json_is_a_problem_not_a_crash(api: RunningApi) -> None:
    response = await api.call(
        "POST", "/v1/stores", content=b"\xff\xfe{not json", headers={"content-type": "text/x"}
    )

    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"
