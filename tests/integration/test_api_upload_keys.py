"""Upload keys and rotator verify keys, answered by the real key rotator over RPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from m8.api import ApiSettings
from m8.crypto import (
    Binding,
    SignedStatement,
    decode_verify_key,
    new_upload_id,
    seal_envelope,
    verify_key_fingerprint,
    verify_statement,
)
from m8.devservices import Services
from tests.servers import Broker
from tests.support.api import (
    AWS_STORE,
    VAULT_STORE,
    RunningApi,
    api_settings,
    api_with_rotator,
    running_api,
    write_token_file,
)
from tests.support.events import eventually
from tests.support.rabbitmq_node import rabbitmq_node

PATH = "team-a/db/password"


@pytest.fixture
async def api(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> AsyncIterator[RunningApi]:
    async with api_with_rotator(broker, services, mongo_db_name, tmp_path) as running:
        yield running


async def test_an_issued_key_is_signed_by_a_published_rotator_key_and_takes_an_upload(
    api: RunningApi,
) -> None:
    await api.add_store(VAULT_STORE)

    published = await api.call("GET", "/v1/keys/rotator", who="alice")
    issued = await api.call(
        "POST", "/v1/upload-keys", who="alice", json={"store": "vault-a", "path": PATH}
    )

    assert published.status_code == 200
    assert issued.status_code == 201
    keys = published.json()["keys"]
    pinned = {k["signing_key_id"]: decode_verify_key(k["verify_key"]) for k in keys}
    for k in keys:
        assert k["fingerprint"] == verify_key_fingerprint(pinned[k["signing_key_id"]])
    statement = verify_statement(SignedStatement.from_dict(issued.json()), pinned)
    assert (statement.store_id, statement.path) == ("vault-a", PATH)

    # What m8ctl does next: encrypt to the key, and upload (to the default store).
    upload_id = new_upload_id()
    binding = Binding(upload_id, statement.key_id, "vault-a", PATH)
    encrypted = seal_envelope(b"value", binding, statement.public_key)
    body = {"upload_id": upload_id, "key_id": statement.key_id, "path": PATH}
    accepted = await api.call(
        "POST", "/v1/secrets", who="alice", json={**body, **encrypted.to_dict()}
    )
    assert accepted.status_code == 202


async def test_the_rotators_refusals_become_problems_a_person_can_act_on(
    api: RunningApi,
) -> None:
    none_yet = await api.call("POST", "/v1/upload-keys", json={"path": PATH})
    await api.add_store(VAULT_STORE)
    await api.add_store(AWS_STORE)
    await api.call("POST", "/v1/stores/aws-b/deactivate")

    unknown = await api.call("POST", "/v1/upload-keys", json={"store": "nowhere", "path": PATH})
    inactive = await api.call("POST", "/v1/upload-keys", json={"store": "aws-b", "path": PATH})
    bad_path = await api.call("POST", "/v1/upload-keys", json={"path": "a/../b"})

    assert none_yet.status_code == 409
    assert unknown.status_code == 404
    assert "nowhere" in unknown.json()["detail"]
    assert inactive.status_code == 409
    assert "inactive" in inactive.json()["detail"]
    assert bad_path.status_code == 422
    for answer in (none_yet, unknown, inactive, bad_path):
        assert answer.headers["content-type"] == "application/problem+json"


async def test_without_a_rotator_key_requests_are_unavailable_with_a_retry_hint(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> None:
    settings = api_settings(broker, services, mongo_db_name, tmp_path, api_rpc_timeout=0.5)
    async with running_api(settings) as api:
        issued = await api.call("POST", "/v1/upload-keys", json={"store": "vault-a", "path": PATH})
        published = await api.call("GET", "/v1/keys/rotator")

    for answer in (issued, published):
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "5"
        assert "try again" in answer.json()["detail"]


async def test_while_the_broker_is_down_upload_keys_are_unavailable_with_a_retry_hint(
    services: Services, mongo_db_name: str, tmp_path: Path
) -> None:
    # A node of the test's own, the one it may stop (never the machine's RabbitMQ).
    with rabbitmq_node() as node:
        settings = ApiSettings(
            amqp_url=node.url,
            mongodb_uri=services["mongodb"].url,
            mongodb_database=mongo_db_name,
            api_token_file=write_token_file(tmp_path),
            api_rpc_timeout=1.0,  # no rotator runs: a call that reaches the broker times out
        )
        async with running_api(settings) as api:
            await asyncio.to_thread(node.stop_app)
            try:
                answers = [
                    await api.call(
                        "POST", "/v1/upload-keys", json={"store": "vault-a", "path": PATH}
                    ),
                    await api.call("GET", "/v1/keys/rotator"),
                ]
            finally:
                await asyncio.to_thread(node.start_app)

            async def reaches_the_broker_again() -> bool:
                answer = await api.call("GET", "/v1/keys/rotator")
                return bool(answer.json()["type"] == "urn:m8:problem:rotator_unavailable")

            await eventually(reaches_the_broker_again, timeout=120)

    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["retry-after"] == "5"
        assert answer.json()["type"] == "urn:m8:problem:unavailable"
        assert "broker is unavailable" in answer.json()["detail"]
