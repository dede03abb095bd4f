"""`m8 admin redrive` judges each dead letter by the event store: what would fail again
for the same reason stays in the dead-letter queue."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from m8.api.admin import UnknownQueue, queue_spec, refusal
from m8.domain.events import (
    SecretStored,
    SecretStoreFailed,
    SecretUploadRequested,
    UploadKeyClaimed,
    UploadKeyDestroyed,
    UploadKeyIssued,
)
from m8.eventsourcing import Metadata, StoredEvent
from m8.eventsourcing.memory import InMemoryEventRecorder
from m8.messaging.broker import message_body

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EXPIRES = T0 + timedelta(minutes=15)
META = Metadata(actor="alice", correlation_id="corr-admin")
COMMON = {"upload_id": "u-1", "store": "vault-a", "store_type": "vault", "path": "team/db"}


async def _world() -> tuple[InMemoryEventRecorder, StoredEvent]:
    """A recorded upload request whose key is claimed, and the message of its event."""
    recorder = InMemoryEventRecorder()
    issued = UploadKeyIssued(
        "k-1", "vault-a", "vault", "team/db", "kek-1", "rsk-1", EXPIRES.isoformat()
    )
    await recorder.append("upload_key", "k-1", 0, [issued, UploadKeyClaimed("k-1", "u-1")], META)
    request = SecretUploadRequested(
        **COMMON,
        key_id="k-1",
        client_public_key="cpk",
        nonce="n",
        ciphertext="c",
        ciphertext_sha256="0" * 64,
        requested_by="alice",
    )
    [event] = await recorder.append("secret", "vault-a:team/db", 0, [request], META)
    return recorder, event


def _body(event: StoredEvent) -> bytes:
    return json.dumps(message_body(event)).encode()


async def test_a_failed_upload_with_a_live_key_may_go_back() -> None:
    recorder, event = await _world()
    failed = SecretStoreFailed(**COMMON, reason="upstream_unavailable", detail="d")
    await recorder.append("secret", "vault-a:team/db", 1, [failed], META)
    found, reason = await refusal(recorder, _body(event), T0 + timedelta(minutes=1))
    assert reason is None
    assert found is not None
    assert found.event_id == event.event_id


async def test_an_upload_whose_key_expired_is_refused_before_and_after_the_sweep() -> None:
    recorder, event = await _world()
    _, reason = await refusal(recorder, _body(event), EXPIRES + timedelta(seconds=1))
    assert reason == "key_expired"
    await recorder.append("upload_key", "k-1", 2, [UploadKeyDestroyed("k-1", "expired")], META)
    _, reason = await refusal(recorder, _body(event), T0)
    assert reason == "key_expired"


async def test_an_upload_whose_key_was_destroyed_is_refused() -> None:
    recorder, event = await _world()
    await recorder.append("upload_key", "k-1", 2, [UploadKeyDestroyed("k-1", "rejected")], META)
    _, reason = await refusal(recorder, _body(event), T0)
    assert reason == "key_destroyed"


async def test_an_upload_already_stored_is_refused() -> None:
    recorder, event = await _world()
    stored = SecretStored(**COMMON, upstream_version="1", fingerprint="fp1:x")
    await recorder.append("secret", "vault-a:team/db", 1, [stored], META)
    _, reason = await refusal(recorder, _body(event), T0)
    assert reason == "already_stored"


async def test_an_event_the_store_does_not_hold_and_a_broken_body_are_refused() -> None:
    recorder, event = await _world()
    forged = StoredEvent.new("secret", "vault-a:team/other", 1, event.decode(), META)
    _, reason = await refusal(recorder, _body(forged), T0)
    assert reason == "not_recorded"
    found, reason = await refusal(recorder, b"{not json", T0)
    assert (found, reason) == (None, "undecodable")


def test_a_queue_is_named_by_itself_or_its_dead_letter_queue() -> None:
    assert queue_spec("m8.reactor.vault").name == "m8.reactor.vault"
    assert queue_spec("m8.dead.reactor.vault").name == "m8.reactor.vault"
    assert queue_spec("m8.dead.keyrotator").name == "m8.keyrotator"
    with pytest.raises(UnknownQueue, match=r"m8\.reactor\.vault"):
        queue_spec("m8.rpc.keyrotator")
