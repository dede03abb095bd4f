"""The reactors on real servers: uploads end upstream once, or are refused with a reason.

Uploads are made by the rotator's and the API's own handlers and m8ctl's envelope code
(tests/support/uploads.py); what lands upstream is read directly with hvac and boto3.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import hvac
import pytest
from botocore.exceptions import ClientError
from hvac.exceptions import InvalidPath
from prometheus_client import generate_latest
from pydantic import SecretStr

from m8 import stores
from m8.crypto import fingerprint, new_upload_id
from m8.devservices import Services
from m8.domain.events import SecretUploadRequested
from m8.eventsourcing import StoredEvent
from m8.eventstore import MongoEventRecorder
from m8.messaging import Broker as AmqpBroker
from m8.messaging.topology import reactor_queue
from m8.stores.adapters.vault import VaultKvStore
from tests.integration.test_upstream_adapters import AwsUpstream, Upstream, VaultUpstream
from tests.servers import Aws, Broker, Vault
from tests.support.api import api_settings, running_api
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
# One store of every store type: the tests over stores.names() upload to it.
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
    uploads = await Uploads.create(recorder, keys, state_dir)
    await uploads.register_store(VAULT_STORE, "vault", vault_config(vault))
    await uploads.register_store(AWS_STORE, "aws", aws_config(aws))
    running = Reactors.create(uploads, keys, broker, services["mongodb"].url, mongo_db_name)
    running.use_credentials(
        {
            VAULT_STORE: {**vault_config(vault), "token": vault.token},
            AWS_STORE: aws_config(aws),
        }
    )
    yield running
    await running.stop()


def vault_config(vault: Vault, **changes: Any) -> dict[str, Any]:
    """A Vault store's config, in the catalog and (with a login) pinned in credentials."""
    return {"address": vault.addr, "mount": vault.mount, "path_prefix": vault.prefix, **changes}


def aws_config(aws: Aws, **changes: Any) -> dict[str, Any]:
    """An AWS store's config, in the catalog and pinned in credentials."""
    return {
        "region": aws.region,
        "name_prefix": aws.prefix,
        "endpoint_url": aws.endpoint_url,
        **changes,
    }


@pytest.fixture
def upstreams(vault: Vault, aws: Aws) -> dict[str, Upstream]:
    """The test's stores, read directly."""
    return {"vault": VaultUpstream(vault), "aws": AwsUpstream(aws)}


def versions(upstream: Upstream, path: str) -> int:
    """How many versions the store holds at `path` (0 when there is no secret)."""
    try:
        if isinstance(upstream, AwsUpstream):
            # moto answers ListSecretVersionIds of a missing secret with a 500.
            upstream.sm.describe_secret(SecretId=upstream.aws.prefix + path)
        return upstream.version_count(path)
    except InvalidPath:
        return 0
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return 0
        raise


def uploads_counted(
    reactors: Reactors, store_type: str, store: str, outcome: str, reason: str = ""
) -> float:
    """The uploads that the reactors started in this test counted so, all together."""
    labels = {"store_type": store_type, "store": store, "outcome": outcome, "reason": reason}
    return sum(
        reactor.metrics.registry.get_sample_value("m8_reactor_uploads_total", labels) or 0.0
        for reactor in reactors.started
    )


async def test_upload_to_each_store_is_readable_upstream_with_one_fingerprint_for_one_value(
    reactors: Reactors,
    recorder: MongoEventRecorder,
    caplog: pytest.LogCaptureFixture,
    upstreams: dict[str, Upstream],
) -> None:
    caplog.set_level(logging.DEBUG, logger="m8")
    value, path = secret_value(), "team/db/password"
    for store_type in stores.names():
        await reactors.start(store_type)
    sent = {
        store_type: await reactors.uploads.upload(STORES[store_type], path, value)
        for store_type in stores.names()
    }
    for store_type, upload in sent.items():
        settled = await reactors.uploads.settled(upload)
        assert settled.status == "stored", settled
        upstream = upstreams[store_type]
        assert upstream.value(path) == value
        assert upstream.version_count(path) == 1
        # Sealed upstream: the store's readers cannot compare it; the reactors can open it.
        marks = upstream.marks(path)
        assert settled.fingerprint is not None
        assert settled.fingerprint not in str(marks.fingerprint)
        assert marks.opened(reactors.keys.fingerprint_key).fingerprint == settled.fingerprint
        assert marks.upload_id == upload.upload_id
    fingerprints = {(await reactors.uploads.state(u)).fingerprint for u in sent.values()}
    assert fingerprints == {fingerprint(value, reactors.keys.fingerprint_key)}

    # The value is nowhere but upstream: not in events, log records or metrics.
    events = [doc async for doc in recorder.events.find({})]
    assert value.decode() not in repr(events)
    assert all(value.decode() not in repr(vars(record)) for record in caplog.records)
    metrics = [
        line
        for reactor in reactors.started
        for line in generate_latest(reactor.metrics.registry).decode().splitlines()
        if "m8_reactor" in line
    ]
    assert metrics
    assert not any(value.decode() in line or path in line for line in metrics)


@pytest.mark.parametrize("store_type", stores.names())
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


async def test_request_redelivered_after_it_was_stored_changes_nothing(
    reactors: Reactors, amqp: AmqpBroker, upstreams: dict[str, Upstream]
) -> None:
    path = "team/api/key"
    await reactors.start("vault")
    sent = await reactors.uploads.upload(VAULT_STORE, path, secret_value())
    assert (await reactors.uploads.settled(sent)).status == "stored"
    before = uploads_counted(reactors, "vault", VAULT_STORE, "duplicate")
    await amqp.publish_event(sent.event)

    async def seen_as_duplicate() -> bool:
        return uploads_counted(reactors, "vault", VAULT_STORE, "duplicate") > before

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
    reused = await uploads.append_unclaimed(key, upload_id, encrypted)

    # Claimed in time, handled after its key expired.
    expired = await uploads.upload_expired_after_its_claim(VAULT_STORE, "expired", secret_value())

    # The rotator destroyed the key before the reactor got to its upload.
    destroyed = await uploads.upload(VAULT_STORE, "destroyed", secret_value())
    assert await uploads.rotator.destroy(destroyed.request.key_id, "rejected", METADATA)
    # MongoDB's TTL index (the rotator's backstop) removed the sealed key while no rotator
    # ran, so no destruction is recorded yet: the test stands in for the database itself.
    gone = await uploads.upload(VAULT_STORE, "gone", secret_value())
    await recorder.db["upload_keys"].delete_one({"_id": gone.request.key_id})

    await uploads.register_store(
        "vault-off", "vault", vault_config(vault, path_prefix=vault.prefix + "off/")
    )
    inactive = await uploads.upload("vault-off", "inactive", secret_value())
    await uploads.deactivate_store("vault-off")

    await reactors.start("vault")
    expected: list[tuple[Sent, str, str]] = [
        (tampered, "bad_mac", "does not decrypt"),
        (swapped, "binding_mismatch", "path"),
        (reused, "key_used", "another upload"),
        (expired, "key_expired", "expired"),
        (destroyed, "key_destroyed", "destroyed"),
        (gone, "key_destroyed", "gone"),
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


@pytest.mark.parametrize("restart", [False, True], ids=["steady", "reactors-restarted"])
async def test_racing_uploads_to_a_few_paths_leave_the_latest_stored_value_upstream(
    restart: bool, reactors: Reactors, amqp: AmqpBroker, upstreams: dict[str, Upstream]
) -> None:
    paths = [f"team/race{n}/token" for n in range(3)]
    sent = []  # (path, value, upload), in the order the uploads were accepted
    for _ in range(6):
        for path in paths:
            value = secret_value()
            sent.append((path, value, await reactors.uploads.upload(VAULT_STORE, path, value)))
    # All queued at once, each twice; two reactors compete for them.
    await asyncio.gather(*(amqp.publish_event(upload.event) for _, _, upload in sent))
    await reactors.start("vault", reactor_concurrency=4)
    await reactors.start("vault", reactor_concurrency=4)
    if restart:
        # Both stop once some uploads settled (finishing what they have in hand), and two
        # new ones take over the rest, and the paths' leases the first ones took.
        async def some_settled() -> bool:
            states = [await reactors.uploads.state(upload) for *_, upload in sent]
            return sum(state.status != "pending" for state in states) >= 4

        await eventually(some_settled, timeout=120)
        await reactors.stop_reactors()
        await reactors.start("vault", reactor_concurrency=4)
        await reactors.start("vault", reactor_concurrency=4)

    status = {
        upload.upload_id: (await reactors.uploads.settled(upload, timeout=120)).status
        for _, _, upload in sent
    }

    assert set(status.values()) <= {"stored", "superseded"}
    vault = upstreams["vault"]
    for path in paths:
        mine = [(value, upload) for p, value, upload in sent if p == path]
        stored = [value for value, upload in mine if status[upload.upload_id] == "stored"]
        assert status[mine[-1][1].upload_id] == "stored"  # nothing newer could supersede it
        assert vault.value(path) == stored[-1]  # never an older value over a newer one
        assert vault.version_count(path) == len(stored)  # each stored upload written once


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
        # Pinned at the real Vault, but the catalog says elsewhere (an edited event).
        await reactors.uploads.register_store(
            "vault-moved", "vault", vault_config(vault, address=listener.url)
        )
        reactors.use_credentials({"vault-moved": {**vault_config(vault), "token": vault.token}})
        moved = await reactors.uploads.upload("vault-moved", "team/db/password", secret_value())
        await reactors.start("vault")
        settled = await reactors.uploads.settled(moved)
        assert (settled.status, settled.reason) == ("failed", "store_misconfigured")
        assert settled.detail is not None
        assert "another address" in settled.detail
        assert listener.url not in settled.detail
        assert (await _dead_letter(amqp, "vault")).message_id == moved.event.event_id
        assert listener.requests == []
    finally:
        listener.close()


@pytest.fixture
def other_mount(vault: Vault) -> Iterator[str]:
    """A second KV v2 mount on the test's OpenBao, where the reactor's token may write."""
    root = hvac.Client(url=vault.addr, token=vault.token)
    name = "m8-other-" + uuid.uuid4().hex[:8]
    root.sys.enable_secrets_engine("kv", path=name, options={"version": "2"})
    yield name
    root.sys.disable_secrets_engine(name)


@pytest.mark.parametrize(
    "change", ["wider path_prefix", "another mount", "wider name_prefix", "foreign kms_key_id"]
)
async def test_catalog_entry_that_differs_from_the_pinned_store_fails_and_writes_nothing(
    reactors: Reactors,
    amqp: AmqpBroker,
    vault: Vault,
    aws: Aws,
    other_mount: str,
    change: str,
) -> None:
    """Whoever writes the catalog (a MongoDB writer appending StoreRegistered) chooses no
    prefix, mount or KMS key of their own: the store fails and nothing goes upstream."""
    field, path = change.split()[1], "team/db/password"
    store = f"forged-{field.replace('_', '-')}"
    # `where` reads the store at the place the catalog names, as a reader of it would.
    where: Upstream
    entry: dict[str, Any]
    if field in ("path_prefix", "mount"):
        store_type = "vault"
        pinned = vault_config(vault, path_prefix=vault.prefix + "narrow/")
        wider = {"path_prefix": vault.prefix} if field == "path_prefix" else {"mount": other_mount}
        catalog = {**pinned, **wider}
        where = VaultUpstream(
            Vault(vault.addr, vault.token, catalog["mount"], catalog["path_prefix"])
        )
        entry = {**pinned, "token": vault.token}
    elif field == "name_prefix":
        store_type = "aws"
        entry = aws_config(aws, name_prefix=aws.prefix + "narrow/")
        catalog = {**entry, "name_prefix": aws.prefix}
        where = AwsUpstream(aws)
    else:
        store_type = "aws"
        entry = aws_config(aws)  # no kms_key_id: AWS's own key, and no other
        catalog = {**entry, "kms_key_id": f"arn:aws:kms:{aws.region}:999999999999:key/x"}
        where = AwsUpstream(aws)
    reactors.use_credentials({store: entry})
    await reactors.uploads.register_store(store, store_type, catalog)
    sent = await reactors.uploads.upload(store, path, secret_value())
    await reactors.start(store_type)
    settled = await reactors.uploads.settled(sent)
    assert (settled.status, settled.reason) == ("failed", "store_misconfigured")
    assert settled.detail is not None
    assert f"another {field}" in settled.detail
    assert "999999999999" not in settled.detail
    assert (await _dead_letter(amqp, store_type)).message_id == sent.event.event_id
    assert versions(where, path) == 0


@pytest.mark.parametrize("store_type", stores.names())
async def test_store_without_a_credentials_entry_is_refused_even_where_the_shell_points(
    reactors: Reactors,
    amqp: AmqpBroker,
    vault: Vault,
    aws: Aws,
    store_type: str,
    upstreams: dict[str, Upstream],
) -> None:
    """No entry, no service: not with the reactor's own identity, nor VAULT_ADDR's token."""
    config = {"vault": vault_config(vault), "aws": aws_config(aws)}[store_type]
    await reactors.uploads.register_store("unpinned", store_type, config)
    sent = await reactors.uploads.upload("unpinned", "team/db/password", secret_value())
    shell = {"vault_addr": vault.addr, "vault_token": SecretStr(vault.token)}
    await reactors.start(store_type, **shell, aws_endpoint_url=aws.endpoint_url)
    settled = await reactors.uploads.settled(sent)
    assert (settled.status, settled.reason) == ("failed", "store_misconfigured")
    assert settled.detail is not None
    assert "serves only the stores it was given" in settled.detail
    assert (await _dead_letter(amqp, store_type)).message_id == sent.event.event_id
    assert versions(upstreams[store_type], "team/db/password") == 0


async def test_development_setting_serves_a_store_without_an_entry_where_the_shell_points(
    reactors: Reactors, aws: Aws, upstreams: dict[str, Upstream]
) -> None:
    await reactors.uploads.register_store("unpinned", "aws", aws_config(aws))
    value = secret_value()
    sent = await reactors.uploads.upload("unpinned", "team/db/password", value)
    await reactors.start("aws", reactor_dev_unpinned_stores=True, aws_endpoint_url=aws.endpoint_url)
    assert (await reactors.uploads.settled(sent)).status == "stored"
    assert upstreams["aws"].value("team/db/password") == value


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


@pytest.mark.parametrize("store_type", stores.names())
async def test_upload_written_upstream_before_its_key_expired_is_recorded_as_stored(
    reactors: Reactors, store_type: str, upstreams: dict[str, Upstream]
) -> None:
    """An earlier delivery wrote the value and died before recording it; the key expired."""
    uploads, upstream = reactors.uploads, upstreams[store_type]

    store, value = STORES[store_type], secret_value()
    written = await uploads.upload_expired_after_its_claim(store, "team/db/password", value)
    elsewhere = await uploads.upload_expired_after_its_claim(store, "team/api/key", secret_value())
    value_fingerprint = fingerprint(value, reactors.keys.fingerprint_key)
    adapter = upstream.store(key=reactors.keys.fingerprint_key)
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
    to kill it. Every other request, before and after, is passed on and answered. With
    `refusal` (status, headers, body), every write is answered so instead, and not passed.
    """

    def __init__(
        self,
        target: str,
        is_write: Callable[[str, str, Mapping[str, str], bytes], bool],
        refusal: tuple[int, dict[str, str], bytes] | None = None,
    ):
        self.target = target
        self.is_write = is_write
        self.refusal = refusal
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
                lowered = {k.lower(): v for k, v in self.headers.items()}
                if proxy.refusal and proxy.is_write(self.command, self.path, lowered, body):
                    status, refusal_headers, content = proxy.refusal
                    self.send_response(status)
                    for name, value in refusal_headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                    return
                answer = httpx.request(
                    self.command, proxy.target + self.path, headers=headers, content=body
                )
                written = proxy.is_write(self.command, self.path, lowered, body)
                if not proxy.written.is_set() and written:
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


def _is_vault_data_write(method: str, path: str, _headers: Mapping[str, str], _body: bytes) -> bool:
    return method == "POST" and "/data/" in path


def _is_vault_record(method: str, path: str, _headers: Mapping[str, str], body: bytes) -> bool:
    """The last request of a Vault put: the ledger entry with the (marked) fingerprint."""
    return method == "PATCH" and "/metadata/" in path and b'"m8_upload:' in body


def _is_aws_value_write(_method: str, _path: str, headers: Mapping[str, str], _body: bytes) -> bool:
    target = headers.get("x-amz-target") or ""
    return target.endswith((".CreateSecret", ".PutSecretValue"))


@dataclass(frozen=True)
class Killed:
    """An upload whose reactor was killed after its upstream write, before it recorded."""

    sent: Sent
    value: bytes
    log: Path


@contextlib.asynccontextmanager
async def killed_after_write(
    reactors: Reactors,
    store_type: str,
    is_write: Callable[[str, str, Mapping[str, str], bytes], bool],
    vault: Vault,
    aws: Aws,
    state_dir: Path,
) -> AsyncIterator[Killed]:
    """A reactor process writes an upload through a proxy that swallows the `is_write`
    request's answer, and is killed there; the proxy stays (and answers) until the end."""
    if store_type == "vault":
        proxy = SwallowingProxy(vault.addr, is_write)
        config = vault_config(vault, address=proxy.url)
        entry = {**config, "token": vault.token}
    else:
        proxy = SwallowingProxy(aws.endpoint_url, is_write)
        config = entry = aws_config(aws, endpoint_url=proxy.url)
    store = f"{store_type}-proxied"
    reactors.use_credentials({store: entry})
    await reactors.uploads.register_store(store, store_type, config)
    log = state_dir / "reactor.log"
    with log.open("wb") as output:
        doomed = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "m8.reactors.cli",
            store_type,
            env={**reactors.environment(store_type), "M8_REACTOR_UPSTREAM_TIMEOUT": "120"},
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
        # The dead reactor's lease on the path runs out before anyone may write it again.
        await reactors.uploads.expire_path_leases()
        yield Killed(sent, value, log)
    finally:
        if doomed.returncode is None:
            doomed.kill()
            await doomed.wait()
        proxy.close()


@pytest.mark.parametrize("store_type", stores.names())
async def test_reactor_killed_after_its_upstream_write_leaves_one_upstream_version(
    reactors: Reactors,
    vault: Vault,
    aws: Aws,
    state_dir: Path,
    store_type: str,
    upstreams: dict[str, Upstream],
) -> None:
    is_write = {"vault": _is_vault_data_write, "aws": _is_aws_value_write}[store_type]
    async with killed_after_write(reactors, store_type, is_write, vault, aws, state_dir) as killed:
        await reactors.start(store_type)
        settled = await reactors.uploads.settled(killed.sent)
        assert settled.status == "stored"
        upstream = upstreams[store_type]
        assert upstream.version_count("team/db/password") == 1
        assert upstream.value("team/db/password") == killed.value
        outcomes = await reactors.uploads.outcomes(killed.sent)
        assert [e.event_type for e in outcomes] == ["SecretStored"]
        assert killed.value.decode() not in killed.log.read_text()


@pytest.mark.parametrize("store_type", stores.names())
async def test_upload_whose_ack_was_lost_is_recovered_from_a_sealed_fingerprint_upstream(
    reactors: Reactors,
    recorder: MongoEventRecorder,
    vault: Vault,
    aws: Aws,
    state_dir: Path,
    store_type: str,
    upstreams: dict[str, Upstream],
) -> None:
    """Upstream readers see no fingerprint they could compare, yet a reactor that finds the
    key gone after a lost ack still records SecretStored with the right fingerprint."""
    # The last request of a put: after it, everything is upstream and nothing recorded.
    is_write = {"vault": _is_vault_record, "aws": _is_aws_value_write}[store_type]
    async with killed_after_write(reactors, store_type, is_write, vault, aws, state_dir) as killed:
        value_fingerprint = fingerprint(killed.value, reactors.keys.fingerprint_key)
        marks = upstreams[store_type].marks("team/db/password")
        assert marks.upload_id == killed.sent.upload_id
        assert marks.fingerprint is not None
        assert value_fingerprint[4:] not in marks.fingerprint
        # Meanwhile the key expired and the rotator's sweep destroyed it.
        assert await reactors.uploads.expire_keys() == 1

        await reactors.start(store_type)
        settled = await reactors.uploads.settled(killed.sent)
        assert (settled.status, settled.fingerprint) == ("stored", value_fingerprint)
        assert upstreams[store_type].version_count("team/db/password") == 1
        outcomes = await reactors.uploads.outcomes(killed.sent)
        assert [e.event_type for e in outcomes] == ["SecretStored"]


ACCOUNT = "123456789012"
DENIED = (
    f"User: arn:aws:sts::{ACCOUNT}:assumed-role/m8-reactor/i-0abc is not authorized to "
    f"perform: secretsmanager:CreateSecret on resource: arn:aws:secretsmanager:us-east-1:"
    f"{ACCOUNT}:secret:m8/team/db because no identity-based policy allows it "
    "(see https://reactor:hunter2@audit.example/req/1)"
)


async def test_upstream_refusal_naming_accounts_and_roles_reaches_neither_events_nor_the_api(
    reactors: Reactors,
    recorder: MongoEventRecorder,
    broker: Broker,
    services: Services,
    mongo_db_name: str,
    aws: Aws,
    state_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """AWS's refusal text names the account, the role and more: events and GET /v1/uploads
    get m8's words and the error code, and nothing of it (the log gets what AWS said, for
    the operator, but no credentials in a URL)."""
    caplog.set_level(logging.DEBUG, logger="m8")
    body = json.dumps({"__type": "AccessDeniedException", "Message": DENIED}).encode()
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "x-amzn-ErrorType": "AccessDeniedException",
    }
    proxy = SwallowingProxy(aws.endpoint_url, _is_aws_value_write, (400, headers, body))
    try:
        config = aws_config(aws, endpoint_url=proxy.url)
        reactors.use_credentials({"aws-denied": config})
        await reactors.uploads.register_store("aws-denied", "aws", config)
        settings = api_settings(broker, services, mongo_db_name, state_dir)
        async with running_api(settings) as api:
            sent = await reactors.uploads.upload("aws-denied", "team/db/password", secret_value())
            await reactors.start("aws")
            settled = await reactors.uploads.settled(sent)
            assert (settled.status, settled.reason) == ("failed", "upstream_refused")
            assert settled.detail == "cannot create: access denied by AWS (AccessDeniedException)"

            async def shown() -> dict[str, Any]:
                answer = await api.call("GET", f"/v1/uploads/{sent.upload_id}")
                assert answer.status_code == 200, answer.text
                view: dict[str, Any] = answer.json()
                return view

            async def projected() -> bool:
                return bool((await shown())["status"] == "failed")

            await eventually(projected)
            view = await shown()
        assert view["detail"] == settled.detail
        events = repr([doc async for doc in recorder.events.find({})])
        for leak in (ACCOUNT, "arn:aws", "hunter2", "audit.example"):
            assert leak not in events
            assert leak not in repr(view)
        assert ACCOUNT in caplog.text
        assert "hunter2" not in caplog.text
    finally:
        proxy.close()
