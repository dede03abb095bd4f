"""`m8 api` serves the API in its own process and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from m8.api.cli import BoundedServer
from m8.devservices import Services
from tests.servers import Broker
from tests.support.api import ENTRIES, auth, write_token_file
from tests.support.events import eventually

SERVE = "from m8.api.cli import app; app(prog_name='m8 api')"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_api_process_answers_and_stops_on_sigterm(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "M8_AMQP_URL": broker.url,
        "M8_MONGODB_URI": services["mongodb"].url,
        "M8_MONGODB_DATABASE": mongo_db_name,
        "M8_API_TOKEN_FILE": str(write_token_file(tmp_path)),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE, "--port", str(port), env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            async with asyncio.timeout(30):
                while True:
                    try:
                        ready = await client.get("/readyz")
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
            stores = await client.get("/v1/stores", headers=auth("bob"))
        assert ready.status_code == 200
        assert stores.json() == {"stores": [], "default": None}
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, stderr = await process.communicate()
    # uvicorn shuts down, then ends with the signal it got, as a process killed by it would.
    assert process.returncode in (0, -signal.SIGTERM)
    assert b"Application shutdown complete" in stderr


async def test_the_api_process_says_what_to_set_when_it_cannot_authenticate() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("M8_API", "M8_OIDC"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE, env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()

    assert process.returncode == 2
    assert b"M8_API_TOKEN_FILE or M8_OIDC_JWKS_URL" in stderr


async def test_the_api_process_names_a_bad_setting_without_echoing_its_value() -> None:
    env = {**os.environ, "M8_API_PORT": "port-s3cr3t-value", "M8_LOG_FORMAT": "xml-s3cr3t"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE, env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()

    assert process.returncode == 2
    assert b"M8_API_PORT" in stderr
    assert b"M8_LOG_FORMAT" in stderr
    assert b"s3cr3t" not in stderr
    assert b"Traceback" not in stderr


async def test_sighup_makes_the_api_process_read_its_token_file_again(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "M8_AMQP_URL": broker.url,
        "M8_MONGODB_URI": services["mongodb"].url,
        "M8_MONGODB_DATABASE": mongo_db_name,
        "M8_API_TOKEN_FILE": str(write_token_file(tmp_path)),
        # The file is not looked at again by itself during this test: only SIGHUP reads it.
        "M8_API_TOKEN_FILE_CHECK_SECONDS": "3600",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE, "--port", str(port), env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def ready() -> bool:
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready)
            before = await client.get("/v1/stores", headers=auth("bob"))
            write_token_file(tmp_path, [e for e in ENTRIES if e["subject"] != "bob"])
            process.send_signal(signal.SIGHUP)

            async def revoked() -> bool:
                return (await client.get("/v1/stores", headers=auth("bob"))).status_code == 401

            await eventually(revoked, timeout=10)
            others = await client.get("/v1/stores", headers=auth("alice"))
        assert before.status_code == others.status_code == 200
        assert process.returncode is None  # SIGHUP did not end it
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await process.communicate()


async def test_an_api_whose_close_hangs_still_ends_its_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closing = asyncio.Event()

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        closing.set()
        await asyncio.Event().wait()  # a close stuck on a dead peer

    config = uvicorn.Config(Starlette(lifespan=lifespan), port=_free_port(), log_config=None)
    server = BoundedServer(config, shutdown_seconds=0.5)
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: _true(server.started))
    server.should_exit = True  # what SIGTERM sets

    async with asyncio.timeout(60):
        await serving
    assert closing.is_set()
    assert "the API's shutdown did not end in 0.5s" in caplog.text


async def _true(value: bool) -> bool:
    return value
