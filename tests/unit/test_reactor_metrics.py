"""Each reactor counts in a registry of its own; a reactor process serves its reactor's
metrics beside the process's own."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import httpx

from m8.devservices.manager import free_port
from m8.health import serve_health
from m8.reactors.metrics import ReactorMetrics
from m8.runtime import Runtime
from tests.unit.memory_world import STORE, World

UPLOADS = "m8_reactor_uploads_total"


def counted(metrics: ReactorMetrics, outcome: str) -> float:
    labels = {"store_type": "vault", "store": STORE, "outcome": outcome, "reason": ""}
    return metrics.registry.get_sample_value(UPLOADS, labels) or 0.0


async def test_two_reactors_in_one_process_count_their_own_uploads_only() -> None:
    world = World()
    await world.add_store()
    other = world.another_reactor(world.leases.of("other"))
    requested = await world.request(world.command(await world.issue("team/db")))

    await world.reactor.handle(requested)
    await other.handle(requested)  # a redelivery, to another reactor

    assert counted(world.reactor.metrics, "stored") == 1
    assert counted(world.reactor.metrics, "duplicate") == 0
    assert counted(other.metrics, "stored") == 0
    assert counted(other.metrics, "duplicate") == 1


async def test_a_served_reactor_shows_its_metrics_and_the_processs_own() -> None:
    metrics, port = ReactorMetrics(), free_port()
    metrics.uploads.labels("vault", STORE, "stored", "").inc()
    runtime = cast(Runtime, SimpleNamespace(db=None, broker=None, workers=[], tasks=[]))

    async with (
        serve_health(runtime, metrics.registry, "127.0.0.1", port),
        httpx.AsyncClient(timeout=10) as client,
    ):
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text

    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    assert UPLOADS in names
    assert {"process_cpu_seconds_total", "python_info"} <= names
