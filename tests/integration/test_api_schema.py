"""Schemathesis against the API's own OpenAPI document, every phase and every check.

Its examples, coverage, fuzzing and stateful phases, in positive and negative mode, with
all its checks: no input gets a 5xx; every answer matches the document (status, content
type, headers, body); a request the document allows is never refused as malformed (so the
document states every rule the server enforces) and one it forbids is refused; a method a
path does not take gets a 405 that lists in Allow the ones it does; no operation ignores
authentication.

The system is a throwaway of this test alone: its own database and virtual host, a real
key rotator, and stores named for this test. Schemathesis runs as its command-line tool,
as a user would run it, against a real uvicorn server in this test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

import httpx
import pytest
import uvicorn

from m8.api import create_app
from m8.devservices import Services
from tests.servers import Broker
from tests.support.api import TOKENS, api_settings, auth, start_rotator

# Bounded so the whole run stays within a few minutes on a 2-core machine.
MAX_EXAMPLES = 30
SEED = 20261130  # a fixed seed: a failure is reproducible with the command it prints
STORES = [
    {
        "type": "vault",
        "name": "schema-vault",
        "address": "https://vault.schema.example:8200",
        "mount": "secret",
        "path_prefix": "m8/",
    },
    {"type": "aws", "name": "schema-aws", "region": "eu-west-1", "name_prefix": "m8/"},
]


@pytest.mark.fuzz
async def test_every_schemathesis_phase_and_check_passes_against_the_api(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> None:
    # The real rotator answers upload-key requests, so those succeed too.
    rotator = await start_rotator(broker, services, mongo_db_name, tmp_path)
    settings = api_settings(
        broker,
        services,
        mongo_db_name,
        tmp_path,
        # Generated requests come fast and all as one caller; waits are kept short.
        api_upload_keys_per_minute=1_000_000,
        api_uploads_per_minute=1_000_000,
        api_long_polls_per_caller=100,
        api_max_wait_seconds=0.2,
    )
    app = create_app(settings)
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(app.openapi()))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        async with asyncio.timeout(30):
            while not server.started:
                await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=base_url, headers=auth("admin")) as client:
            for store in STORES:
                assert (await client.post("/v1/stores", json=store)).status_code == 201

        command = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            str(document),
            f"--url={base_url}",
            "--phases=examples,coverage,fuzzing,stateful",
            "--checks=all",
            "--mode=all",
            f"--max-examples={MAX_EXAMPLES}",
            f"--seed={SEED}",
            "--workers=1",
            "--request-timeout=30",
            "--suppress-health-check=all",
            "--no-color",
            f"--header=Authorization: Bearer {TOKENS['admin']}",
        ]
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(600):
            output, _ = await process.communicate()
    finally:
        server.should_exit = True
        await serving
        await rotator.close()

    report = output.decode(errors="replace")
    assert process.returncode == 0, report
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert phase in report, report
