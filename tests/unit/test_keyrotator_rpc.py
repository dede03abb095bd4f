"""RPC requests are checked at the edge; refusals carry a code and advice, never the input."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from m8.api.models import VerifyKeys
from m8.crypto import (
    RotatorSigningKey,
    SignedStatement,
    UploadKeyStatement,
    endorse,
    endorsement_valid,
    key_self_signature,
    key_self_signature_valid,
    sign_statement,
)
from m8.domain.errors import UnknownStore
from m8.eventsourcing import EventStoreUnavailable, Metadata
from m8.keyrotator.rpc import RotatorRpc
from m8.keyrotator.service import KeyRotator
from m8.keyrotator.signing_keys import PublishedKey, PublishedKeys, WithdrawnKey
from m8.messaging import RpcError

SIGNER = RotatorSigningKey.generate("rsk-2-bb")


class FakeRotator:
    """Answers `issue` with a signed statement, or with the error it was given."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str | None, str, Metadata]] = []

    async def issue(self, store: str | None, path: str, metadata: Metadata) -> SignedStatement:
        if self.error is not None:
            raise self.error
        self.calls.append((store, path, metadata))
        statement = UploadKeyStatement(
            "k-1", bytes(32), store or "main", path, datetime.now(UTC) + timedelta(minutes=1), "v1"
        )
        return sign_statement(statement, SIGNER)


def _rpc(rotator: FakeRotator) -> RotatorRpc:
    return RotatorRpc(cast(KeyRotator, rotator))


async def _refusal(rotator: FakeRotator, params: dict[str, Any]) -> RpcError:
    with pytest.raises(RpcError) as refused:
        await _rpc(rotator).issue_upload_key(params)
    return refused.value


async def test_an_issued_key_is_answered_as_a_signed_statement() -> None:
    rotator = FakeRotator()

    reply = await _rpc(rotator).issue_upload_key({"store": None, "path": "a/b", "actor": "al"})

    assert SignedStatement.from_dict(reply).statement.path == "a/b"
    [(store, path, metadata)] = rotator.calls
    assert (store, path, metadata.actor) == (None, "a/b", "al")


async def test_the_callers_correlation_id_follows_the_key() -> None:
    rotator = FakeRotator()
    params = {"store": "s", "path": "a", "actor": "al", "correlation_id": "corr-9"}

    await _rpc(rotator).issue_upload_key(params)

    assert rotator.calls[0][2].correlation_id == "corr-9"


async def test_a_domain_refusal_keeps_its_code_and_advice() -> None:
    refused = await _refusal(
        FakeRotator(UnknownStore("there is no store named 'x'")),
        {"store": "x", "path": "a", "actor": "al"},
    )

    assert (refused.code, refused.detail) == ("unknown_store", "there is no store named 'x'")


async def test_a_malformed_request_names_the_field_but_never_echoes_the_input() -> None:
    refused = await _refusal(
        FakeRotator(), {"store": 7, "path": "a", "actor": "al", "note": "hunter2-hunter2"}
    )

    assert refused.code == "bad_request"
    assert "store:" in refused.detail
    assert "note: Extra inputs are not permitted" in refused.detail
    assert "hunter2" not in refused.detail


async def test_a_database_outage_asks_the_caller_to_try_again() -> None:
    refused = await _refusal(
        FakeRotator(EventStoreUnavailable("MongoDB failed (ServerSelectionTimeoutError)")),
        {"path": "a", "actor": "al"},
    )

    assert refused.code == "unavailable"
    assert "try again" in refused.detail


async def test_verify_keys_takes_no_parameters() -> None:
    with pytest.raises(RpcError) as refused:
        await _rpc(FakeRotator()).verify_keys({"all": True})

    assert refused.value.code == "bad_request"


class FakeSigning:
    """Publishes one live key (endorsed by a withdrawn one) and the withdrawn key."""

    def __init__(self) -> None:
        made = datetime(2025, 1, 1, tzinfo=UTC)
        self.not_after = made + timedelta(days=31)
        old = RotatorSigningKey.generate("rsk-1-aa")
        self.answer = PublishedKeys(
            [
                PublishedKey(
                    SIGNER.signing_key_id,
                    SIGNER.verify_key,
                    made,
                    self.not_after,
                    key_self_signature(SIGNER, self.not_after),
                    None,
                    old.signing_key_id,
                    endorse(old, SIGNER.signing_key_id, SIGNER.verify_key, self.not_after),
                )
            ],
            [WithdrawnKey(old.signing_key_id, made + timedelta(days=2))],
        )
        self.old = old

    async def published(self) -> PublishedKeys:
        return self.answer


async def test_verify_keys_answers_the_contract_shape_and_the_api_passes_it_through() -> None:
    signing = FakeSigning()
    rotator = FakeRotator()
    rotator.signing = signing  # type: ignore[attr-defined]

    reply = await _rpc(rotator).verify_keys({})

    [key] = reply["keys"]
    assert set(key) == {
        "signing_key_id",
        "verify_key",
        "fingerprint",
        "created_at",
        "not_after",
        "self_signature",
        "retires_at",
        "endorsed_by",
        "endorsement",
    }
    assert key["not_after"] == "2025-02-01T00:00:00.000000Z"
    not_after, signature = signing.not_after, base64.b64decode(key["self_signature"])
    assert key_self_signature_valid(SIGNER.verify_key, "rsk-2-bb", not_after, signature)
    endorsement = base64.b64decode(key["endorsement"])
    assert endorsement_valid(
        signing.old.verify_key, "rsk-2-bb", SIGNER.verify_key, not_after, endorsement
    )
    assert reply["withdrawn"] == [
        {"signing_key_id": "rsk-1-aa", "withdrawn_at": "2025-01-03T00:00:00.000000Z"}
    ]
    # GET /v1/keys/rotator answers the API's model of it: nothing may be lost on the way.
    assert VerifyKeys.model_validate(reply).model_dump() == reply
