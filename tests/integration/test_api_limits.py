"""Limits per caller: upload keys and uploads a minute, and long-polls at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from m8.crypto import new_upload_id
from m8.devservices import Services
from tests.servers import Broker
from tests.support.api import (
    VAULT_STORE,
    RunningApi,
    api_settings,
    api_with_rotator,
    running_api,
)
from tests.support.events import eventually

# A well-formed upload; no key has this id, and erin may write nowhere: each answer is a
# quick refusal, and counts all the same.
UPLOAD: dict[str, Any] = {
    "key_id": "no-such-key",
    "client_public_key": "A" * 43 + "=",
    "nonce": "A" * 32,
    "ciphertext": "A" * 24,
    "store": "vault-a",
    "path": "team-a/x",
}


@pytest.fixture
async def api(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> AsyncIterator[RunningApi]:
    """The API with its default limits."""
    async with running_api(api_settings(broker, services, mongo_db_name, tmp_path)) as running:
        yield running


async def _upload(api: RunningApi, who: str) -> int:
    response = await api.call(
        "POST", "/v1/secrets", who=who, json={**UPLOAD, "upload_id": new_upload_id()}
    )
    return response.status_code


async def test_the_61st_upload_in_a_minute_is_refused_with_a_retry_after(
    api: RunningApi,
) -> None:
    statuses = [await _upload(api, "erin") for _ in range(60)]

    refused = await api.call(
        "POST", "/v1/secrets", who="erin", json={**UPLOAD, "upload_id": new_upload_id()}
    )

    assert set(statuses) == {403}  # the default allows 60 a minute
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "'erin'" in refused.json()["detail"]
    assert await _upload(api, "bob") != 429  # a limit per caller: others go on


async def test_upload_keys_are_limited_per_caller_at_this_replicas_share(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> None:
    # 6 a minute for the deployment, 2 replicas: this one allows 3.
    settings = api_settings(
        broker,
        services,
        mongo_db_name,
        tmp_path,
        api_upload_keys_per_minute=6,
        api_replicas=2,
    )
    async with running_api(settings) as api:
        body = {"store": "vault-a", "path": "team-a/x"}
        statuses = [
            (await api.call("POST", "/v1/upload-keys", who="erin", json=body)).status_code
            for _ in range(4)
        ]

    assert statuses == [403, 403, 403, 429]


async def test_a_third_waiting_status_request_of_one_caller_is_refused(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> None:
    async with api_with_rotator(
        broker, services, mongo_db_name, tmp_path, api={"api_long_polls_per_caller": 2}
    ) as api:
        await api.add_store(VAULT_STORE)
        body = api.upload_body(await api.issue_key("vault-a", "team-a/x", who="bob"))
        assert (await api.call("POST", "/v1/secrets", who="bob", json=body)).status_code == 202
        url = f"/v1/uploads/{body['upload_id']}"
        # No reactor runs: the upload stays pending and these two wait their full time.
        waiting = [
            asyncio.create_task(api.call("GET", f"{url}?wait=30", who="bob")) for _ in range(2)
        ]
        limits = api.context.limits.long_polls

        async def both_waiting() -> bool:
            return limits.running("bob") == 2

        try:
            await eventually(both_waiting)
            third = await api.call("GET", f"{url}?wait=30", who="bob")
            not_waiting = await api.call("GET", url, who="bob")
            another_caller = await api.call("GET", f"{url}?wait=0.1", who="admin")
        finally:
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
        after = await api.call("GET", f"{url}?wait=0.1", who="bob")

    assert third.status_code == 429
    assert third.headers["retry-after"] == "1"
    assert third.headers["content-type"] == "application/problem+json"
    assert not_waiting.status_code == another_caller.status_code == after.status_code == 200
