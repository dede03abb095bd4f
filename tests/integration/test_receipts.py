"""Reactors sign every outcome they record; the API shows the receipt and the receipt keys.

A reactor signs (upload id, store, path, status, upstream version, fingerprint, ciphertext
SHA-256) with its receipt key and registers the key's public half in `receipt_keys` at
start. m8ctl checks the receipt of GET /v1/uploads/{id} against the keys of
GET /v1/keys/receipts it pinned, and the receipt's ciphertext hash against that of what it
sent, so an API that invents "stored" or a fingerprint, or swaps the ciphertext, is
caught. Real servers throughout: the reactors run in this process on the test's vhost and
database, the API beside them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sys
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
from hvac.exceptions import InvalidPath

from m8.api.handlers import UploadCommand
from m8.crypto import (
    BadSignature,
    OutcomeReceipt,
    ReceiptKeyFile,
    ReceiptSigningKey,
    decode_verify_key,
    verify_key_fingerprint,
    verify_receipt,
    write_receipt_key_file,
)
from m8.devservices import Services
from m8.eventstore import MongoEventRecorder
from m8.messaging import Broker as AmqpBroker
from m8.runtime import ConfigurationError
from tests.integration.test_upstream_adapters import VaultUpstream
from tests.servers import Broker, Vault
from tests.support.api import RunningApi, api_settings, running_api
from tests.support.events import eventually
from tests.support.uploads import (
    IssuedKey,
    ReactorKeys,
    Reactors,
    Sent,
    Uploads,
    declare_reactor_queues,
    secret_value,
    tamper,
)

VAULT_STORE = "vault-main"


@dataclass
class System:
    """Reactors (not started yet) and the API on one vhost and database."""

    reactors: Reactors
    api: RunningApi

    @property
    def uploads(self) -> Uploads:
        return self.reactors.uploads

    async def upload_view(self, sent: Sent | str, status: str) -> dict[str, Any]:
        """GET /v1/uploads/{id} once the read model shows `status`."""
        answer: dict[str, Any] = {}
        upload_id = sent if isinstance(sent, str) else sent.upload_id

        async def shown() -> bool:
            nonlocal answer
            response = await self.api.call("GET", f"/v1/uploads/{upload_id}")
            answer = response.json()
            return response.status_code == 200 and answer["status"] == status

        await eventually(shown, timeout=60)
        return answer

    async def receipt_keys(self) -> dict[str, Any]:
        """GET /v1/keys/receipts as a user (any authenticated caller may ask)."""
        response = await self.api.call("GET", "/v1/keys/receipts", who="bob")
        assert response.status_code == 200, response.text
        return {key["receipt_key_id"]: key for key in response.json()["keys"]}


@pytest.fixture
async def system(
    recorder: MongoEventRecorder,
    amqp: AmqpBroker,
    broker: Broker,
    services: Services,
    mongo_db_name: str,
    vault: Vault,
    state_dir: Path,
) -> AsyncIterator[System]:
    await declare_reactor_queues(amqp)
    keys = ReactorKeys.create(state_dir)
    uploads = await Uploads.create(recorder, keys, state_dir)
    config = {"address": vault.addr, "mount": vault.mount, "path_prefix": vault.prefix}
    await uploads.register_store(VAULT_STORE, "vault", config)
    reactors = Reactors.create(uploads, keys, broker, services["mongodb"].url, mongo_db_name)
    reactors.use_credentials({VAULT_STORE: {**config, "token": vault.token}})
    settings = api_settings(broker, services, mongo_db_name, state_dir)
    try:
        async with running_api(settings) as api:
            yield System(reactors, api)
    finally:
        await reactors.stop()


def checked(view: dict[str, Any], listed: dict[str, Any]) -> OutcomeReceipt:
    """What m8ctl does: the view's outcome, verified against the listed receipt keys."""
    receipt = OutcomeReceipt(
        upload_id=view["upload_id"],
        store=view["store"],
        path=view["path"],
        status=view["status"],
        upstream_version=view["upstream_version"],
        fingerprint=view["fingerprint"],
        ciphertext_sha256=view["ciphertext_sha256"],
    )
    pinned = {key_id: decode_verify_key(key["verify_key"]) for key_id, key in listed.items()}
    signature = base64.b64decode(view["receipt"]["signature"])
    verify_receipt(receipt, view["receipt"]["receipt_key_id"], signature, pinned)
    return receipt


async def test_a_stored_upload_carries_a_receipt_that_verifies_against_the_listed_receipt_key(
    system: System,
) -> None:
    await system.reactors.start("vault")
    sent = await system.uploads.upload(VAULT_STORE, "team/db/password", secret_value())
    assert (await system.uploads.settled(sent)).status == "stored"

    view = await system.upload_view(sent, "stored")
    listed = await system.receipt_keys()

    own = system.reactors.keys.receipt_key
    assert listed == {
        "receipt-1": {
            "receipt_key_id": "receipt-1",
            "verify_key": base64.b64encode(bytes(own.verify_key)).decode(),
            "fingerprint": verify_key_fingerprint(own.verify_key),
            "endorsed_by": None,
            "endorsement": None,
        }
    }
    assert view["receipt"]["receipt_key_id"] == "receipt-1"
    receipt = checked(view, listed)
    assert receipt.fingerprint is not None
    assert receipt.fingerprint.startswith("fp1:")
    # The event itself carries the receipt the read model shows.
    [event] = await system.uploads.outcomes(sent)
    assert event.data["receipt_key_id"] == "receipt-1"
    assert event.data["receipt_signature"] == view["receipt"]["signature"]
    # The receipt binds the ciphertext m8ctl sent.
    sent_sha256 = hashlib.sha256(base64.b64decode(sent.request.ciphertext or "")).hexdigest()
    assert receipt.ciphertext_sha256 == view["ciphertext_sha256"] == sent_sha256
    # An API that shows another fingerprint or version under this receipt is caught.
    for lie in ({"fingerprint": "fp1:" + "0" * 43}, {"upstream_version": "99"}):
        with pytest.raises(BadSignature):
            checked({**view, **lie}, listed)


async def test_a_receipt_over_another_ciphertext_hash_does_not_verify(system: System) -> None:
    await system.reactors.start("vault")
    sent = await system.uploads.upload(VAULT_STORE, "team/db/password", secret_value())
    view = await system.upload_view(sent, "stored")
    listed = await system.receipt_keys()
    checked(view, listed)

    # The outcome of a ciphertext the API swapped in, shown as that of the one m8ctl sent.
    other = hashlib.sha256(b"a ciphertext m8ctl never sent").hexdigest()
    with pytest.raises(BadSignature):
        checked({**view, "ciphertext_sha256": other}, listed)


@dataclass(frozen=True)
class SwappedUpload(UploadCommand):
    """A compromised API's command: its own ciphertext, under the hash of m8ctl's."""

    sent_sha256: str

    @property
    def ciphertext_sha256(self) -> str:
        return self.sent_sha256


async def record_swapped_request(
    system: System, key: IssuedKey, upload_id: str, sent_sha256: str
) -> None:
    """A compromised API records its own ciphertext under the hash of the one m8ctl sent,
    so that the reactor's receipt would name m8ctl's hash (the API's own command code,
    fed that hash)."""
    uploads = system.uploads
    _, ours = uploads.encrypt(key, b"the API's value", upload_id=upload_id)
    honest = uploads.command(key, upload_id, ours)
    await uploads.request(SwappedUpload(**asdict(honest), sent_sha256=sent_sha256))


async def test_a_ciphertext_other_than_the_one_its_recorded_hash_names_is_rejected_unwritten(
    system: System, vault: Vault
) -> None:
    uploads = system.uploads
    path = "team/swapped"
    key = await uploads.issue_key(VAULT_STORE, path)
    upload_id, sent = uploads.encrypt(key, secret_value())
    sent_sha256 = hashlib.sha256(sent.ciphertext).hexdigest()
    await record_swapped_request(system, key, upload_id, sent_sha256)
    await system.reactors.start("vault")

    view = await system.upload_view(upload_id, "rejected")

    assert view["reason"] == "binding_mismatch"
    # The API's value never went upstream; m8ctl's hash is in a "rejected" receipt only.
    with pytest.raises(InvalidPath):
        VaultUpstream(vault).value(path)
    receipt = checked(view, await system.receipt_keys())
    assert (receipt.status, receipt.ciphertext_sha256) == ("rejected", sent_sha256)


async def test_rejected_and_failed_outcomes_are_signed_by_the_reactor_too(
    system: System, vault: Vault
) -> None:
    uploads = system.uploads
    key = await uploads.issue_key(VAULT_STORE, "team/tampered")
    upload_id, encrypted = uploads.encrypt(key, secret_value())
    rejected = await uploads.submit(key, upload_id, tamper(encrypted))
    # No credentials for this store: it fails at once (store_misconfigured), no retries.
    config = {"address": "http://127.0.0.1:9", "mount": vault.mount, "path_prefix": "x/"}
    await uploads.register_store("vault-nocreds", "vault", config)
    failed = await uploads.upload("vault-nocreds", "team/failed", secret_value())
    await system.reactors.start("vault")

    listed = await system.receipt_keys()
    for sent, status in ((rejected, "rejected"), (failed, "failed")):
        view = await system.upload_view(sent, status)
        receipt = checked(view, listed)
        assert (receipt.status, receipt.upstream_version, receipt.fingerprint) == (
            status,
            None,
            None,
        )
        # Shown as stored instead, the same receipt does not verify.
        stored = {**view, "status": "stored"}
        with pytest.raises(BadSignature):
            checked(stored, listed)


async def test_reactors_of_two_store_types_sharing_a_receipt_key_register_it_once(
    system: System, recorder: MongoEventRecorder
) -> None:
    await system.reactors.start("vault")
    await system.reactors.start("aws")

    [doc] = await recorder.db["receipt_keys"].find({}).to_list()
    assert doc["_id"] == "receipt-1"
    assert sorted(doc["store_types"]) == ["aws", "vault"]
    assert list(await system.receipt_keys()) == ["receipt-1"]


async def test_a_reactor_with_another_key_under_a_registered_id_refuses_to_start(
    system: System, recorder: MongoEventRecorder, state_dir: Path
) -> None:
    await system.reactors.start("vault")
    impostor = ReceiptSigningKey.generate("receipt-1")
    path = write_receipt_key_file(state_dir / "impostor.json", ReceiptKeyFile(impostor))

    with pytest.raises(ConfigurationError, match="registered with another verify key"):
        await system.reactors.start("aws", reactor_receipt_key_file=path)

    [doc] = await recorder.db["receipt_keys"].find({}).to_list()
    own = system.reactors.keys.receipt_key
    assert doc["verify_key"] == base64.b64encode(bytes(own.verify_key)).decode()
    assert doc["store_types"] == ["vault"]
    listed = await system.receipt_keys()
    assert listed["receipt-1"]["fingerprint"] == verify_key_fingerprint(own.verify_key)


async def test_a_rotated_receipt_key_is_listed_with_its_endorsement_beside_the_old_one(
    system: System, state_dir: Path
) -> None:
    await system.reactors.start("vault")
    successor = ReceiptKeyFile.successor(
        ReceiptSigningKey.generate("receipt-2"), system.reactors.keys.receipt_key
    )
    path = write_receipt_key_file(state_dir / "receipt-2.json", successor)
    await system.reactors.start("aws", reactor_receipt_key_file=path)

    listed = await system.receipt_keys()

    assert list(listed) == ["receipt-1", "receipt-2"]
    assert successor.endorsement is not None
    assert listed["receipt-2"]["endorsed_by"] == "receipt-1"
    assert listed["receipt-2"]["endorsement"] == base64.b64encode(successor.endorsement).decode()


async def test_a_reactor_process_without_a_receipt_key_exits_saying_how_to_make_one(
    system: System,
) -> None:
    env = system.reactors.environment("vault")
    del env["M8_REACTOR_RECEIPT_KEY_FILE"]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "m8.reactors.cli",
        "vault",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:  # it started after all
            process.kill()
            await process.wait()

    assert process.returncode == 2
    assert "M8_REACTOR_RECEIPT_KEY_FILE is not set" in stderr.decode()
    assert "m8 keys generate-receipt-key" in stderr.decode()


async def test_receipt_keys_are_listed_to_callers_with_a_role_only(system: System) -> None:
    await system.reactors.start("vault")

    anonymous = await system.api.client.get("/v1/keys/receipts")
    without_role = await system.api.call("GET", "/v1/keys/receipts", who="nobody")

    assert anonymous.status_code == 401
    assert without_role.status_code == 403
    assert list(await system.receipt_keys()) == ["receipt-1"]
