"""m8ctl's client side with a fake API: pins, their end dates, successors, stores, receipts."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from nacl.public import PrivateKey
from typer.testing import CliRunner

from m8.client import m8ctl
from m8.client.errors import ApiError, ClientError, UntrustedKey, UsageError
from m8.client.outcome import await_outcome, check_receipt
from m8.client.output import OutputFormat
from m8.client.pins import Changes, follow_endorsements, parse_published, pin_first_use
from m8.client.profile import RECEIPT, ROTATOR, PinnedKey, PinSet, Profile
from m8.client.sdk import M8Client
from m8.client.upload import put_secret, read_value
from m8.crypto import (
    OutcomeReceipt,
    ReceiptSigningKey,
    RotatorSigningKey,
    UploadKeyStatement,
    encode_verify_key,
    endorse,
    format_utc,
    key_self_signature,
    sign_receipt,
    sign_statement,
    verify_key_fingerprint,
)
from m8.crypto.receipts import ReceiptStatus
from m8.protocol.status import SETTLED
from tests.support.client_http import via_httpx

NOW = datetime.now(UTC)
LATER = NOW + timedelta(days=7)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pin(key: RotatorSigningKey, not_after: datetime | None = LATER) -> PinnedKey:
    return PinnedKey(
        encode_verify_key(key.verify_key),
        verify_key_fingerprint(key.verify_key),
        None if not_after is None else format_utc(not_after),
    )


def published(
    key: RotatorSigningKey,
    endorser: RotatorSigningKey | None = None,
    not_after: datetime | None = LATER,
    kind: str = ROTATOR,
) -> dict[str, Any]:
    """A key as the server lists it, self-signed (rotator) and endorsed if asked."""
    entry: dict[str, Any] = {
        "signing_key_id" if kind == ROTATOR else "receipt_key_id": key.signing_key_id,
        "verify_key": encode_verify_key(key.verify_key),
        "fingerprint": verify_key_fingerprint(key.verify_key),
        "endorsed_by": None,
        "endorsement": None,
    }
    if kind == ROTATOR:
        entry["not_after"] = None if not_after is None else format_utc(not_after)
        entry["self_signature"] = b64(key_self_signature(key, not_after))
    if endorser is not None:
        signature = endorse(endorser, key.signing_key_id, key.verify_key, not_after, kind)
        entry |= {"endorsed_by": endorser.signing_key_id, "endorsement": b64(signature)}
    return entry


class FakeApi:
    """Stands in for the HTTP API (unit tests only)."""

    def __init__(
        self,
        signer: RotatorSigningKey,
        keys: list[dict[str, Any]],
        *,
        store_id: str | None = None,
        withdrawn: list[str] | None = None,
        receipt_keys: list[dict[str, Any]] | None = None,
        refuse: ApiError | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        self.signer = signer
        self.keys = keys
        self.store_id = store_id
        self.withdrawn = withdrawn or []
        self.receipts = receipt_keys or []
        self.refuse = refuse
        self.expires_at = expires_at or NOW + timedelta(minutes=15)
        self.asked: list[tuple[str, str]] = []
        self.submitted: list[dict[str, Any]] = []
        self.key_reads = 0

    def upload_key(self, path: str, store: str) -> dict[str, Any]:
        self.asked.append((store, path))
        if self.refuse:
            raise self.refuse
        statement = UploadKeyStatement(
            key_id="k-1",
            public_key=bytes(PrivateKey.generate().public_key),
            store_id=self.store_id or store,
            path=path,
            expires_at=self.expires_at,
            kek_id="kek-1",
        )
        return sign_statement(statement, self.signer).to_dict()

    def rotator_keys(self) -> dict[str, Any]:
        self.key_reads += 1
        withdrawn = [{"signing_key_id": k, "withdrawn_at": format_utc(NOW)} for k in self.withdrawn]
        return {"keys": self.keys, "withdrawn": withdrawn}

    def receipt_keys(self) -> dict[str, Any]:
        return {"keys": self.receipts}

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        self.submitted.append(body)
        return {"upload_id": "echoed-by-the-api", "status": "pending"}


@pytest.fixture
def profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Profile:
    monkeypatch.setenv("M8CTL_CONFIG", str(tmp_path / "m8ctl.json"))
    made = Profile("http://m8", "tok", store="vault-a", keys_checked_at=format_utc(NOW))
    made.save()
    return made


def endorsed(profile: Profile, entries: list[dict[str, Any]]) -> list[str]:
    """The keys pinned by following endorsements in `entries`."""
    return follow(profile, entries).pinned


def follow(profile: Profile, entries: list[dict[str, Any]]) -> Changes:
    """What following the endorsements in `entries` changed."""
    listed = parse_published({"keys": entries}, ROTATOR)
    return follow_endorsements(profile.rotator_keys, listed, NOW)


def put(api: FakeApi, profile: Profile, store: str | None = None) -> dict[str, Any]:
    # At NOW, the instant the pins here are dated from, however late in a long run it is.
    with read_value(bytearray(b"hunter2")) as value:
        return put_secret(api, profile, "team/db", store, value, now=NOW)  # type: ignore[arg-type]


# --- stores -----------------------------------------------------------------------------


def test_profile_is_saved_readable_by_its_owner_only(profile: Profile) -> None:
    path = profile.save()
    assert path.stat().st_mode & 0o777 == 0o600
    assert Profile.load().token == "tok"
    path.chmod(0o644)
    with pytest.raises(ClientError, match="chmod 600"):
        Profile.load()


def test_upload_names_the_profiles_store_and_is_encrypted(profile: Profile) -> None:
    rotator = RotatorSigningKey.generate("sig-1")
    profile.pinned["sig-1"] = pin(rotator)
    api = FakeApi(rotator, [published(rotator)])
    accepted = put(api, profile)
    assert api.asked == [("vault-a", "team/db")]
    [body] = api.submitted
    assert body["store"] == "vault-a"
    assert accepted["upload_id"] == body["upload_id"]  # ours, not the API's echo
    sent = hashlib.sha256(base64.b64decode(body["ciphertext"])).hexdigest()
    assert accepted["ciphertext_sha256"] == sent  # what the receipt is checked against
    assert "hunter2" not in str(body)
    assert b64(b"hunter2") not in str(body)


def test_store_option_overrides_the_profiles_store(profile: Profile) -> None:
    rotator = RotatorSigningKey.generate("sig-1")
    profile.pinned["sig-1"] = pin(rotator)
    api = FakeApi(rotator, [published(rotator)])
    put(api, profile, store="aws-a")
    assert api.asked == [("aws-a", "team/db")]


def test_without_a_store_nothing_is_asked_for(profile: Profile) -> None:
    profile.store = None
    rotator = RotatorSigningKey.generate("sig-1")
    api = FakeApi(rotator, [published(rotator)])
    with pytest.raises(UsageError, match="set-store"):
        put(api, profile)
    assert api.asked == []


def test_a_statement_for_another_store_is_refused(profile: Profile) -> None:
    rotator = RotatorSigningKey.generate("sig-1")
    profile.pinned["sig-1"] = pin(rotator)
    api = FakeApi(rotator, [published(rotator)], store_id="aws-a")
    with pytest.raises(UntrustedKey, match="asked for vault-a:team/db"):
        put(api, profile)
    assert api.submitted == []


def test_a_deactivated_profile_store_is_reported_without_falling_back(profile: Profile) -> None:
    rotator = RotatorSigningKey.generate("sig-1")
    profile.pinned["sig-1"] = pin(rotator)
    refusal = ApiError(409, "Conflict", "store 'vault-a' is inactive", "store_inactive")
    api = FakeApi(rotator, [published(rotator)], refuse=refusal)
    with pytest.raises(ClientError, match=r"deactivated.*set-store") as raised:
        put(api, profile)
    assert not isinstance(raised.value, UntrustedKey)
    assert api.asked == [("vault-a", "team/db")]  # asked once, for its own store only
    assert api.submitted == []


# --- rotator pins -----------------------------------------------------------------------


def test_a_key_signed_by_an_unpinned_rotator_key_is_refused(profile: Profile) -> None:
    pinned = RotatorSigningKey.generate("sig-1")
    stranger = RotatorSigningKey.generate("sig-evil")
    profile.pinned["sig-1"] = pin(pinned)
    api = FakeApi(stranger, [published(pinned), published(stranger)])
    with pytest.raises(UntrustedKey, match="--repin"):
        put(api, profile)
    assert api.submitted == []


def test_a_rotated_key_is_followed_with_its_signed_end_and_recorded(profile: Profile) -> None:
    old = RotatorSigningKey.generate("sig-1")
    new = RotatorSigningKey.generate("sig-2")
    profile.pinned["sig-1"] = pin(old)
    new_end = NOW + timedelta(days=3)
    api = FakeApi(new, [published(old), published(new, endorser=old, not_after=new_end)])
    put(api, profile)
    saved = Profile.load()
    assert saved.pinned["sig-2"].not_after == format_utc(new_end)
    assert saved.pinned["sig-1"].successor == "sig-2"
    assert len(api.submitted) == 1


def test_an_endorsement_by_an_unpinned_key_pins_nothing(profile: Profile) -> None:
    old = RotatorSigningKey.generate("sig-1")
    stranger = RotatorSigningKey.generate("sig-x")
    new = RotatorSigningKey.generate("sig-2")
    profile.pinned["sig-1"] = pin(old)
    assert endorsed(profile, [published(new, endorser=stranger)]) == []


def test_an_endorsement_with_a_changed_end_pins_nothing(profile: Profile) -> None:
    old = RotatorSigningKey.generate("sig-1")
    new = RotatorSigningKey.generate("sig-2")
    profile.pinned["sig-1"] = pin(old)
    entry = published(new, endorser=old) | {"not_after": format_utc(LATER + timedelta(days=9))}
    assert endorsed(profile, [entry]) == []


def test_a_second_successor_drops_the_endorser_and_every_successor_and_says_repin(
    profile: Profile, capsys: pytest.CaptureFixture[str]
) -> None:
    old = RotatorSigningKey.generate("sig-1")
    first = RotatorSigningKey.generate("sig-2")
    second = RotatorSigningKey.generate("sig-3")
    profile.pinned["sig-1"] = pin(old)
    profile.pinned["sig-2"] = pin(first)
    profile.pinned["sig-1"].successor = "sig-2"
    api = FakeApi(second, [published(first, old), published(second, old)])
    with pytest.raises(UntrustedKey, match="no longer trusts"):
        put(api, profile)
    assert api.submitted == []
    said = " ".join(capsys.readouterr().err.split())
    assert "endorsed more than one successor" in said
    assert "m8ctl login SERVER_URL --repin" in said
    saved = Profile.load()
    # The first successor seen is dropped too: the API chose which one m8ctl saw first.
    assert {"sig-1", "sig-2", "sig-3"} <= set(saved.rotator_keys.dropped)
    assert saved.pinned == {}


def test_a_forged_successor_seen_first_is_dropped_with_all_it_endorsed(
    profile: Profile,
) -> None:
    stolen = RotatorSigningKey.generate("sig-1")  # its private half is in the API's hands
    forged = RotatorSigningKey.generate("sig-forged")
    forged_next = RotatorSigningKey.generate("sig-forged-next")
    real = RotatorSigningKey.generate("sig-real")
    profile.pinned["sig-1"] = pin(stolen)
    chain = [published(forged, stolen), published(forged_next, forged)]
    put(FakeApi(forged_next, chain), profile)  # the API shows its successor first
    assert {"sig-forged", "sig-forged-next"} <= set(Profile.load().pinned)
    profile = Profile.load()
    profile.keys_checked_at = None  # the next put reads the list again
    api = FakeApi(forged_next, [*chain, published(real, stolen)])
    with pytest.raises(UntrustedKey, match="no longer trusts"):
        put(api, profile)
    assert api.submitted == []
    dropped = Profile.load().rotator_keys.dropped
    assert {"sig-1", "sig-forged", "sig-forged-next", "sig-real"} <= set(dropped)


def test_a_successor_outliving_its_endorser_by_more_than_366_days_is_refused(
    profile: Profile,
) -> None:
    old = RotatorSigningKey.generate("sig-1")
    new = RotatorSigningKey.generate("sig-2")
    profile.pinned["sig-1"] = pin(old, not_after=LATER)
    changes = follow(profile, [published(new, old, not_after=LATER + timedelta(days=367))])
    assert changes.pinned == []
    assert "sig-2" in profile.rotator_keys.dropped
    assert any("more than 366 days" in alarm for alarm in changes.alarms)


def test_a_successor_ending_within_366_days_of_its_endorser_is_followed(
    profile: Profile,
) -> None:
    old = RotatorSigningKey.generate("sig-1")
    new = RotatorSigningKey.generate("sig-2")
    profile.pinned["sig-1"] = pin(old, not_after=LATER)
    assert endorsed(profile, [published(new, old, not_after=LATER + timedelta(days=366))]) == [
        "sig-2"
    ]


def test_two_successors_seen_at_once_are_both_refused(profile: Profile) -> None:
    old = RotatorSigningKey.generate("sig-1")
    one, two = RotatorSigningKey.generate("sig-2"), RotatorSigningKey.generate("sig-3")
    profile.pinned["sig-1"] = pin(old)
    api = FakeApi(two, [published(old), published(one, old), published(two, old)])
    with pytest.raises(UntrustedKey):
        put(api, profile)
    assert set(Profile.load().rotator_keys.dropped) == {"sig-1", "sig-2", "sig-3"}


def test_a_pin_past_its_end_is_dropped_and_its_statement_refused(profile: Profile) -> None:
    rotator = RotatorSigningKey.generate("sig-1")
    profile.pinned["sig-1"] = pin(rotator, not_after=NOW - timedelta(seconds=1))
    api = FakeApi(rotator, [published(rotator)])  # the server still shows it, later end
    with pytest.raises(UntrustedKey, match=r"expired.*try again"):
        put(api, profile)
    assert api.submitted == []
    assert "sig-1" in Profile.load().rotator_keys.dropped


def test_a_pins_end_is_never_extended_by_what_the_server_shows(profile: Profile) -> None:
    rotator = RotatorSigningKey.generate("sig-1")
    profile.pinned["sig-1"] = pin(rotator, not_after=NOW + timedelta(hours=1))
    profile.keys_checked_at = None  # forces a read of the list
    api = FakeApi(rotator, [published(rotator, not_after=LATER)])
    put(api, profile)
    assert Profile.load().pinned["sig-1"].not_after == format_utc(NOW + timedelta(hours=1))


def test_a_statement_outliving_its_signing_key_is_refused(profile: Profile) -> None:
    rotator = RotatorSigningKey.generate("sig-1")
    profile.pinned["sig-1"] = pin(rotator, not_after=NOW + timedelta(minutes=5))
    api = FakeApi(rotator, [published(rotator)], expires_at=NOW + timedelta(minutes=15))
    with pytest.raises(UntrustedKey, match="never signs"):
        put(api, profile)


def test_a_withdrawn_key_is_dropped_when_the_list_is_next_read(profile: Profile) -> None:
    kept_seed = RotatorSigningKey.generate("sig-old")
    profile.pinned["sig-old"] = pin(kept_seed)
    profile.keys_checked_at = format_utc(NOW - timedelta(minutes=11))
    api = FakeApi(kept_seed, [], withdrawn=["sig-old"])
    with pytest.raises(UntrustedKey, match="withdrew"):
        put(api, profile)
    assert api.submitted == []
    assert api.key_reads == 1


def test_a_recent_key_list_is_not_read_again(profile: Profile) -> None:
    rotator = RotatorSigningKey.generate("sig-1")
    profile.pinned["sig-1"] = pin(rotator)
    api = FakeApi(rotator, [published(rotator)], withdrawn=["sig-1"])
    put(api, profile)  # checked a moment ago: the withdrawal is seen at the next read
    assert api.key_reads == 0


def test_first_use_pins_only_self_signed_keys_and_follows_the_rest() -> None:
    root = RotatorSigningKey.generate("sig-1")
    successor = RotatorSigningKey.generate("sig-2")
    unsigned = RotatorSigningKey.generate("sig-u")
    entries = [
        published(root),
        published(successor, root),
        published(unsigned) | {"self_signature": None},
    ]
    pins = PinSet(ROTATOR)
    changes = pin_first_use(pins, parse_published({"keys": entries}, ROTATOR), NOW)
    assert set(pins.pinned) == {"sig-1", "sig-2"}
    assert pins.pinned["sig-1"].successor == "sig-2"
    assert any("sig-u" in alarm for alarm in changes.alarms)


def test_an_old_profile_loads_and_its_pins_get_their_signed_end(
    profile: Profile, tmp_path: Path
) -> None:
    rotator = RotatorSigningKey.generate("sig-1")
    old = {"server": "http://m8", "token": "tok", "pinned": {"sig-1": {
        "verify_key": encode_verify_key(rotator.verify_key), "fingerprint": "f"}}}  # fmt: skip
    path = tmp_path / "m8ctl.json"
    path.write_text(json.dumps(old))
    path.chmod(0o600)
    loaded = Profile.load()
    assert loaded.store is None
    api = FakeApi(rotator, [published(rotator)])
    put(api, loaded, store="vault-a")
    assert Profile.load().pinned["sig-1"].not_after == format_utc(LATER)


# --- receipts ---------------------------------------------------------------------------


SENT = hashlib.sha256(b"the ciphertext m8ctl sent").hexdigest()


def receipt_for(
    key: ReceiptSigningKey,
    upload_id: str = "u-1",
    fingerprint: str | None = "fp1:abc",
    ciphertext_sha256: str = SENT,
    status: ReceiptStatus = "stored",
) -> dict[str, Any]:
    """The API's upload view with a reactor's receipt."""
    version = "1" if status == "stored" else None
    outcome = OutcomeReceipt(
        upload_id, "vault-a", "team/db", status, version, fingerprint, ciphertext_sha256
    )
    signature = sign_receipt(outcome, key)
    return {
        "upload_id": upload_id, "status": status, "store": "vault-a", "path": "team/db",
        "upstream_version": version, "fingerprint": fingerprint,
        "ciphertext_sha256": ciphertext_sha256,
        "receipt": {"receipt_key_id": key.receipt_key_id, "signature": b64(signature)},
    }  # fmt: skip


def pinned_receipt_key(profile: Profile, key: ReceiptSigningKey) -> None:
    vk = key.verify_key
    profile.receipt_keys.pinned[key.receipt_key_id] = PinnedKey(
        encode_verify_key(vk), verify_key_fingerprint(vk)
    )


def check(
    profile: Profile, claim: dict[str, Any], api: FakeApi | None = None, sent: str = SENT
) -> Any:
    api = api or FakeApi(RotatorSigningKey.generate("x"), [])
    return check_receipt(api, profile, claim, "u-1", "vault-a", "team/db", sent)  # type: ignore[arg-type]


def test_a_receipt_by_a_pinned_receipt_key_verifies(profile: Profile) -> None:
    key = ReceiptSigningKey.generate("rk-1")
    pinned_receipt_key(profile, key)
    assert check(profile, receipt_for(key)).verified


def test_an_altered_fingerprint_does_not_verify(profile: Profile) -> None:
    key = ReceiptSigningKey.generate("rk-1")
    pinned_receipt_key(profile, key)
    claim = receipt_for(key) | {"fingerprint": "fp1:forged"}
    verdict = check(profile, claim)
    assert not verdict.verified
    assert "does not verify" in verdict.problem


def test_a_missing_receipt_does_not_verify(profile: Profile) -> None:
    key = ReceiptSigningKey.generate("rk-1")
    pinned_receipt_key(profile, key)
    verdict = check(profile, receipt_for(key) | {"receipt": None})
    assert not verdict.verified
    assert "no receipt" in verdict.problem
    assert "outcomes recorded before reactors signed receipts carry none" in verdict.problem


def test_another_uploads_receipt_does_not_verify_for_ours(profile: Profile) -> None:
    key = ReceiptSigningKey.generate("rk-1")
    pinned_receipt_key(profile, key)
    replayed = receipt_for(key, upload_id="u-other") | {"upload_id": "u-1"}
    assert not check(profile, replayed).verified


def test_a_verified_receipt_by_a_followed_successor_retires_its_endorser(
    profile: Profile,
) -> None:
    old = ReceiptSigningKey.generate("rk-1")
    new = ReceiptSigningKey.generate("rk-2")
    pinned_receipt_key(profile, old)
    listed = [published(new.key, old.key, not_after=None, kind=RECEIPT)]
    api = FakeApi(RotatorSigningKey.generate("x"), [], receipt_keys=listed)
    assert check(profile, receipt_for(new), api).verified
    saved = Profile.load()
    assert set(saved.receipt_keys.pinned) == {"rk-2"}
    assert "rk-2" in saved.receipt_keys.dropped["rk-1"].reason
    assert not check(saved, receipt_for(old), api).verified  # retired: signs nothing now


def test_a_receipt_for_another_ciphertext_does_not_verify(profile: Profile) -> None:
    key = ReceiptSigningKey.generate("rk-1")
    pinned_receipt_key(profile, key)
    theirs = hashlib.sha256(b"a ciphertext the API made itself").hexdigest()
    verdict = check(profile, receipt_for(key, ciphertext_sha256=theirs))
    assert not verdict.verified
    assert "another ciphertext" in verdict.problem


def finish(
    profile: Profile, view: dict[str, Any], chosen: Any = ("vault-a", "team/db", SENT)
) -> int:
    """m8ctl's exit code for the upload view `view` (of upload u-1)."""
    api = FakeApi(RotatorSigningKey.generate("x"), [])
    with pytest.raises(typer.Exit) as exited:
        m8ctl._finish(api, profile, "u-1", view, OutputFormat.TABLE, chosen)  # type: ignore[arg-type]
    return exited.value.exit_code


@pytest.mark.parametrize("status", ["rejected", "superseded", "failed"])
def test_a_rejection_supersession_or_failure_without_a_verified_receipt_exits_10(
    profile: Profile, status: ReceiptStatus
) -> None:
    key = ReceiptSigningKey.generate("rk-1")
    pinned_receipt_key(profile, key)
    view = receipt_for(key, fingerprint=None, status=status) | {"reason": "bad_mac"}
    assert finish(profile, view) == {"rejected": 3, "superseded": 11, "failed": 4}[status]
    assert finish(profile, view | {"receipt": None}) == 10
    assert finish(profile, view | {"detail": "x"}, ("vault-a", "team/db", "0" * 64)) == 10


def test_upload_status_checks_the_receipt_with_the_ciphertext_hash_the_view_shows(
    profile: Profile,
) -> None:
    key = ReceiptSigningKey.generate("rk-1")
    pinned_receipt_key(profile, key)
    view = receipt_for(key)
    assert finish(profile, view, chosen=None) == 0
    assert finish(profile, view | {"ciphertext_sha256": "0" * 64}, chosen=None) == 10
    assert finish(profile, view | {"ciphertext_sha256": None}, chosen=None) == 10


# --- waiting for the outcome ------------------------------------------------------------


class Polled:
    """Answers status requests in turn, on a fake clock the waits advance."""

    def __init__(self, answers: list[dict[str, Any] | ApiError]) -> None:
        self.answers = answers
        self.now = 0.0
        self.slept: list[float] = []

    def upload(self, upload_id: str, wait: float = 0) -> dict[str, Any]:
        answer = self.answers.pop(0)
        if isinstance(answer, ApiError):
            raise answer
        return answer

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def too_many(retry_after: float | None) -> ApiError:
    return ApiError(429, "Too Many Requests", "slow down", "too_many_requests", retry_after)


def wait_for(client: Polled, timeout: float) -> dict[str, Any]:
    return await_outcome(
        client,  # type: ignore[arg-type]
        "u-1",
        timeout,
        clock=lambda: client.now,
        sleep=client.sleep,
    )


def test_a_status_this_m8ctl_does_not_know_ends_the_wait() -> None:
    client = Polled([{"status": "archived"}, {"status": "stored"}])
    assert wait_for(client, 60)["status"] == "archived"
    assert client.answers == [{"status": "stored"}]  # asked once


def test_a_429_while_waiting_honours_retry_after_and_keeps_waiting() -> None:
    client = Polled([too_many(7), {"status": "pending"}, too_many(None), {"status": "stored"}])
    assert wait_for(client, 60)["status"] == "stored"
    assert client.slept == [7, 1.0]  # no Retry-After: a second


def test_a_429_retry_after_is_bounded_by_the_deadline() -> None:
    client = Polled([too_many(500), {"status": "stored"}])
    assert wait_for(client, 60)["status"] == "pending"  # m8ctl exits 8: still pending
    assert client.slept == [60]


def test_another_error_while_waiting_is_reported() -> None:
    client = Polled([ApiError(404, "Not Found", "no upload u-1")])
    with pytest.raises(ApiError, match="no upload"):
        wait_for(client, 60)


@pytest.mark.parametrize("body", [b"[]", b'{"status": 5}', b'{"state": "stored"}', b"<html>"])
def test_a_malformed_upload_answer_is_a_clear_client_error(body: bytes) -> None:
    transport = httpx.MockTransport(lambda _request: httpx.Response(200, content=body))
    with (
        M8Client("http://m8", "tok", transport=via_httpx(transport)) as client,
        pytest.raises(ClientError, match=r"no status|not JSON"),
    ):
        client.upload("u-1")


# --- login --------------------------------------------------------------------------------


def test_login_refuses_to_overwrite_a_profile_it_cannot_read_safely(
    profile: Profile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = profile.save()
    path.chmod(0o644)
    before = path.read_text()
    rotator = RotatorSigningKey.generate("sig-1")

    class Server(FakeApi):
        """A server that would let the login through."""

        def __init__(self, *_args: object) -> None:
            super().__init__(rotator, [published(rotator)])

        def __enter__(self) -> Server:
            return self

        def __exit__(self, *_exc: object) -> None:
            pass

        def stores(self) -> dict[str, Any]:
            return {"stores": [{"name": "vault-a", "active": True}], "default": "vault-a"}

    monkeypatch.setattr("m8.client.sdk.M8Client", Server)
    token = tmp_path / "token"
    token.write_text("another-token")
    args = ["login", "http://127.0.0.1:9", "--token-file", str(token), "--store", "vault-a"]
    done = CliRunner().invoke(m8ctl.app, args)
    assert done.exit_code == 1, done.output
    assert "chmod 600" in " ".join(done.output.split())
    assert path.read_text() == before


def test_a_rotator_kind_endorsement_does_not_pass_for_a_receipt_key(profile: Profile) -> None:
    old = ReceiptSigningKey.generate("rk-1")
    new = ReceiptSigningKey.generate("rk-2")
    pinned_receipt_key(profile, old)
    wrong_kind = published(new.key, old.key, not_after=None, kind=ROTATOR)
    listed = [{**wrong_kind, "receipt_key_id": "rk-2"}]
    api = FakeApi(RotatorSigningKey.generate("x"), [], receipt_keys=listed)
    verdict = check(profile, receipt_for(new), api)
    assert not verdict.verified
    assert "not pinned" in verdict.problem


def test_empty_value_is_refused() -> None:
    with pytest.raises(ClientError, match="empty"):
        read_value(bytearray())


def test_m8ctl_has_an_exit_code_for_every_settled_status_and_no_other() -> None:
    assert set(m8ctl.EXIT_CODES) == SETTLED


# --- an upload that meets a conflict ----------------------------------------------------


def answering(*statuses: tuple[int, str]) -> tuple[M8Client, list[bytes], list[float]]:
    """A client of a server answering POST /v1/secrets with `statuses` in turn (status,
    problem type); what it was sent and how long it slept in between."""
    bodies: list[bytes] = []
    slept: list[float] = []
    answers = list(statuses)

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        status, code = answers.pop(0)
        if status == 202:
            return httpx.Response(202, json={"upload_id": "u-1", "status": "pending"})
        problem = {"type": f"urn:m8:problem:{code}", "title": "Conflict", "status": status}
        return httpx.Response(status, json=problem)

    client = M8Client(
        "http://m8", "tok", transport=via_httpx(httpx.MockTransport(handle)), sleep=slept.append
    )
    return client, bodies, slept


def test_an_upload_that_meets_a_transaction_conflict_is_sent_again_unchanged() -> None:
    client, bodies, slept = answering((409, "conflict"), (409, "conflict"), (202, ""))
    with client:
        assert client.submit({"upload_id": "u-1", "key_id": "k-1"})["status"] == "pending"
    assert len(bodies) == 3
    assert len(set(bodies)) == 1  # the same upload id, key and ciphertext each time
    assert len(slept) == 2
    assert all(0 < pause <= 1.6 for pause in slept)


def test_conflicts_are_retried_a_bounded_number_of_times_then_reported() -> None:
    client, bodies, slept = answering(*[(409, "conflict")] * 10)
    with client, pytest.raises(ApiError, match="Conflict") as raised:
        client.submit({"upload_id": "u-1"})
    assert raised.value.code == "conflict"
    assert len(bodies) == 5
    assert sum(slept) <= 3.0 + 1e-9  # at most 0.2 + 0.4 + 0.8 + 1.6


@pytest.mark.parametrize("code", ["upload_key_used", "upload_exists", "upload_key_expired"])
def test_other_409s_are_not_retried(code: str) -> None:
    client, bodies, slept = answering((409, code), (202, ""))
    with client, pytest.raises(ApiError):
        client.submit({"upload_id": "u-1"})
    assert len(bodies) == 1
    assert slept == []
