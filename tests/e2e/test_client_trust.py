"""m8ctl trusts only what it should: through m8ctl, against the running system, with a
malicious API in the middle (tests/support/mitm.py) where a test needs one.

The API must not choose the store, vouch for rotator keys or claim outcomes: m8ctl names
its own store, follows the rotator's keys only through signatures, and prints "Stored" only
with a reactor's receipt that verifies.
"""

from __future__ import annotations

import base64
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nacl.public import PrivateKey

from m8.client.profile import PinnedKey, Profile
from m8.crypto import (
    Binding,
    RotatorSigningKey,
    SignedStatement,
    UploadKeyStatement,
    encode_verify_key,
    endorse,
    format_utc,
    key_self_signature,
    seal_envelope,
    sign_statement,
    verify_key_fingerprint,
)
from m8.devservices.system import AWS_STORE, VAULT_STORE
from tests.e2e.conftest import RunningSystem
from tests.e2e.support import m8ctl
from tests.support.mitm import Mitm, mitm
from tests.support.uploads import secret_value

UPLOAD_KEYS = "/v1/upload-keys"
SECRETS = "/v1/secrets"
UPLOADS = "/v1/uploads/.+"
ROTATOR_KEYS = "/v1/keys/rotator"


@dataclass
class Client:
    """An m8ctl profile logged in through the proxy, and the proxy."""

    system: RunningSystem
    proxy: Mitm
    config: Path

    @property
    def env(self) -> dict[str, str]:
        return {**self.system.m8ctl_env(), "M8CTL_CONFIG": str(self.config)}

    def run(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
        return m8ctl(self.system, *args, stdin=stdin, env=self.env)

    def put(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("secret", "put", new_path(), *args, stdin=secret_value())

    def profile(self) -> Profile:
        return Profile.load(self.config)

    def nothing_sent(self) -> bool:
        return self.proxy.sent("POST", SECRETS) == []


@pytest.fixture
def client(system: RunningSystem, tmp_path: Path) -> Iterator[Client]:
    """m8ctl logged in through a proxy that a test may make malicious."""
    with mitm(system.system.api_url) as proxy:
        made = Client(system, proxy, tmp_path / "m8ctl.json")
        token = str(system.system.admin_token_file)
        done = made.run("login", proxy.url, "--token-file", token, "--store", VAULT_STORE)
        assert done.returncode == 0, done.stderr
        yield made


def said(text: str) -> str:
    """What m8ctl said, its lines joined: the console wraps long messages."""
    return " ".join(text.split())


def unverified(done: subprocess.CompletedProcess[str], claimed: str = "stored") -> None:
    """m8ctl refused the API's word: exit 10, and its outcome line (TSV, the default on a
    pipe) says `unverified`, never the claimed status, nor a fingerprint or version."""
    assert done.returncode == 10, done.stdout + done.stderr
    header, row = done.stdout.splitlines()
    outcome = dict(zip(header.split("\t"), row.split("\t"), strict=True))
    assert outcome["status"] == "unverified"
    assert outcome["receipt_verified"] == "false"
    assert outcome["claimed_status"] == claimed
    assert outcome["fingerprint"] == outcome["upstream_version"] == ""
    assert outcome["receipt_problem"]
    assert "unverified outcome" in said(done.stderr)


def new_path() -> str:
    return f"e2e/{uuid.uuid4().hex[:10]}/trust"


def future(days: float = 7) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def pin_of(key: RotatorSigningKey, not_after: datetime, successor: str | None = None) -> PinnedKey:
    vk = key.verify_key
    return PinnedKey(
        encode_verify_key(vk), verify_key_fingerprint(vk), format_utc(not_after), successor
    )


def statement_by(key: RotatorSigningKey, store: str, path: str) -> dict[str, Any]:
    """An upload key statement signed by `key` for a key pair the attacker holds."""
    statement = UploadKeyStatement(
        key_id=f"uk-{uuid.uuid4().hex[:8]}",
        public_key=bytes(PrivateKey.generate().public_key),
        store_id=store,
        path=path,
        expires_at=datetime.now(UTC) + timedelta(minutes=10),
        kek_id="kek-vault-dev",
    )
    return sign_statement(statement, key).to_dict()


def listed(key: RotatorSigningKey, endorser: RotatorSigningKey, not_after: datetime) -> Any:
    """`key` as GET /v1/keys/rotator lists it, self-signed and endorsed by `endorser`."""
    return {
        "signing_key_id": key.signing_key_id,
        "verify_key": encode_verify_key(key.verify_key),
        "fingerprint": verify_key_fingerprint(key.verify_key),
        "created_at": format_utc(datetime.now(UTC)),
        "not_after": format_utc(not_after),
        "self_signature": _b64(key_self_signature(key, not_after)),
        "retires_at": None,
        "endorsed_by": endorser.signing_key_id,
        "endorsement": _b64(endorse(endorser, key.signing_key_id, key.verify_key, not_after)),
    }


def forged_statement(key: RotatorSigningKey) -> Any:
    """A response rewrite: the statement the API answers with, re-made and signed by `key`."""

    def rewrite(answer: dict[str, Any]) -> dict[str, Any]:
        real = answer["statement"]
        return statement_by(key, real["store_id"], real["path"])

    return rewrite


# --- the store is the user's ---------------------------------------------------------------


def test_the_dev_profile_names_vault_dev_as_its_store(system: RunningSystem) -> None:
    assert Profile.load(system.m8ctl_config).store == VAULT_STORE


def test_a_key_for_a_store_m8ctl_did_not_ask_for_is_refused_and_nothing_is_sent(
    client: Client,
) -> None:
    asked: list[dict[str, Any]] = []

    def retarget(body: dict[str, Any]) -> dict[str, Any]:
        asked.append(body)
        return {**body, "store": AWS_STORE}

    client.proxy.on_request("POST", UPLOAD_KEYS, retarget)
    done = client.put()
    assert done.returncode == 7, done.stderr
    assert "nothing was sent" in said(done.stderr).lower()
    assert [body["store"] for body in asked] == [VAULT_STORE]  # always named, never left out
    assert client.nothing_sent()


def test_a_deactivated_profile_store_is_reported_and_no_other_store_is_tried(
    client: Client,
) -> None:
    name = f"vault-{uuid.uuid4().hex[:6]}"
    address = client.system.services["openbao"].url
    added = client.run("stores", "add", "vault", name, "--address", address, "--path-prefix", "x/")
    assert added.returncode == 0, added.stderr
    chosen = client.run("config", "set-store", name)
    assert chosen.returncode == 0, chosen.stderr
    assert client.run("stores", "deactivate", name).returncode == 0

    asked: list[dict[str, Any]] = []

    def record(body: dict[str, Any]) -> dict[str, Any]:
        asked.append(body)
        return body

    client.proxy.on_request("POST", UPLOAD_KEYS, record)
    done = client.put()
    assert done.returncode == 1, done.stderr
    assert "deactivated" in said(done.stderr)
    assert "set-store" in said(done.stderr)
    assert [body["store"] for body in asked] == [name]
    assert client.nothing_sent()


# --- rotator keys retire ----------------------------------------------------------------


def test_a_pin_past_its_not_after_is_dropped_and_its_statements_refused(client: Client) -> None:
    profile = client.profile()
    for pinned in profile.pinned.values():
        pinned.not_after = format_utc(datetime.now(UTC) - timedelta(seconds=1))
    profile.save()
    done = client.put()
    assert done.returncode == 7, done.stderr
    assert "expired" in said(done.stderr)
    assert "tell your operator" in said(done.stderr)
    assert client.nothing_sent()
    assert not client.profile().pinned  # dropped for good, though the server still shows them


def test_a_key_the_rotator_withdrew_is_refused_even_from_a_kept_seed(client: Client) -> None:
    kept = RotatorSigningKey.generate(f"rsk-kept-{uuid.uuid4().hex[:6]}")  # an attacker's copy
    profile = client.profile()
    profile.pinned[kept.signing_key_id] = pin_of(kept, future())
    profile.keys_checked_at = format_utc(datetime.now(UTC) - timedelta(minutes=11))
    profile.save()
    withdrawn = {"signing_key_id": kept.signing_key_id, "withdrawn_at": format_utc(future(-1))}
    client.proxy.on_response(
        "GET",
        ROTATOR_KEYS,
        lambda doc: {**doc, "withdrawn": [*doc.get("withdrawn", []), withdrawn]},
    )
    client.proxy.on_response("POST", UPLOAD_KEYS, forged_statement(kept))
    done = client.put()
    assert done.returncode == 7, done.stderr
    assert "withdrew" in said(done.stderr)
    assert client.nothing_sent()
    assert kept.signing_key_id in client.profile().rotator_keys.dropped


def test_a_second_successor_endorsed_by_a_pinned_key_is_refused_and_reported(
    client: Client,
) -> None:
    endorser = RotatorSigningKey.generate(f"rsk-e-{uuid.uuid4().hex[:6]}")
    first = RotatorSigningKey.generate(f"rsk-f-{uuid.uuid4().hex[:6]}")
    second = RotatorSigningKey.generate(f"rsk-s-{uuid.uuid4().hex[:6]}")
    profile = client.profile()
    profile.pinned[endorser.signing_key_id] = pin_of(
        endorser, future(), successor=first.signing_key_id
    )
    profile.pinned[first.signing_key_id] = pin_of(first, future(3))
    profile.save()
    entry = listed(second, endorser, future(3))
    client.proxy.on_response(
        "GET", ROTATOR_KEYS, lambda doc: {**doc, "keys": [*doc["keys"], entry]}
    )
    client.proxy.on_response("POST", UPLOAD_KEYS, forged_statement(second))
    done = client.put()
    assert done.returncode == 7, done.stderr
    assert "endorsed more than one successor" in said(done.stderr)
    assert "Tell your operator" in said(done.stderr)
    assert "--repin" in said(done.stderr)
    assert client.nothing_sent()
    after = client.profile()
    # The first successor goes too: the API chose which one m8ctl saw first.
    gone = {endorser.signing_key_id, first.signing_key_id, second.signing_key_id}
    assert gone <= set(after.rotator_keys.dropped)
    assert not gone & set(after.pinned)


def test_a_forged_successor_seen_first_is_dropped_once_the_second_appears(
    client: Client,
) -> None:
    stolen = RotatorSigningKey.generate(f"rsk-stolen-{uuid.uuid4().hex[:6]}")  # API holds it
    forged = RotatorSigningKey.generate(f"rsk-forged-{uuid.uuid4().hex[:6]}")
    real = RotatorSigningKey.generate(f"rsk-real-{uuid.uuid4().hex[:6]}")
    extra = [listed(forged, stolen, future(3))]
    client.proxy.on_response(
        "GET", ROTATOR_KEYS, lambda doc: {**doc, "keys": [*doc["keys"], *extra]}
    )

    def stale_pins(change: Any = None) -> None:
        profile = client.profile()
        if change:
            change(profile)
        profile.keys_checked_at = format_utc(datetime.now(UTC) - timedelta(minutes=11))
        profile.save()

    stale_pins(lambda p: p.pinned.update({stolen.signing_key_id: pin_of(stolen, future())}))
    seen_first = client.put()  # the list is read: the API's successor is followed first
    assert seen_first.returncode == 0, seen_first.stderr
    assert client.profile().pinned[stolen.signing_key_id].successor == forged.signing_key_id
    assert forged.signing_key_id in client.profile().pinned

    extra.append(listed(real, stolen, future(3)))  # the rotator's own successor shows up
    stale_pins()
    client.proxy.on_response("POST", UPLOAD_KEYS, forged_statement(forged))
    done = client.put()
    assert done.returncode == 7, done.stderr
    assert "endorsed more than one successor" in said(done.stderr)
    assert "--repin" in said(done.stderr)
    assert len(client.proxy.sent("POST", SECRETS)) == 1  # only the first put's
    gone = {stolen.signing_key_id, forged.signing_key_id, real.signing_key_id}
    assert gone <= set(client.profile().rotator_keys.dropped)


# --- outcomes are signed by the reactor -------------------------------------------------------


def test_a_verified_outcome_is_reported_stored(client: Client) -> None:
    done = client.put("-o", "table")
    assert done.returncode == 0, done.stderr
    assert "Stored" in done.stdout
    assert "receipt verified" in done.stdout


def test_an_outcome_with_an_altered_fingerprint_is_not_reported_stored(client: Client) -> None:
    def forge(view: dict[str, Any]) -> dict[str, Any]:
        return {**view, "fingerprint": "fp1:" + "A" * 43} if view.get("fingerprint") else view

    client.proxy.on_response("GET", UPLOADS, forge)
    done = client.put()
    unverified(done)
    assert "A" * 43 not in done.stdout  # the forged fingerprint is never printed
    table = client.put("-o", "table")
    assert table.returncode == 10, table.stdout + table.stderr
    assert "Stored" not in table.stdout


def test_an_outcome_without_its_receipt_is_not_reported_stored(client: Client) -> None:
    client.proxy.on_response("GET", UPLOADS, lambda view: {**view, "receipt": None})
    done = client.put()
    unverified(done)
    assert "no receipt" in said(done.stderr)
    assert "recorded before reactors signed receipts carry none" in said(done.stderr)


def test_a_ciphertext_the_api_swapped_for_its_own_is_not_reported_stored(
    client: Client,
) -> None:
    statements: list[SignedStatement] = []

    def seen(answer: dict[str, Any]) -> dict[str, Any]:
        statements.append(SignedStatement.from_dict(answer))
        return answer

    def swap(body: dict[str, Any]) -> dict[str, Any]:
        """The API encrypts a value of its own to the same upload key, for the same upload."""
        binding = Binding(body["upload_id"], body["key_id"], body["store"], body["path"])
        theirs = seal_envelope(b"the API's value", binding, statements[-1].statement.public_key)
        return {**body, **theirs.to_dict()}

    client.proxy.on_response("POST", UPLOAD_KEYS, seen)
    client.proxy.on_request("POST", SECRETS, swap)
    done = client.put()
    unverified(done)
    # The swap itself worked: the reactor stored the API's value and signed for it.
    final = client.proxy.sent("GET", UPLOADS)[-1].body
    assert final["status"] == "stored"
    assert final["receipt"] is not None


def test_another_uploads_receipt_is_not_taken_for_this_one(client: Client) -> None:
    first = client.put()
    assert first.returncode == 0, first.stderr
    [stored] = [p.body for p in client.proxy.sent("GET", UPLOADS) if p.body["status"] == "stored"]
    client.proxy.on_response("GET", UPLOADS, lambda _view: stored)  # a real, signed receipt
    done = client.put()
    unverified(done)


def flip(field: str) -> Any:
    """A request rewrite: one bit of `field` (base64 bytes) of the upload flipped."""

    def tamper(body: dict[str, Any]) -> dict[str, Any]:
        raw = bytearray(base64.b64decode(body[field]))
        raw[len(raw) // 2] ^= 0x01
        return {**body, field: _b64(bytes(raw))}

    return tamper


def test_a_rejected_outcome_with_a_verified_receipt_exits_3(client: Client) -> None:
    client.proxy.on_request("POST", SECRETS, flip("nonce"))  # the ciphertext is ours
    done = client.put()
    assert done.returncode == 3, done.stdout + done.stderr
    assert "bad_mac" in said(done.stderr)
    assert "(receipt verified)" in said(done.stderr)


def test_a_rejection_of_a_ciphertext_m8ctl_did_not_send_is_unverified(client: Client) -> None:
    client.proxy.on_request("POST", SECRETS, flip("ciphertext"))
    done = client.put()
    assert done.returncode == 10, done.stdout + done.stderr
    assert "the server says upload" in said(done.stderr)
    assert "was rejected" in said(done.stderr)
    assert client.proxy.sent("GET", UPLOADS)[-1].body["status"] == "rejected"


def test_a_rejection_without_its_receipt_exits_10(client: Client) -> None:
    client.proxy.on_request("POST", SECRETS, flip("nonce"))
    client.proxy.on_response("GET", UPLOADS, lambda view: {**view, "receipt": None})
    done = client.put()
    assert done.returncode == 10, done.stdout + done.stderr
    assert "was rejected" in said(done.stderr)
    assert "no receipt" in said(done.stderr)


# --- logging in safely ------------------------------------------------------------------------


def test_login_over_plain_http_to_another_host_is_refused_before_connecting(
    system: RunningSystem, tmp_path: Path
) -> None:
    env = {**system.m8ctl_env(), "M8CTL_CONFIG": str(tmp_path / "m8ctl.json")}
    token = str(system.system.admin_token_file)
    done = m8ctl(system, "login", "http://m8.invalid", "--token-file", token, env=env)
    assert done.returncode == 2, done.stderr
    assert "https://" in said(done.stderr)
    assert not (tmp_path / "m8ctl.json").exists()


def test_login_to_another_server_with_an_existing_profile_needs_repin(client: Client) -> None:
    token = str(client.system.system.admin_token_file)
    done = client.run("login", client.system.system.api_url, "--token-file", token)
    assert done.returncode == 2, done.stderr
    assert "--repin" in said(done.stderr)
    assert client.profile().server == client.proxy.url


def test_repin_without_a_terminal_or_yes_is_refused(client: Client) -> None:
    token = str(client.system.system.admin_token_file)
    done = client.run("login", client.system.system.api_url, "--token-file", token, "--repin")
    assert done.returncode == 2, done.stderr
    assert "--yes" in said(done.stderr)
    assert client.profile().server == client.proxy.url


def test_repin_with_yes_shows_the_old_and_new_fingerprints(client: Client) -> None:
    impostor = RotatorSigningKey.generate("rsk-impostor")
    profile = client.profile()
    real = {key_id: pinned.fingerprint for key_id, pinned in profile.pinned.items()}
    profile.rotator_keys.pinned = {"rsk-impostor": pin_of(impostor, future())}
    profile.save()
    token = str(client.system.system.admin_token_file)
    api = client.system.system.api_url
    done = client.run("login", api, "--token-file", token, "--repin", "--yes")
    assert done.returncode == 0, done.stderr
    assert verify_key_fingerprint(impostor.verify_key) in done.stdout
    assert all(fingerprint in done.stdout for fingerprint in real.values())
    after = client.profile()
    assert after.server == api
    assert "rsk-impostor" not in after.pinned
    assert after.store == VAULT_STORE  # the new server's default, shown and taken on first use


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
