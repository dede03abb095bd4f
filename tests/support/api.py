"""Shared by the API's integration tests: the app and the key rotator on real servers,
callers, and uploads made as m8ctl makes them.

The app runs in the test's own event loop through httpx's ASGI transport, with its
lifespan entered by hand (`router.lifespan_context`): the same loop as the fixtures, no
port, and the lifespan starts the real Runtime on the test's vhost and database. Upload
keys come from the real key rotator (`start_rotator`), asked through the API.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from typer.testing import CliRunner

from m8.api import ApiSettings, create_app
from m8.api.deps import ApiContext
from m8.crypto import Binding, SignedStatement, UploadKeyStatement, new_upload_id, seal_envelope
from m8.devservices import Services
from m8.domain import Secret, secret_id
from m8.domain.events import SecretStored, SecretUploadRejected
from m8.eventsourcing import Metadata
from m8.eventstore import MongoEventRecorder
from m8.keyrotator import KeyRotatorSettings, RotatorKeys, start
from m8.keyrotator.cli import keys_app
from m8.runtime import Runtime
from tests.servers import Broker
from tests.support.standins import relay_events_of

TOKENS = {
    "admin": "admin-token-0123456789",
    "alice": "alice-token-0123456789",  # user, may write team-a/ only, in any store
    "bob": "bob-token-0123456789",  # user, any path in any store
    "dave": "dave-token-0123456789",  # user, may write team-a/ in vault-a only
    "erin": "erin-token-0123456789",  # user whose entry names no prefixes and no stores
    "nobody": "nobody-token-0123456789",  # authenticated, no role
}
ENTRIES: list[dict[str, Any]] = [
    {"subject": "admin", "roles": ["admin"]},
    {"subject": "alice", "roles": ["user"], "prefixes": ["team-a/"], "stores": ["*"]},
    {"subject": "bob", "roles": ["user"], "prefixes": ["*"], "stores": ["*"]},
    {"subject": "dave", "roles": ["user"], "prefixes": ["team-a/"], "stores": ["vault-a"]},
    {"subject": "erin", "roles": ["user"]},
    {"subject": "nobody", "roles": []},
]
VAULT_STORE = {
    "type": "vault",
    "name": "vault-a",
    "address": "https://vault.example.com:8200",
    "mount": "secret",
    "path_prefix": "m8/",
}
AWS_STORE = {"type": "aws", "name": "aws-b", "region": "eu-west-1", "name_prefix": "m8/"}
REACTOR = Metadata(actor="reactor", correlation_id="corr-reactor")


def write_token_file(directory: Path, entries: list[dict[str, Any]] | None = None) -> Path:
    """A token file for TOKENS (or for `entries` of them), holding only their hashes."""
    tokens = [
        {**entry, "sha256": hashlib.sha256(TOKENS[entry["subject"]].encode()).hexdigest()}
        for entry in (ENTRIES if entries is None else entries)
    ]
    path = directory / "tokens.json"
    # Replaced in one step, as an operator's tooling should: a reader never sees half a file.
    partial = directory / "tokens.json.partial"
    partial.write_text(json.dumps({"tokens": tokens}))
    partial.replace(path)
    return path


def api_settings(
    broker: Broker, services: Services, database: str, directory: Path, **overrides: Any
) -> ApiSettings:
    """Settings of an API on the test's vhost and database."""
    values: dict[str, Any] = {
        "amqp_url": broker.url,
        "mongodb_uri": services["mongodb"].url,
        "mongodb_database": database,
        "api_token_file": write_token_file(directory),
        "api_rpc_timeout": 2.0,
        **overrides,
    }
    return ApiSettings(**values)


def auth(who: str) -> dict[str, str]:
    """The Authorization header of one of TOKENS' callers."""
    return {"Authorization": f"Bearer {TOKENS[who]}"}


@dataclass
class RunningApi:
    """The app, a client of it, and what a test needs to set the scene."""

    app: FastAPI
    client: httpx.AsyncClient

    @property
    def context(self) -> ApiContext:
        context: ApiContext = self.app.state.api
        return context

    @property
    def recorder(self) -> MongoEventRecorder:
        return self.context.runtime.recorder

    async def call(
        self,
        method: str,
        url: str,
        who: str = "admin",
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """A request as `who`."""
        headers = {**auth(who), **(headers or {})}
        return await self.client.request(method, url, headers=headers, **kwargs)

    async def record_outcome(self, outcome: SecretStored | SecretUploadRejected) -> None:
        """Records an upload's outcome as its reactor would (none runs beside the API here)."""

        def record(secret: Secret) -> None:
            if isinstance(outcome, SecretStored):
                secret.record_stored(outcome)
            else:
                secret.record_rejected(outcome)

        secret = secret_id(outcome.store, outcome.path)
        await self.context.runtime.repository.update(Secret, secret, record, REACTOR)

    async def add_store(self, body: dict[str, Any]) -> None:
        response = await self.call("POST", "/v1/stores", json=body)
        assert response.status_code == 201, response.text

    async def issue_key(
        self, store: str | None, path: str, who: str = "admin"
    ) -> UploadKeyStatement:
        """An upload key from the key rotator (a rotator must run), as m8ctl asks for one."""
        response = await self.call(
            "POST", "/v1/upload-keys", who=who, json={"store": store, "path": path}
        )
        assert response.status_code == 201, response.text
        return SignedStatement.from_dict(response.json()).statement

    def upload_body(
        self, key: UploadKeyStatement, value: bytes = b"s3cr3t-value", **changes: Any
    ) -> dict[str, Any]:
        """The body m8ctl sends to POST /v1/secrets for `value` under `key`."""
        upload_id = new_upload_id()
        binding = Binding(upload_id, key.key_id, key.store_id, key.path)
        encrypted = seal_envelope(value, binding, key.public_key)
        return {
            "upload_id": upload_id,
            "key_id": key.key_id,
            **encrypted.to_dict(),
            "store": key.store_id,
            "path": key.path,
            **changes,
        }


@contextlib.asynccontextmanager
async def running_api(settings: ApiSettings) -> AsyncIterator[RunningApi]:
    """The API with its lifespan running, and an httpx client of it."""
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://m8") as client,
    ):
        running = RunningApi(app, client)
        # Tests record reactors' outcomes themselves: publish them as the reactors would.
        relay_events_of(running.context.runtime, settings.amqp_url, "reactor-vault", "reactor-aws")
        yield running


async def start_rotator(
    broker: Broker, services: Services, database: str, directory: Path, **overrides: Any
) -> Runtime:
    """The key rotator on the test's vhost and database, with KEKs for vault and aws stores
    and a master key of its own; `overrides` change its settings (key lifetime, sweep
    interval, keys)."""
    runner = CliRunner()
    for args in (
        ["generate-kek", "--store-type", "vault", "--kek-id", "vault-1", "--out", str(directory)],
        ["generate-kek", "--store-type", "aws", "--kek-id", "aws-1", "--out", str(directory)],
        ["generate-master-key", "--out", str(directory / "master.json")],
    ):
        made = runner.invoke(keys_app, args)
        assert made.exit_code == 0, made.output
    values: dict[str, Any] = {
        "amqp_url": broker.service_url("keyrotator"),  # its own broker user, as deployed
        "mongodb_uri": services["mongodb"].url,
        "mongodb_database": database,
        "keyrotator_kek_files": {
            "vault": [directory / "vault-1.pub.json"],
            "aws": [directory / "aws-1.pub.json"],
        },
        "keyrotator_master_key_file": directory / "master.json",
    }
    settings = KeyRotatorSettings(**{**values, **overrides})
    runtime = await Runtime.start("keyrotator", settings)
    try:
        await start(runtime, settings, RotatorKeys.load(settings))
    except BaseException:
        await runtime.close()
        raise
    return runtime


@contextlib.asynccontextmanager
async def api_with_rotator(
    broker: Broker,
    services: Services,
    database: str,
    directory: Path,
    api: dict[str, Any] | None = None,
    **rotator: Any,
) -> AsyncIterator[RunningApi]:
    """The API and a key rotator behind it; `api` and `rotator` override their settings."""
    runtime = await start_rotator(broker, services, database, directory, **rotator)
    try:
        overrides = {"api_rpc_timeout": 10, **(api or {})}
        settings = api_settings(broker, services, database, directory, **overrides)
        async with running_api(settings) as running:
            yield running
    finally:
        await runtime.close()
