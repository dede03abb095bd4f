"""The attack suite's world, and the table it prints.

One running m8 for the module: the API (in this process, through httpx's ASGI transport),
the real key rotator and a real vault reactor on the servers of tests/servers.py, with
stores on the real OpenBao and moto. Each attack goes through a public interface (HTTP,
m8's client library, the broker on a service's own user) and adds a row (case, expected,
got) to the table printed at the end of the run and, when `M8_ATTACK_TABLE` names a file,
written there as Markdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import aio_pika
import httpx
import pytest
from pymongo import AsyncMongoClient

from m8.client.keys import utc_now
from m8.client.pins import parse_published, pin_first_use
from m8.client.profile import RECEIPT, ROTATOR, Profile
from m8.client.sdk import M8Client
from m8.crypto import format_utc
from m8.devservices import Services
from m8.domain import UploadKey
from m8.eventsourcing import StoredEvent
from m8.eventstore import MongoEventRecorder
from m8.messaging import Broker as AmqpBroker
from tests.integration.test_api_auth import AUDIENCE, ISSUER, IdentityProvider, identity_provider
from tests.integration.test_broker_permissions import _publish
from tests.integration.test_reactor import aws_config, vault_config, versions
from tests.integration.test_upstream_adapters import AwsUpstream, Upstream, VaultUpstream
from tests.servers import Aws, Broker, Vault, unique, virtual_host
from tests.support.api import TOKENS, RunningApi, api_settings, running_api, start_rotator
from tests.support.client_http import via_httpx
from tests.support.events import eventually
from tests.support.uploads import ReactorKeys, Reactors, Uploads

__all__ = ["identity_provider"]

VAULT = "vault-a"  # on the real OpenBao; a vault reactor serves it
AWS = "aws-b"  # on moto; no reactor serves it (no attack gets that far)
INACTIVE = "vault-off"  # deactivated by the attack that needs it inactive


# --- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    COLUMNS: ClassVar[tuple[str, ...]] = ("case", "expected", "got")

    case: str
    expected: str
    got: str


@dataclass
class AttackTable:
    """The rows of the run, in the order the attacks ran."""

    rows: list[Row] = field(default_factory=list)

    def add(self, case: str, expected: str, got: str) -> None:
        self.rows.append(Row(case, expected, short(got)))

    def text(self) -> str:
        """Plain, aligned columns."""
        lines = [Row("case", "expected", "got"), *self.rows]
        case, expected, got = (max(len(getattr(r, c)) for r in lines) for c in Row.COLUMNS)
        out = [f"{r.case:<{case}} | {r.expected:<{expected}} | {r.got}" for r in lines]
        out.insert(1, "-+-".join("-" * width for width in (case, expected, got)))
        return "\n".join(out)

    def markdown(self) -> str:
        def cell(text: str) -> str:
            return text.replace("|", "\\|")

        lines = ["| # | case | expected | got |", "|---|---|---|---|"]
        for n, row in enumerate(self.rows, start=1):
            lines.append(f"| {n} | {cell(row.case)} | {cell(row.expected)} | {cell(row.got)} |")
        return "\n".join(lines) + "\n"


_TABLE = pytest.StashKey[AttackTable]()


@pytest.fixture(scope="session")
def table(pytestconfig: pytest.Config) -> AttackTable:
    """The run's attack table; the rows are printed by pytest_terminal_summary below."""
    return pytestconfig.stash.setdefault(_TABLE, AttackTable())


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    attacks = config.stash.get(_TABLE, None)
    if attacks is None or not attacks.rows:
        return
    terminalreporter.section(f"attack table ({len(attacks.rows)} cases)")
    for line in attacks.text().splitlines():
        terminalreporter.write_line(line)
    if target := os.environ.get("M8_ATTACK_TABLE"):
        Path(target).write_text(attacks.markdown())
        terminalreporter.write_line(f"written as Markdown to {target}")


# --- what an attack got -----------------------------------------------------------------------

_GOT_LENGTH = 100


def short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _GOT_LENGTH else text[: _GOT_LENGTH - 3] + "..."


def problem(response: httpx.Response) -> str:
    """What an HTTP answer was: status, problem type, and the fields it names or the start
    of its detail."""
    if response.headers.get("content-type") != "application/problem+json":
        return short(f"{response.status_code} {response.headers.get('content-type')}")
    body = response.json()
    code = str(body.get("type", "")).removeprefix("urn:m8:problem:")
    # A validation error names each field and what is wrong with it: more than its detail.
    fields = [f"{e['field']} {e['message']}" for e in body.get("errors", [])]
    return short(f"{response.status_code} {code}: {'; '.join(fields) or body.get('detail', '')}")


def failure(exc: BaseException) -> str:
    """What an exception was: its class and the start of its message."""
    return short(f"{type(exc).__name__}: {exc}")


def assert_problem(response: httpx.Response, status: int, *codes: str) -> None:
    """A problem+json answer with `status`, one of `codes` as its type, a title and a detail."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] in {f"urn:m8:problem:{code}" for code in codes}, body
    assert body["title"], body
    assert body["detail"], body
    assert body["status"] == status


# --- the world --------------------------------------------------------------------------------


@dataclass
class World:
    """m8 running, what a test reads directly, and the attacker's tools."""

    api: RunningApi
    vhost: Broker
    amqp: AmqpBroker  # the virtual host's administrator: reads dead-letter queues
    upstreams: dict[str, Upstream]
    idp: IdentityProvider
    loop: asyncio.AbstractEventLoop
    reactors: Reactors  # the vault reactor runs in the test's process: its metrics are here

    @property
    def recorder(self) -> MongoEventRecorder:
        return self.api.recorder

    async def event_ids(self) -> set[str]:
        """Every event the store holds now."""
        return {str(d["_id"]) async for d in self.recorder.events.find({}, {"_id": 1})}

    async def added_since(self, before: set[str]) -> list[str]:
        """The types of the events recorded since `before`, oldest first."""
        found = self.recorder.events.find({}, {"_id": 1, "type": 1}).sort("_id", 1)
        return [str(d["type"]) async for d in found if str(d["_id"]) not in before]

    def versions(self, store: str, path: str) -> int:
        """How many versions the upstream store of `store` holds at `path`, read directly."""
        return versions(self.upstreams[store], path)

    async def publish_as(self, service: str, event: StoredEvent) -> None:
        """Publishes `event` on the broker with `service`'s own credentials (a leaked one);
        ChannelAccessRefused if that user may not publish it."""
        connection = await aio_pika.connect(self.vhost.service_url(service))
        try:
            await _publish(connection, event)
        finally:
            await connection.close()

    async def key_destroyed(self, key_id: str, reason: str) -> None:
        """Waits until the rotator destroyed `key_id` for `reason` (the last event of an
        upload's story), so that nothing of it lands in the next attack's books."""

        async def destroyed() -> bool:
            events = await self.recorder.load(UploadKey.aggregate_type, key_id)
            return any(
                e.event_type == "UploadKeyDestroyed" and e.data["reason"] == reason for e in events
            )

        await eventually(destroyed)

    async def signed_key(self, store: str, path: str) -> dict[str, Any]:
        """A real signed upload key statement, as POST /v1/upload-keys answers the admin."""
        answer = await self.api.call("POST", "/v1/upload-keys", json={"store": store, "path": path})
        assert answer.status_code == 201, answer.text
        signed: dict[str, Any] = answer.json()
        return signed


def new_path(case: str) -> str:
    """A path under alice's prefix that no other attack uses."""
    return f"team-a/{case}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def world(
    services: Services,
    identity_provider: IdentityProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[World]:
    """m8 in a virtual host, database and upstream prefixes of its own, with three stores."""
    directory = tmp_path_factory.mktemp("attack")
    database = unique("m8_attack_")
    openbao = services["openbao"]
    vault = Vault(openbao.url, openbao.extra["token"], "secret", unique("m8-attack-") + "/")
    aws = Aws(services["aws"].url, "us-east-1", unique("m8-attack-") + "/")
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        services["mongodb"].url, tz_aware=True
    )
    with virtual_host(services) as vhost:
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(mongo.close)
            stack.push_async_callback(mongo.drop_database, database)
            recorder = MongoEventRecorder(mongo[database])
            await recorder.create_indexes()
            # The reactor's keys, and a rotator that seals to its KEK (as test_forged_messages).
            keys = ReactorKeys.create(directory)
            uploads = await Uploads.create(recorder, keys, directory)
            (directory / "rotator").mkdir()
            rotator = await start_rotator(
                vhost,
                services,
                database,
                directory / "rotator",
                keyrotator_kek_files=uploads.rotator_settings.keyrotator_kek_files,
                keyrotator_master_key_file=uploads.rotator_settings.keyrotator_master_key_file,
            )
            stack.push_async_callback(rotator.close)
            settings = api_settings(
                vhost,
                services,
                database,
                directory,
                api_rpc_timeout=10,
                oidc_jwks_url=identity_provider.jwks_url,
                oidc_issuer=ISSUER,
                oidc_audience=AUDIENCE,
                oidc_roles_claim="realm_access.roles",
                # The suite asks for many keys as the admin; limits are not what it attacks.
                api_upload_keys_per_minute=10_000,
                api_uploads_per_minute=10_000,
            )
            api = await stack.enter_async_context(running_api(settings))
            configs = {
                VAULT: {"type": "vault", **vault_config(vault)},
                AWS: {"type": "aws", **aws_config(aws)},
                INACTIVE: {
                    "type": "vault",
                    **vault_config(vault, path_prefix=vault.prefix + "x/"),
                },
            }
            for name, config in configs.items():
                await api.add_store({"name": name, **config})
            reactors = Reactors.create(uploads, keys, vhost, services["mongodb"].url, database)
            stack.push_async_callback(reactors.stop)
            await reactors.stand_ins.stop()  # the real API and rotator publish their own events
            reactors.use_credentials(
                {
                    name: {**{k: v for k, v in config.items() if k != "type"}, "token": vault.token}
                    for name, config in configs.items()
                    if config["type"] == "vault"
                }
            )
            await reactors.start("vault")
            amqp = await AmqpBroker.connect(vhost.url, name="attack")
            stack.push_async_callback(amqp.close)
            upstreams: dict[str, Upstream] = {
                VAULT: VaultUpstream(vault),
                AWS: AwsUpstream(aws),
                INACTIVE: VaultUpstream(replace(vault, prefix=vault.prefix + "x/")),
            }
            loop = asyncio.get_running_loop()
            yield World(api, vhost, amqp, upstreams, identity_provider, loop, reactors)


# --- a malicious API in front of the real one, for m8's client library -----------------------

Forward = Callable[[httpx.Request], httpx.Response]
Hook = Callable[[httpx.Request, Forward], httpx.Response]


@dataclass
class MaliciousApi(httpx.BaseTransport):
    """The transport of m8's (synchronous) client: forwards each request to the real API,
    which runs in the test's event loop, unless a hook for its route answers instead (and
    may forward a changed request, or change the real answer). `forwarded` lists what
    reached the real API."""

    world: World
    hooks: dict[tuple[str, str], Hook] = field(default_factory=dict)
    forwarded: list[tuple[str, str]] = field(default_factory=list)

    def on(self, method: str, route: str, hook: Hook) -> None:
        self.hooks[(method, route)] = hook

    def reached(self, method: str, route: str) -> bool:
        return any(m == method and re.fullmatch(route, p) for m, p in self.forwarded)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        for (method, route), hook in self.hooks.items():
            if method == request.method and re.fullmatch(route, request.url.path):
                return hook(request, self._forward)
        return self._forward(request)

    def _forward(self, request: httpx.Request) -> httpx.Response:
        self.forwarded.append((request.method, request.url.path))
        running = asyncio.run_coroutine_threadsafe(self._send(request), self.world.loop)
        return running.result(timeout=120)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        answer = await self.world.api.client.request(
            request.method,
            request.url.raw_path.decode(),
            headers=headers,
            content=request.content,
        )
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


@contextlib.contextmanager
def m8_client(transport: MaliciousApi) -> Iterator[M8Client]:
    """m8's client library, as the admin, talking to `transport`."""
    with M8Client("http://m8", TOKENS["admin"], transport=via_httpx(transport)) as client:
        yield client


def logged_in(client: M8Client, directory: Path, store: str = VAULT) -> Profile:
    """A profile as `m8ctl login --store STORE` saves it on first use: the published
    rotator and receipt keys pinned (run in a worker thread: the client is synchronous)."""
    now = utc_now()
    profile = Profile(client.server, TOKENS["admin"], store=store, path=directory / "m8ctl.json")
    pin_first_use(profile.rotator_keys, parse_published(client.rotator_keys(), ROTATOR), now)
    pin_first_use(profile.receipt_keys, parse_published(client.receipt_keys(), RECEIPT), now)
    assert profile.rotator_keys.pinned, "the server publishes no rotator key"
    assert profile.receipt_keys.pinned, "the server publishes no receipt key"
    profile.keys_checked_at = format_utc(now)
    profile.save()
    return profile
