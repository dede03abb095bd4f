"""m8ctl's client side: pinning, endorsement of rotated keys, refusing swapped keys."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nacl.public import PrivateKey

from m8.client.errors import ClientError, UntrustedKey
from m8.client.profile import PinnedKey, Profile
from m8.client.upload import pin_endorsed_keys, put_secret, read_value
from m8.crypto import (
    RotatorSigningKey,
    UploadKeyStatement,
    encode_verify_key,
    endorse,
    sign_statement,
    verify_key_fingerprint,
)


def pin(key: RotatorSigningKey) -> PinnedKey:
    return PinnedKey(encode_verify_key(key.verify_key), verify_key_fingerprint(key.verify_key))


def published(key: RotatorSigningKey, endorser: RotatorSigningKey | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "signing_key_id": key.signing_key_id,
        "verify_key": encode_verify_key(key.verify_key),
    }
    if endorser is not None:
        signature = endorse(endorser, key.signing_key_id, key.verify_key)
        entry |= {
            "endorsed_by": endorser.signing_key_id,
            "endorsement": base64.b64encode(signature).decode(),
        }
    return entry


class FakeApi:
    """Stands in for the HTTP API (unit tests only)."""

    def __init__(self, statement: dict[str, Any], keys: list[dict[str, Any]]) -> None:
        self.statement = statement
        self.keys = keys
        self.submitted: list[dict[str, Any]] = []

    def upload_key(self, path: str, store: str | None) -> dict[str, Any]:
        return self.statement

    def rotator_keys(self) -> list[dict[str, Any]]:
        return self.keys

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        self.submitted.append(body)
        return {"upload_id": body["upload_id"], "status": "pending"}


def signed_for(key: RotatorSigningKey, path: str = "team/db") -> dict[str, Any]:
    statement = UploadKeyStatement(
        key_id="k-1",
        public_key=bytes(PrivateKey.generate().public_key),
        store_id="vault-a",
        path=path,
        expires_at=datetime.now(UTC) + timedelta(minutes=15),
        kek_id="kek-1",
    )
    return sign_statement(statement, key).to_dict()


@pytest.fixture
def profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Profile:
    monkeypatch.setenv("M8CTL_CONFIG", str(tmp_path / "m8ctl.json"))
    return Profile("http://m8", "tok")


def test_profile_is_saved_readable_by_its_owner_only(profile: Profile, tmp_path: Path) -> None:
    path = profile.save()
    assert path.stat().st_mode & 0o777 == 0o600
    assert Profile.load().token == "tok"
    path.chmod(0o644)
    with pytest.raises(ClientError, match="chmod 600"):
        Profile.load()


def test_upload_signed_by_a_pinned_key_is_encrypted_and_sent(profile: Profile) -> None:
    rotator = RotatorSigningKey.generate("sig-1")
    profile.pinned["sig-1"] = pin(rotator)
    api = FakeApi(signed_for(rotator), [published(rotator)])
    with read_value(bytearray(b"hunter2")) as value:
        put_secret(api, profile, "team/db", None, value)  # type: ignore[arg-type]
    [body] = api.submitted
    assert body["store"] == "vault-a"
    assert body["path"] == "team/db"
    assert "hunter2" not in str(body)
    assert base64.b64encode(b"hunter2").decode() not in str(body)


def test_a_key_signed_by_an_unpinned_rotator_key_is_refused(profile: Profile) -> None:
    pinned = RotatorSigningKey.generate("sig-1")
    stranger = RotatorSigningKey.generate("sig-evil")
    profile.pinned["sig-1"] = pin(pinned)
    api = FakeApi(signed_for(stranger), [published(pinned), published(stranger)])
    with pytest.raises(UntrustedKey, match="--repin"), read_value(bytearray(b"v")) as value:
        put_secret(api, profile, "team/db", None, value)  # type: ignore[arg-type]
    assert api.submitted == []


def test_a_rotated_key_endorsed_by_a_pinned_one_is_pinned_and_used(profile: Profile) -> None:
    old = RotatorSigningKey.generate("sig-1")
    new = RotatorSigningKey.generate("sig-2")
    profile.pinned["sig-1"] = pin(old)
    api = FakeApi(signed_for(new), [published(old), published(new, endorser=old)])
    with read_value(bytearray(b"v")) as value:
        put_secret(api, profile, "team/db", None, value)  # type: ignore[arg-type]
    assert "sig-2" in Profile.load().pinned
    assert len(api.submitted) == 1


def test_an_endorsement_by_an_unpinned_key_pins_nothing(profile: Profile) -> None:
    old = RotatorSigningKey.generate("sig-1")
    stranger = RotatorSigningKey.generate("sig-x")
    new = RotatorSigningKey.generate("sig-2")
    profile.pinned["sig-1"] = pin(old)
    assert pin_endorsed_keys(profile, [published(new, endorser=stranger)]) == []


def test_a_key_for_another_path_is_refused(profile: Profile) -> None:
    rotator = RotatorSigningKey.generate("sig-1")
    profile.pinned["sig-1"] = pin(rotator)
    api = FakeApi(signed_for(rotator, path="team/other"), [published(rotator)])
    with (
        pytest.raises(UntrustedKey, match="another store or path"),
        read_value(bytearray(b"v")) as value,
    ):
        put_secret(api, profile, "team/db", None, value)  # type: ignore[arg-type]
    assert api.submitted == []


def test_empty_value_is_refused() -> None:
    with pytest.raises(ClientError, match="empty"):
        read_value(bytearray())
