"""Secrets, uploads and one-time upload keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from m8.domain import KeyRefusal, Secret, UploadKey, check_path
from m8.domain.errors import (
    InvalidPath,
    UploadAlreadyRequested,
    UploadKeyDestroyed,
    UploadKeyExpired,
    UploadKeyMismatch,
    UploadKeyUsed,
)
from m8.domain.events import (
    SecretStored,
    SecretStoreFailed,
    SecretUploadRejected,
    SecretUploadRequested,
    UploadKeyIssued,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def requested(upload_id: str = "u1") -> SecretUploadRequested:
    return SecretUploadRequested(
        upload_id=upload_id,
        store="vault-a",
        store_type="vault",
        path="team/db",
        key_id="k1",
        client_public_key="cpk",
        nonce="n",
        ciphertext="ct",
        ciphertext_sha256="h",
        requested_by="alice",
    )


def stored(upload_id: str = "u1") -> SecretStored:
    return SecretStored(upload_id, "vault-a", "vault", "team/db", "3", "fp1:abc")


def issued_key() -> UploadKey:
    key = UploadKey("k1")
    expires = (NOW + timedelta(minutes=15)).isoformat()
    key.issue(UploadKeyIssued("k1", "vault-a", "vault", "team/db", "kek-1", "sig-1", expires))
    return key


def claimed_key(upload_id: str) -> UploadKey:
    key = issued_key()
    key.claim(upload_id, "vault-a", "team/db", now=NOW)
    return key


@pytest.mark.parametrize("path", ["", "/a", "a/", "a//b", "a/../b", "./a", "a b", "x" * 257])
def test_malformed_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidPath):
        check_path(path)


def test_ordinary_paths_pass() -> None:
    assert check_path("team/db/password") == "team/db/password"
    assert check_path("a.b/c_d/e-f+g=h@i") == "a.b/c_d/e-f+g=h@i"


def test_an_upload_id_is_requested_once() -> None:
    secret = Secret("vault-a:team/db")
    secret.request_upload(requested())
    with pytest.raises(UploadAlreadyRequested):
        secret.request_upload(requested())


def test_a_final_outcome_is_recorded_once() -> None:
    secret = Secret("vault-a:team/db")
    secret.request_upload(requested())
    assert secret.record_stored(stored())
    assert not secret.record_stored(stored())
    assert not secret.record_rejected(
        SecretUploadRejected("u1", "vault-a", "vault", "team/db", "bad_mac", "x")
    )
    assert secret.upload("u1").status == "stored"
    assert secret.upload("u1").fingerprint == "fp1:abc"


def test_a_failed_upload_can_still_be_stored_after_a_redrive() -> None:
    secret = Secret("vault-a:team/db")
    secret.request_upload(requested())
    failed = SecretStoreFailed("u1", "vault-a", "vault", "team/db", "upstream_down", "503")
    assert secret.record_failed(failed)
    assert not secret.record_failed(failed)
    assert secret.record_stored(stored())
    assert secret.upload("u1").status == "stored"


def test_an_upload_key_serves_exactly_one_upload() -> None:
    key = issued_key()
    key.claim("u1", "vault-a", "team/db", now=NOW)
    key.claim("u1", "vault-a", "team/db", now=NOW)  # the same upload again is fine
    with pytest.raises(UploadKeyUsed):
        key.claim("u2", "vault-a", "team/db", now=NOW)


def test_an_upload_key_is_bound_to_its_store_and_path() -> None:
    with pytest.raises(UploadKeyMismatch):
        issued_key().claim("u1", "vault-a", "team/other", now=NOW)
    with pytest.raises(UploadKeyMismatch):
        issued_key().claim("u1", "aws-a", "team/db", now=NOW)


def test_an_expired_or_destroyed_key_is_refused() -> None:
    with pytest.raises(UploadKeyExpired):
        issued_key().claim("u1", "vault-a", "team/db", now=NOW + timedelta(minutes=16))
    key = issued_key()
    assert key.destroy("used")
    assert not key.destroy("expired")
    with pytest.raises(UploadKeyDestroyed):
        key.claim("u1", "vault-a", "team/db", now=NOW)


def test_an_expired_key_is_refused_as_expired_whether_or_not_the_sweep_destroyed_it() -> None:
    # Before the rules were one function, the API answered "destroyed" once the sweep had
    # run and "expired" before, while the reactor said key_expired for both.
    swept = issued_key()
    swept.destroy("expired")
    for key, now in ((issued_key(), NOW + timedelta(minutes=16)), (swept, NOW)):
        refused = key.refusal("u1", "vault-a", "team/db", now)
        assert refused is not None
        assert refused.reason is KeyRefusal.EXPIRED
        with pytest.raises(UploadKeyExpired):
            key.claim("u1", "vault-a", "team/db", now=now)


@pytest.mark.parametrize(
    ("key", "upload_id", "store", "path", "reason"),
    [
        (UploadKey("k1"), "u1", "vault-a", "team/db", KeyRefusal.DESTROYED),
        (issued_key(), "u1", "vault-a", "team/other", KeyRefusal.BINDING_MISMATCH),
        (issued_key(), "u1", "aws-a", "team/db", KeyRefusal.BINDING_MISMATCH),
        (claimed_key("u1"), "u2", "vault-a", "team/db", KeyRefusal.USED),
        (claimed_key("u1"), "u1", "vault-a", "team/db", None),
        (issued_key(), "u1", "vault-a", "team/db", None),
    ],
    ids=["never-issued", "other-path", "other-store", "other-upload", "own-claim", "unclaimed"],
)
def test_one_rule_says_whether_a_key_may_serve_an_upload(
    key: UploadKey, upload_id: str, store: str, path: str, reason: KeyRefusal | None
) -> None:
    refused = key.refusal(upload_id, store, path, NOW)
    assert (refused.reason if refused else None) is reason


def test_key_refusal_reasons_are_the_reactors_rejection_reasons_on_the_wire() -> None:
    assert {r.value for r in KeyRefusal} == {
        "key_destroyed",
        "key_expired",
        "key_used",
        "binding_mismatch",
    }


def test_secret_events_route_by_store_type() -> None:
    assert requested().routing_suffix() == "vault"
