"""The operations port of the reactors and the rotator (m8.health): /metrics, /healthz and
/readyz on one port, 404 for anything else, and readiness that names the failing check."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from pymongo.errors import ServerSelectionTimeoutError

from m8 import health
from m8.devservices.manager import free_port
from m8.health import HealthApp, HealthServer, MongoPing, runtime_checks, serve_health
from m8.runtime import ConfigurationError, Runtime


class FakeDatabase:
    """Answers `ping`, fails it, or never answers; counts the pings."""

    def __init__(self) -> None:
        self.pings = 0
        self.failure: Exception | None = None
        self.hang = False

    async def command(self, name: str) -> dict[str, Any]:
        assert name == "ping"
        self.pings += 1
        if self.failure is not None:
            raise self.failure
        if self.hang:
            await asyncio.Event().wait()
        return {"ok": 1}


class FakeRuntime:
    """What the readiness checks read of a Runtime."""

    def __init__(self) -> None:
        self.db = FakeDatabase()
        connected = asyncio.Event()
        connected.set()
        self.broker = SimpleNamespace(connection=SimpleNamespace(connected=connected))
        self.workers: list[object] = [object()]
        self.tasks: list[asyncio.Task[None]] = []


def _runtime(fake: FakeRuntime) -> Runtime:
    return cast(Runtime, fake)


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("m8_test_things_total", "Things.", registry=registry).inc()
    return registry


Served = tuple[FakeRuntime, httpx.AsyncClient]


@pytest.fixture
async def served(registry: CollectorRegistry) -> AsyncIterator[Served]:
    """A fake runtime's operations port on an ephemeral port, and a client of it."""
    runtime = FakeRuntime()
    app = HealthApp(registry, runtime_checks(_runtime(runtime)), asyncio.get_running_loop())
    server = HealthServer(app, "127.0.0.1", 0)
    server.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}", timeout=10
        ) as client:
            yield runtime, client
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_running_service_is_alive_and_ready(
    served: Served,
) -> None:
    _, client = served

    alive, ready = await client.get("/healthz"), await client.get("/readyz")

    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200
    assert ready.headers["content-type"] == "application/json"
    assert ready.json() == {
        "status": "ready",
        "checks": {"broker": "ok", "consumers": "ok", "loops": "ok", "mongodb": "ok"},
    }


async def test_metrics_show_the_services_registry(
    served: Served,
) -> None:
    _, client = served

    answer = await client.get("/metrics")

    assert answer.status_code == 200
    assert "m8_test_things_total 1.0" in answer.text


@pytest.mark.parametrize("path", ["/", "/metricsx", "/healthz/", "/readyz/x", "/docs"])
async def test_any_other_path_is_not_found(served: Served, path: str) -> None:
    _, client = served

    answer = await client.get(path)

    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "urn:m8:problem:not_found"
    assert "m8_test_things_total" not in answer.text


async def test_a_probe_answers_get_only(served: Served) -> None:
    _, client = served

    refused = await client.post("/readyz")
    assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")
    assert (await client.head("/healthz")).status_code == 200


async def test_a_lost_broker_connection_makes_the_service_unready_but_alive(
    served: Served,
) -> None:
    runtime, client = served
    runtime.broker.connection.connected.clear()

    ready, alive = await client.get("/readyz"), await client.get("/healthz")

    assert ready.status_code == 503
    assert ready.headers["content-type"] == "application/problem+json"
    problem = ready.json()
    assert problem["type"] == "urn:m8:problem:unavailable"
    assert problem["checks"]["broker"] == "RabbitMQ connection down"
    assert problem["checks"]["mongodb"] == "ok"
    assert "broker" in problem["detail"]
    assert alive.status_code == 200


async def test_an_unreachable_mongodb_makes_the_service_unready(
    served: Served,
) -> None:
    runtime, client = served
    runtime.db.failure = ServerSelectionTimeoutError("mongodb://user:password@db:27017 refused")

    ready = await client.get("/readyz")

    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["mongodb"] == "MongoDB does not answer (ServerSelectionTimeoutError)"
    assert checks["broker"] == "ok"
    # The type only: a driver's message may hold what must not leave the process.
    assert "password" not in ready.text


async def test_a_service_without_consumers_or_with_an_ended_loop_is_unready(
    served: Served,
) -> None:
    runtime, client = served
    runtime.workers.clear()

    async def crash() -> None:
        raise RuntimeError("the relay broke")

    ended = asyncio.create_task(crash(), name="OutboxRelay.run")
    with pytest.raises(RuntimeError):
        await ended
    runtime.tasks.append(ended)

    checks = (await client.get("/readyz")).json()["checks"]

    assert checks["consumers"] == "no consumer started"
    assert checks["loops"] == "ended: OutboxRelay.run"


async def test_mongodb_is_pinged_at_most_once_per_interval() -> None:
    db, now = FakeDatabase(), [100.0]
    ping = MongoPing(cast(Any, db), interval=5, timeout=1, clock=lambda: now[0])

    answers = await asyncio.gather(*(ping.check() for _ in range(10)))
    now[0] += 4.9
    await ping.check()
    assert (answers, db.pings) == ([None] * 10, 1)

    now[0] += 0.2
    db.failure = ServerSelectionTimeoutError("no primary")
    assert await ping.check() == "MongoDB does not answer (ServerSelectionTimeoutError)"
    assert db.pings == 2


async def test_a_mongodb_that_never_answers_fails_the_check_in_time() -> None:
    db = FakeDatabase()
    db.hang = True
    ping = MongoPing(cast(Any, db), timeout=0.05)

    async with asyncio.timeout(5):
        assert await ping.check() == "MongoDB does not answer within 0.05s"


@pytest.fixture
def stuck_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop, in a thread of its own, that is blocked until the test ends."""
    loop, release = asyncio.new_event_loop(), threading.Event()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    loop.call_soon_threadsafe(release.wait)
    yield loop
    release.set()

    async def settle() -> None:
        # A few steps, so that the probe's cancelled step ends before the loop closes.
        for _ in range(3):
            await asyncio.sleep(0)

    asyncio.run_coroutine_threadsafe(settle(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_a_service_whose_event_loop_is_stuck_is_not_alive(
    registry: CollectorRegistry,
    stuck_loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health, "LIVENESS_TIMEOUT", 0.1)
    app = HealthApp(registry, {}, stuck_loop)

    status, problem = app.liveness()

    assert status == 503
    assert problem["detail"] == "the event loop did not answer within 0.1s"


async def test_port_zero_serves_nothing(registry: CollectorRegistry) -> None:
    async with serve_health(_runtime(FakeRuntime()), registry, "127.0.0.1", 0) as server:
        assert server is None


async def test_the_served_registry_gains_the_processs_own_metrics(
    registry: CollectorRegistry,
) -> None:
    port = free_port()
    async with (
        serve_health(_runtime(FakeRuntime()), registry, "127.0.0.1", port),
        httpx.AsyncClient(timeout=10) as client,
    ):
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert {"process_cpu_seconds_total", "python_info", "m8_test_things_total"} <= {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"
    }


async def test_a_port_in_use_is_a_configuration_error(registry: CollectorRegistry) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"cannot listen on 127.0.0.1:{port}"):
            async with serve_health(_runtime(FakeRuntime()), registry, "127.0.0.1", port):
                pass
