"""The reactors on real servers: uploads end upstream once, or are refused with a reason.

Uploads are built as m8ctl, the API and the rotator will build them (tests/support/
uploads.py); what lands upstream is read directly with hvac and boto3.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from hvac.exceptions import InvalidPath
from prometheus_client import REGISTRY, generate_latest
from pydantic import SecretStr

from m8.crypto import fingerprint, new_upload_id
from m8.devservices import Services
from m8.domain.events import SecretUploadRequested
from m8.eventsourcing import StoredEvent
from m8.eventstore import MongoEventRecorder
from m8.messaging import Broker as AmqpBroker
from m8.messaging.topology import reactor_queue
from m8.reactors.adapters import VaultKvStore
from tests.integration.test_upstream_adapters import AwsUpstream, Upstream, VaultUpstream
from tests.servers import Aws, Broker, Vault
from tests.support.events import METADATA, eventually
from tests.support.uploads import (
    ReactorKeys,
    Reactors,
    Sent,
    Uploads,
    declare_reactor_queues,
    secret_value,
    tamper,
)

VAULT_STORE = "vault-main"
AWS_STORE = "aws-main"
STORES = {"vault": VAULT_STORE, "aws": AWS_STORE}


@pytest.fixture
async def reactors(
    recorder: MongoEventRecorder,
    amqp: AmqpBroker,
    broker: Broker,
    services: Services,
    mongo_db_name: str,
    vault: Vault,
    aws: Aws,
    state_dir: Path,
) -> AsyncIterator[Reactors]:
    """A vault and an aws store in the catalog, reactor keys, and no reactor running yet."""
    await declare_reactor_queues(amqp)
    keys = ReactorKeys.create(state_dir)
    uploads = Uploads(recorder, keys.kek)
    await uploads.register_store(
        VAULT_STORE,
        "vault",
        {"address": vault.addr, "mount": vault.mount, "path_prefix": vault.prefix},
    )
    await uploads.register_store(
        AWS_STORE,
        "aws",
        {"region": aws.region, "name_prefix": aws.prefix, "endpoint_url": aws.endpoint_url},
    )
    running = Reactors.create(uploads, keys, broker.url, services["mongodb"].url, mongo_db_name)
    running.use_credentials(
        {
            VAULT_STORE: {"address": vault.addr, "token": vault.token},
            AWS_STORE: {"region": aws.region, "endpoint_url": aws.endpoint_url},
        }
    )
    yield running
    await running.stop()


@pytest.fixture
def upstreams(vault: Vault, aws: Aws) -> dict[str, Upstream]:
    """The test's stores, read directly."""
    return {"vault": VaultUpstream(vault), "aws": AwsUpstream(aws)}


def versions(upstream: Upstream, path: str) -> int:
    """How many versions the store holds at `path` (0 when there is no secret)."""
    try:
        return upstream.version_count(path)
    except InvalidPath:
        return 0


def uploads_counted(store_type: str, store: str, outcome: str, reason: str = "") -> float:
    labels = {"store_type": store_type, "store": store, "outcome": outcome, "reason": reason}
    return REGISTRY.get_sample_value("m8_reactor_uploads_total", labels) or 0.0


async def test_upload_to_each_store_is_readable_upstream_with_one_fingerprint_for_one_value(
    reactors: Reactors,
    recorder: MongoEventRecorder,
    caplog: pytest.LogCaptureFixture,
    upstreams: dict[str, Upstream],
) -> None:
    caplog.set_level(logging.DEBUG, logger="m8")
    value, path = secret_value(), "team/db/password"
    await reactors.start("vault")
    await reactors.start("aws")
    sent = {
        store_type: await reactors.uploads.upload(store, path, value)
        for store_type, store in STORES.items()
    }
    for store_type, upload in sent.items():
        settled = await reactors.uploads.settled(upload)
        assert settled.status == "stored", settled
        upstream = upstreams[store_type]
        assert upstream.value(path) == value
        assert upstream.version_count(path) == 1
        assert upstream.marks(path).fingerprint == settled.fingerprint
        assert upstream.marks(path).upload_id == upload.upload_id
    fingerprints = {(await reactors.uploads.state(u)).fingerprint for u in sent.values()}
    assert fingerprints == {fingerprint(value, reactors.keys.fingerprint_key)}

    # The value is nowhere but upstream: not in events, log records or metrics.
    events = [doc async for doc in recorder.events.find({})]
    assert value.decode() not in repr(events)
    assert all(value.decode() not in repr(vars(record)) for record in caplog.records)
    metrics = [line for line in generate_latest().decode().splitlines() if "m8_reactor" in line]
    assert metrics
    assert not any(value.decode() in line or path in line for line in metrics)


@pytest.mark.parametrize("store_type", ["vault", "aws"])
async def test_same_request_delivered_several_times_at_once_makes_one_upstream_version(
    reactors: Reactors, amqp: AmqpBroker, store_type: str, upstreams: dict[str, Upstream]
) -> None:
    path = "team/api/key"
    sent = await reactors.uploads.upload(STORES[store_type], path, secret_value())
    # Copies race each other into the reactor, beside the one the outbox relay sends.
    await asyncio.gather(amqp.publish_event(sent.event), amqp.publish_event(sent.event))
    await reactors.start(store_type)
    assert (await reactors.uploads.settled(sent)).status == "stored"
    assert upstreams[store_type].version_count(path) == 1
    assert [e.event_type for e in await reactors.uploads.outcomes(sent)] == ["SecretStored"]


async def test_request_redelivered_after_the_inbox_forgot_it_changes_nothing(
    reactors: Reactors,
    amqp: AmqpBroker,
    recorder: MongoEventRecorder,
    upstreams: dict[str, Upstream],
) -> None:
    path = "team/api/key"
    await reactors.start("vault")
    sent = await reactors.uploads.upload(VAULT_STORE, path, secret_value())
    assert (await reactors.uploads.settled(sent)).status == "stored"
    inbox = recorder.db["inbox"]

    async def remembered() -> bool:
        return await inbox.count_documents({}) > 0

    await eventually(remembered)
    await inbox.delete_many({})  # what its TTL does after a week
    before = uploads_counted("vault", VAULT_STORE, "duplicate")
    await amqp.publish_event(sent.event)

    async def seen_as_duplicate() -> bool:
        return uploads_counted("vault", VAULT_STORE, "duplicate") > before

    await eventually(seen_as_duplicate)
    assert upstreams["vault"].version_count(path) == 1
    assert [e.event_type for e in await reactors.uploads.outcomes(sent)] == ["SecretStored"]


async def test_uploads_failing_a_check_are_rejected_with_the_reason_and_never_reach_upstream(
    reactors: Reactors, recorder: MongoEventRecorder, vault: Vault, upstreams: dict[str, Upstream]
) -> None:
    uploads = reactors.uploads
    upstream = upstreams["vault"]

    key = await uploads.issue_key(VAULT_STORE, "tampered")
    upload_id, encrypted = uploads.encrypt(key, secret_value())
    tampered = await uploads.submit(key, upload_id, tamper(encrypted))

    # An envelope made for another path, sent for this one.
    key = await uploads.issue_key(VAULT_STORE, "swapped")
    upload_id, encrypted = uploads.encrypt(key, secret_value(), path="elsewhere")
    swapped = await uploads.submit(key, upload_id, encrypted)

    # A second upload under a key that the first one claimed.
    key = await uploads.issue_key(VAULT_STORE, "reused")
    first_value = secret_value()
    upload_id, encrypted = uploads.encrypt(key, first_value)
    first = await uploads.submit(key, upload_id, encrypted)
    upload_id, encrypted = uploads.encrypt(key, secret_value())
    reused = await uploads.submit(key, upload_id, encrypted, claim=False)

    # Claimed in time, handled after its key expired.
    key = await uploads.issue_key(VAULT_STORE, "expired", lifetime=timedelta(minutes=-1))
    upload_id, encrypted = uploads.encrypt(key, secret_value())
    claimed_at = key.signed.statement.expires_at - timedelta(minutes=1)
    expired = await uploads.submit(key, upload_id, encrypted, claimed_at=claimed_at)

    # The rotator destroyed the sealed key before the reactor got to it.
    destroyed = await uploads.upload(VAULT_STORE, "destroyed", secret_value())
    await recorder.db["upload_keys"].delete_one({"_id": destroyed.request.key_id})

    await uploads.register_store(
        "vault-off",
        "vault",
        {"address": vault.addr, "mount": vault.mount, "path_prefix": vault.prefix + "off/"},
    )
    inactive = await uploads.upload("vault-off", "inactive", secret_value())
    await uploads.deactivate_store("vault-off")

    await reactors.start("vault")
    expected: list[tuple[Sent, str, str]] = [
        (tampered, "bad_mac", "does not decrypt"),
        (swapped, "binding_mismatch", "path"),
        (reused, "key_used", "another upload"),
        (expired, "key_expired", "expired"),
        (destroyed, "key_destroyed", "gone"),
        (inactive, "store_inactive", "inactive"),
    ]
    for sent, reason, detail in expected:
        settled = await uploads.settled(sent)
        assert (settled.status, settled.reason) == ("rejected", reason), sent.request.path
        assert settled.detail is not None
        assert detail in settled.detail
        if sent is not reused:
            assert versions(upstream, sent.request.path) == 0
    assert (await uploads.settled(first)).status == "stored"
    assert upstream.version_count("reused") == 1
    assert upstream.value("reused") == first_value


async def test_request_missing_from_the_event_store_is_dead_lettered_and_not_written(
    reactors: Reactors, amqp: AmqpBroker, upstreams: dict[str, Upstream]
) -> None:
    key = await reactors.uploads.issue_key(VAULT_STORE, "forged")
    upload_id, encrypted = reactors.uploads.encrypt(key, secret_value())
    wire = encrypted.to_dict()
    forged = StoredEvent.new(
        "secret",
        f"{VAULT_STORE}:forged",
        1,
        SecretUploadRequested(
            upload_id=upload_id,
            store=VAULT_STORE,
            store_type="vault",
            path="forged",
            key_id=key.key_id,
            client_public_key=wire["client_public_key"],
            nonce=wire["nonce"],
            ciphertext=wire["ciphertext"],
            ciphertext_sha256="0" * 64,
            requested_by="mallory",
        ),
        METADATA,
    )
    await reactors.start("vault")
    await amqp.publish_event(forged)  # straight onto the broker, never stored
    dead = await _dead_letter(amqp, "vault")
    assert dead.message_id == forged.event_id
    assert versions(upstreams["vault"], "forged") == 0


async def _dead_letter(amqp: AmqpBroker, store_type: str) -> aio_pika.abc.AbstractIncomingMessage:
    channel = await amqp.channel()
    dead = await channel.get_queue(reactor_queue(store_type).dead_letter_queue)
    async with asyncio.timeout(30):
        while (message := await dead.get(fail=False)) is None:
            await asyncio.sleep(0.1)
    await message.ack()
    return message


async def test_two_reactors_on_one_queue_store_every_upload_once(
    reactors: Reactors, amqp: AmqpBroker, upstreams: dict[str, Upstream]
) -> None:
    await reactors.start("vault", reactor_concurrency=2)
    await reactors.start("vault", reactor_concurrency=2)
    values = {f"team/svc{n}/token": secret_value() for n in range(6)}
    sent = [await reactors.uploads.upload(VAULT_STORE, p, v) for p, v in values.items()]
    # Each request also goes out a second time, so that both reactors may get a copy.
    await asyncio.gather(*(amqp.publish_event(s.event) for s in sent))
    vault = upstreams["vault"]
    for upload in sent:
        assert (await reactors.uploads.settled(upload)).status == "stored"
    for upload in sent:
        outcomes = await reactors.uploads.outcomes(upload)
        assert [e.event_type for e in outcomes] == ["SecretStored"]
    for path, value in values.items():
        assert vault.version_count(path) == 1
        assert vault.value(path) == value


class Listener:
    """An HTTP server that remembers every request it gets, and answers none usefully."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def answer(self) -> None:
                listener.requests.append(f"{self.command} {self.path}")
                self.send_error(503)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_LIST = answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_store_pointed_away_from_where_the_operator_pinned_it_fails_and_is_sent_nothing(
    reactors: Reactors, amqp: AmqpBroker, vault: Vault
) -> None:
    listener = Listener()
    try:
        config = {"address": listener.url, "mount": vault.mount, "path_prefix": vault.prefix}
        # Pinned at the real Vault, but the catalog says elsewhere (an edited event).
        await reactors.uploads.register_store("vault-moved", "vault", config)
        # No entry at all: VAULT_TOKEN is for the Vault at VAULT_ADDR, not for this one.
        await reactors.uploads.register_store("vault-rogue", "vault", config)
        reactors.use_credentials({"vault-moved": {"address": vault.addr, "token": vault.token}})
        moved = await reactors.uploads.upload("vault-moved", "team/db/password", secret_value())
        rogue = await reactors.uploads.upload("vault-rogue", "team/db/password", secret_value())
        await reactors.start("vault", vault_addr=vault.addr, vault_token=SecretStr(vault.token))
        for sent, said in [(moved, "credentials pin"), (rogue, "VAULT_ADDR")]:
            settled = await reactors.uploads.settled(sent)
            assert (settled.status, settled.reason) == ("failed", "store_misconfigured")
            assert settled.detail is not None
            assert said in settled.detail
        dead = {(await _dead_letter(amqp, "vault")).message_id for _ in range(2)}
        assert dead == {moved.event.event_id, rogue.event.event_id}
        assert listener.requests == []
    finally:
        listener.close()


async def test_adapter_failing_in_a_way_it_does_not_know_fails_the_upload_without_its_text(
    reactors: Reactors,
    amqp: AmqpBroker,
    recorder: MongoEventRecorder,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    upstreams: dict[str, Upstream],
) -> None:
    caplog.set_level(logging.DEBUG, logger="m8")

    def careless_write(_self: VaultKvStore, _path: str, data: dict[str, str], _cas: int) -> None:
        raise ValueError(f"cannot write {data}")  # a bug whose text quotes the value

    monkeypatch.setattr(VaultKvStore, "_write_sync", careless_write)
    value, path = secret_value(), "team/db/password"
    await reactors.start("vault")
    sent = await reactors.uploads.upload(VAULT_STORE, path, value)
    settled = await reactors.uploads.settled(sent)
    assert (settled.status, settled.reason) == ("failed", "upstream_refused")
    assert settled.detail == "unexpected ValueError"
    assert (await _dead_letter(amqp, "vault")).message_id == sent.event.event_id
    assert versions(upstreams["vault"], path) == 0
    events = [doc async for doc in recorder.events.find({})]
    assert value.decode() not in repr(events)
    assert all(value.decode() not in repr(vars(record)) for record in caplog.records)


@pytest.mark.parametrize("store_type", ["vault", "aws"])
async def test_upload_written_upstream_before_its_key_expired_is_recorded_as_stored(
    reactors: Reactors, store_type: str, upstreams: dict[str, Upstream]
) -> None:
    """An earlier delivery wrote the value and died before recording it; the key expired."""
    uploads, upstream = reactors.uploads, upstreams[store_type]

    async def claimed_then_expired(path: str, value: bytes) -> Sent:
        key = await uploads.issue_key(STORES[store_type], path, lifetime=timedelta(minutes=-1))
        upload_id, encrypted = uploads.encrypt(key, value)
        claimed_at = key.signed.statement.expires_at - timedelta(minutes=1)
        return await uploads.submit(key, upload_id, encrypted, claimed_at=claimed_at)

    value = secret_value()
    written = await claimed_then_expired("team/db/password", value)
    elsewhere = await claimed_then_expired("team/api/key", secret_value())
    value_fingerprint = fingerprint(value, reactors.keys.fingerprint_key)
    adapter = upstream.store()
    try:
        await adapter.put("team/db/password", value, written.upload_id, value_fingerprint)
        # Here another upload's version is current: nothing says this one was written.
        await adapter.put("team/api/key", secret_value(), new_upload_id(), value_fingerprint)
    finally:
        await adapter.close()

    await reactors.start(store_type)
    settled = await uploads.settled(written)
    assert (settled.status, settled.fingerprint) == ("stored", value_fingerprint)
    assert upstream.version_count("team/db/password") == 1
    assert upstream.value("team/db/password") == value
    refused = await uploads.settled(elsewhere)
    assert (refused.status, refused.reason) == ("rejected", "key_expired")


# --- a reactor killed between its upstream write and its ack -------------------------

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer"}
    | {"upgrade", "host", "content-length", "content-encoding", "accept-encoding"}
)


class SwallowingProxy:
    """An HTTP proxy that passes the first upstream write on and never answers it.

    The writer then hangs with its value stored upstream and nothing recorded: the moment
    to kill it. Every other request, before and after, is passed on and answered.
    """

    def __init__(self, target: str, is_write: Callable[[str, str, Mapping[str, str]], bool]):
        self.target = target
        self.is_write = is_write
        self.written = threading.Event()
        self.release = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                answer = httpx.request(
                    self.command, proxy.target + self.path, headers=headers, content=body
                )
                lowered = {k.lower(): v for k, v in self.headers.items()}
                if not proxy.written.is_set() and proxy.is_write(self.command, self.path, lowered):
                    proxy.written.set()
                    proxy.release.wait()
                    self.close_connection = True
                    return
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_LIST = forward

        return Handler


def _is_vault_data_write(method: str, path: str, _headers: Mapping[str, str]) -> bool:
    return method == "POST" and "/data/" in path


def _is_aws_value_write(_method: str, _path: str, headers: Mapping[str, str]) -> bool:
    target = headers.get("x-amz-target") or ""
    return target.endswith((".CreateSecret", ".PutSecretValue"))


@pytest.mark.parametrize("store_type", ["vault", "aws"])
async def test_reactor_killed_after_its_upstream_write_leaves_one_upstream_version(
    reactors: Reactors,
    vault: Vault,
    aws: Aws,
    state_dir: Path,
    store_type: str,
    upstreams: dict[str, Upstream],
) -> None:
    if store_type == "vault":
        proxy = SwallowingProxy(vault.addr, _is_vault_data_write)
        config = {"address": proxy.url, "mount": vault.mount, "path_prefix": vault.prefix}
    else:
        proxy = SwallowingProxy(aws.endpoint_url, _is_aws_value_write)
        config = {"region": aws.region, "name_prefix": aws.prefix, "endpoint_url": proxy.url}
    store = f"{store_type}-proxied"
    if store_type == "vault":
        reactors.use_credentials({store: {"address": proxy.url, "token": vault.token}})
    else:
        reactors.use_credentials({store: {"region": aws.region, "endpoint_url": proxy.url}})
    await reactors.uploads.register_store(store, store_type, config)
    log = state_dir / "reactor.log"
    with log.open("wb") as output:
        doomed = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "m8.reactors.cli",
            store_type,
            env={**reactors.environment(), "M8_REACTOR_UPSTREAM_TIMEOUT": "120"},
            stdout=output,
            stderr=output,
        )
    try:
        value = secret_value()
        sent = await reactors.uploads.upload(store, "team/db/password", value)
        written = await asyncio.to_thread(proxy.written.wait, 60)
        assert written, f"the reactor never wrote upstream; its log:\n{log.read_text()}"
        doomed.send_signal(signal.SIGKILL)
        await doomed.wait()
        assert (await reactors.uploads.state(sent)).status == "pending"

        await reactors.start(store_type)
        settled = await reactors.uploads.settled(sent)
        assert settled.status == "stored"
        upstream = upstreams[store_type]
        assert upstream.version_count("team/db/password") == 1
        assert upstream.value("team/db/password") == value
        assert [e.event_type for e in await reactors.uploads.outcomes(sent)] == ["SecretStored"]
        assert value.decode() not in log.read_text()
    finally:
        if doomed.returncode is None:
            doomed.kill()
            await doomed.wait()
        proxy.close()
