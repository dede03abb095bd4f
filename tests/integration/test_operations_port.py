"""A reactor process and a key rotator process, on the real servers, answer the kubelet's
probes and Prometheus on their operations port (m8.health), and stop serving it when told
to stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from m8.devservices.manager import free_port
from m8.messaging import RpcClient
from m8.messaging.topology import RPC_KEYROTATOR_QUEUE
from tests.integration.test_keyrotator import Rotators, key_files, rotators, rpc
from tests.integration.test_reactor import reactors
from tests.support.events import eventually
from tests.support.uploads import Reactors

__all__ = ["key_files", "reactors", "rotators", "rpc"]

M8 = str(Path(sys.executable).parent / "m8")


def _text(log: Path) -> str:
    return log.read_text(errors="replace")


@asynccontextmanager
async def running(
    argv: list[str], env: dict[str, str], log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A service process; on leaving, it is told to stop and must exit cleanly."""
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(*argv, env=env, stdout=output, stderr=output)
    try:
        yield process
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            assert await process.wait() == 0, _text(log)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def ready(client: httpx.AsyncClient, process: asyncio.subprocess.Process, log: Path) -> None:
    """Waits until the process answers /readyz with 200 (it exits: fails with its log)."""

    async def answers() -> bool:
        assert process.returncode is None, _text(log)
        try:
            return (await client.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False  # not listening yet

    await eventually(answers, timeout=90)


def served_names(metrics: str) -> set[str]:
    """The metric families /metrics describes (its # TYPE lines)."""
    return {line.split()[2] for line in metrics.splitlines() if line.startswith("# TYPE ")}


async def test_a_reactor_process_is_alive_ready_and_serves_its_metrics(
    reactors: Reactors, state_dir: Path
) -> None:
    port, log = free_port(), state_dir / "reactor.log"
    env = {
        **reactors.environment("vault"),
        "M8_REACTOR_METRICS_PORT": str(port),
        "M8_REACTOR_METRICS_HOST": "127.0.0.1",
    }
    async with (
        running([M8, "reactor", "vault"], env, log) as process,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):
        await ready(client, process, log)

        alive = await client.get("/healthz")
        readiness = await client.get("/readyz")
        metrics = await client.get("/metrics")
        elsewhere = await client.get("/")

    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
    assert readiness.json()["checks"] == {
        "broker": "ok",
        "consumers": "ok",
        "loops": "ok",
        "mongodb": "ok",
    }
    assert {
        "m8_reactor_uploads_total",
        "m8_reactor_upstream_write_seconds",
        "m8_outbox_unpublished_events",
        "process_cpu_seconds_total",
    } <= served_names(metrics.text)
    assert elsewhere.status_code == 404


async def test_a_rotator_process_is_alive_ready_and_counts_its_rpc_requests(
    rotators: Rotators, rpc: RpcClient, state_dir: Path
) -> None:
    port, log = free_port(), state_dir / "keyrotator.log"
    keys = rotators.keys
    env = {
        **os.environ,
        "M8_AMQP_URL": rotators.broker.service_url("keyrotator"),
        "M8_MONGODB_URI": rotators.mongodb_uri,
        "M8_MONGODB_DATABASE": rotators.database,
        "M8_KEYROTATOR_KEK_FILES": json.dumps({"vault": [str(keys.vault_public)]}),
        "M8_KEYROTATOR_MASTER_KEY_FILE": str(keys.master),
        "M8_KEYROTATOR_METRICS_PORT": str(port),
        "M8_KEYROTATOR_METRICS_HOST": "127.0.0.1",
        "M8_LOG_FORMAT": "console",
    }
    for name in ("M8_KEYROTATOR_MASTER_KEY_FILES", "M8_KEYROTATOR_MASTER_KEY"):
        env.pop(name, None)
    async with (
        running([M8, "keyrotator"], env, log) as process,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):
        await ready(client, process, log)
        await rpc.call(RPC_KEYROTATOR_QUEUE, "verify_keys", {})

        alive = await client.get("/healthz")
        metrics = (await client.get("/metrics")).text

    assert alive.status_code == 200
    requests = {
        (sample.labels["procedure"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "m8_keyrotator_rpc_requests_total"
    }
    assert requests == {("verify_keys", "ok"): 1}
    assert {
        "m8_keyrotator_upload_keys_issued_total",
        "m8_keyrotator_upload_keys_destroyed_total",
        "m8_outbox_oldest_unpublished_age_seconds",
        "python_info",
    } <= served_names(metrics)
    # Stopped: the port is closed (a probe then fails, as it should).
    async with httpx.AsyncClient(timeout=5) as after:
        with pytest.raises(httpx.TransportError):
            await after.get(f"http://127.0.0.1:{port}/healthz")
