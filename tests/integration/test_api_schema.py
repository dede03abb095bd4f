"""Schemathesis against the API's own OpenAPI document: no input gets a 5xx, and every
answer matches the document (status, content type, headers, body)."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from m8.api import create_app
from m8.devservices import Services
from tests.servers import Broker
from tests.support.api import (
    VAULT_STORE,
    api_settings,
    auth,
    start_rotator,
)

EXAMPLES_PER_OPERATION_AND_MODE = 60
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def fuzz(openapi: dict[str, Any], base_url: str) -> tuple[Counter[int], list[str]]:
    """Runs generated cases of every operation; the statuses seen and the failures."""
    schema = schemathesis.openapi.from_dict(openapi)
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # every operation of our own document loads
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run = _cases(operation.as_strategy(generation_mode=mode), base_url, statuses)
            try:
                run()
            except Unsatisfiable:
                pass  # an operation without parameters has no invalid input to make
            except Exception as exc:  # one report per operation and mode, then go on
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    return statuses, failures


def _cases(strategy: Any, base_url: str, statuses: Counter[int]) -> Callable[[], None]:
    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case[Any]) -> None:
        response = case.call(base_url=base_url, headers=auth("admin"), timeout=30)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    return run


async def test_generated_requests_get_no_server_error_and_answers_match_the_schema(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> None:
    # The real rotator answers upload-key requests, so those succeed too.
    rotator = await start_rotator(broker, services, mongo_db_name, tmp_path)
    app = create_app(api_settings(broker, services, mongo_db_name, tmp_path))
    # Schemathesis is synchronous: it runs in a thread and calls a real uvicorn server
    # that runs in this test's event loop, where the fixtures' connections live.
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
            assert (await client.post("/v1/stores", json=VAULT_STORE)).status_code == 201

        statuses, failures = await asyncio.to_thread(fuzz, app.openapi(), base_url)
    finally:
        server.should_exit = True
        await serving
        await rotator.close()

    assert not failures, "\n\n".join(failures)
    assert sum(statuses.values()) >= 1000, statuses
    assert not [status for status in statuses if status >= 500], statuses
    assert statuses[201] > 0, statuses  # some generated stores and upload keys were made
