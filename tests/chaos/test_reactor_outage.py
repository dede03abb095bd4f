"""OpenBao goes away while uploads wait: a short outage is ridden out, a long one ends in
the dead-letter queue, from which an operator's re-drive stores the upload once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import pytest

from m8.config import Settings
from m8.devservices import Services
from m8.devservices.manager import openbao_healthy, start_openbao, stop_process, wait_until
from m8.eventstore import MongoEventRecorder
from m8.messaging import Broker as AmqpBroker
from m8.messaging.topology import reactor_queue
from tests.integration.test_upstream_adapters import VaultUpstream
from tests.servers import Broker, Vault
from tests.support.uploads import (
    ReactorKeys,
    Reactors,
    Uploads,
    declare_reactor_queues,
    secret_value,
)

STORE = "vault-chaos"
OUTAGE_SECONDS = 20


@dataclass
class OwnOpenBao:
    """An OpenBao dev server of this test's own, stopped and started at will.

    Dev mode keeps everything in memory: a restart brings an empty KV v2 at secret/,
    reached at the same address with the same root token (both given again).
    """

    addr: str
    token: str
    workdir: Path
    pid: int | None

    def stop(self) -> None:
        if self.pid is not None:
            stop_process(self.pid)
            self.pid = None

    def start_again(self) -> None:
        port = urlsplit(self.addr).port
        bao = str(Path(sys.executable).parent / "bao")
        log = (self.workdir / "openbao-again.log").open("ab")
        process = subprocess.Popen(
            [bao, "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # The token by environment: never on a command line that `ps` shows.
            env={**os.environ, "BAO_DEV_ROOT_TOKEN_ID": self.token},
            start_new_session=True,
        )
        log.close()
        self.pid = process.pid
        assert wait_until(lambda: openbao_healthy(self.addr), 60), "OpenBao did not come back"


@pytest.fixture
def openbao(tmp_path: Path) -> Iterator[OwnOpenBao]:
    info = start_openbao(Settings().model_copy(update={"vault_addr": None}), tmp_path)
    own = OwnOpenBao(info.url, info.extra["token"], tmp_path, info.pid)
    yield own
    own.stop()


@pytest.fixture
async def reactors(
    recorder: MongoEventRecorder,
    amqp: AmqpBroker,
    broker: Broker,
    services: Services,
    mongo_db_name: str,
    openbao: OwnOpenBao,
    state_dir: Path,
) -> AsyncIterator[Reactors]:
    """A vault store on the test's own OpenBao; no reactor running yet."""
    await declare_reactor_queues(amqp)
    keys = ReactorKeys.create(state_dir)
    uploads = await Uploads.create(recorder, keys, state_dir)
    config = {"address": openbao.addr, "mount": "secret", "path_prefix": "m8/"}
    await uploads.register_store(STORE, "vault", config)
    running = Reactors.create(uploads, keys, broker, services["mongodb"].url, mongo_db_name)
    # The entry describes the store exactly as registered (the reactor pins it).
    running.use_credentials({STORE: {**config, "token": openbao.token}})
    yield running
    await running.stop()


@pytest.fixture
def upstream(openbao: OwnOpenBao) -> VaultUpstream:
    return VaultUpstream(Vault(openbao.addr, openbao.token, "secret", "m8/"))


async def test_uploads_during_a_20s_openbao_outage_are_stored_once_it_returns(
    reactors: Reactors, openbao: OwnOpenBao, upstream: VaultUpstream
) -> None:
    await reactors.start("vault")  # the default retry policy
    warm = await reactors.uploads.upload(STORE, "before/outage", secret_value())
    assert (await reactors.uploads.settled(warm)).status == "stored"

    openbao.stop()
    down_since = time.monotonic()
    values = {f"during/outage{n}": secret_value() for n in range(3)}
    sent = [await reactors.uploads.upload(STORE, p, v) for p, v in values.items()]
    await asyncio.sleep(OUTAGE_SECONDS - (time.monotonic() - down_since))
    assert {(await reactors.uploads.state(s)).status for s in sent} == {"pending"}
    openbao.start_again()

    for upload in sent:
        assert (await reactors.uploads.settled(upload, timeout=90)).status == "stored"
    for path, value in values.items():
        assert upstream.value(path) == value
        assert upstream.version_count(path) == 1


async def test_upload_failing_past_the_retry_budget_is_dead_lettered_and_stored_once_redriven(
    reactors: Reactors, openbao: OwnOpenBao, upstream: VaultUpstream, amqp: AmqpBroker
) -> None:
    await reactors.start("vault", reactor_retry_attempts=3, reactor_retry_backoff=0.1)
    openbao.stop()
    value = secret_value()
    sent = await reactors.uploads.upload(STORE, "team/db/password", value)
    failed = await reactors.uploads.settled(sent)
    assert (failed.status, failed.reason) == ("failed", "upstream_unavailable")
    assert failed.detail is not None
    assert "unreachable" in failed.detail

    channel = await amqp.channel()
    spec = reactor_queue("vault")
    dead_queue = await channel.get_queue(spec.dead_letter_queue)
    async with asyncio.timeout(30):
        while (dead := await dead_queue.get(fail=False)) is None:
            await asyncio.sleep(0.1)
    assert dead.message_id == sent.event.event_id
    assert value.decode() not in dead.body.decode()

    openbao.start_again()
    # What the management UI's "move messages" does: the same message, to the queue.
    await channel.default_exchange.publish(
        aio_pika.Message(
            dead.body,
            content_type=dead.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=dead.message_id,
            correlation_id=dead.correlation_id,
            type=dead.type,
            headers={k: v for k, v in dead.headers.items() if not k.startswith("x-")},
        ),
        routing_key=spec.name,
    )
    await dead.ack()

    stored = await reactors.uploads.settled(sent, statuses=frozenset({"stored", "rejected"}))
    assert stored.status == "stored"
    assert upstream.value("team/db/password") == value
    assert upstream.version_count("team/db/password") == 1
    outcomes = [e.event_type for e in await reactors.uploads.outcomes(sent)]
    assert outcomes == ["SecretStoreFailed", "SecretStored"]
