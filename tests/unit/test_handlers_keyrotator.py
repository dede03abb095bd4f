"""The key rotator's handlers (issue, destroy, the outcome consumer, the sweep) on the
in-memory recorder."""

from __future__ import annotations

from datetime import timedelta

import pytest

from m8.domain import UploadKey
from m8.domain.errors import UnknownStore
from m8.domain.events import SecretStored, SecretUploadSuperseded
from m8.eventsourcing import DomainEvent, StoredEvent
from m8.keyrotator.upload_keys import COLLECTION, LIVE_COLLECTION
from m8.messaging import PoisonMessage
from tests.unit.memory_world import ALICE, LIFETIME, STORE, T0, World


@pytest.fixture
async def world() -> World:
    created = World()
    await created.add_store()
    return created


async def test_an_issued_key_is_stored_sealed_with_its_issue_event_and_expires_by_the_clock(
    world: World,
) -> None:
    world.appended.clear()
    signed = await world.issue("team/db")
    key_id = signed.statement.key_id

    sealed = await world.recorder.records(COLLECTION).get(key_id)
    assert sealed is not None
    assert (sealed["store"], sealed["path"], sealed["kek_id"]) == (STORE, "team/db", "vault-1")
    assert "private" not in str(sealed).replace("sealed_private_key", "")
    assert await world.recorder.records(LIVE_COLLECTION).get(key_id) is not None
    assert await world.events_of("upload_key", key_id) == ["UploadKeyIssued"]
    assert signed.statement.expires_at == T0 + LIFETIME
    assert world.appended == [["UploadKeyIssued"]]  # once, after the commit


async def test_a_key_for_an_unknown_store_is_refused_and_nothing_is_kept(world: World) -> None:
    with pytest.raises(UnknownStore):
        await world.issue("team/db", store="nowhere")

    assert world.recorder.state.collections.get(COLLECTION, {}) == {}
    assert [e async for e in world.recorder.read_all(aggregate_type="upload_key")] == []


async def test_destroying_a_key_deletes_it_and_records_so_once(world: World) -> None:
    key_id = (await world.issue("team/db")).statement.key_id

    assert await world.rotator.destroy(key_id, "rejected", ALICE)
    assert not await world.rotator.destroy(key_id, "used", ALICE)

    assert await world.recorder.records(COLLECTION).get(key_id) is None
    assert await world.recorder.records(LIVE_COLLECTION).get(key_id) is None
    key = await world.repository.load(UploadKey, key_id)
    assert key.destroyed == "rejected"
    assert await world.events_of("upload_key", key_id) == [
        "UploadKeyIssued",
        "UploadKeyDestroyed",
    ]


async def test_the_sweep_destroys_exactly_the_keys_past_their_expiry(world: World) -> None:
    old = (await world.issue("team/old")).statement.key_id
    world.clock.advance(timedelta(minutes=10))
    young = (await world.issue("team/young")).statement.key_id

    world.clock.advance(LIFETIME - timedelta(minutes=5))  # `old` expires just now
    assert await world.rotator.sweep() == 1
    assert await world.rotator.sweep() == 0

    assert (await world.repository.load(UploadKey, old)).destroyed == "expired"
    assert (await world.repository.load(UploadKey, young)).destroyed is None
    assert await world.recorder.records(COLLECTION).get(young) is not None


@pytest.mark.parametrize(("outcome", "reason"), [("stored", "used"), ("superseded", "superseded")])
async def test_a_recorded_final_outcome_destroys_the_key_of_its_upload_for_its_reason(
    world: World, outcome: str, reason: str
) -> None:
    signed = await world.issue("team/db")
    command = world.command(signed)
    requested = await world.request(command)
    event: DomainEvent = {
        "stored": SecretStored(command.upload_id, STORE, "vault", "team/db", "1", "fp1:x"),
        "superseded": SecretUploadSuperseded(command.upload_id, STORE, "vault", "team/db", "u-2"),
    }[outcome]
    [recorded] = await world.recorder.append(
        "secret", requested.aggregate_id, requested.version, [event], ALICE
    )

    await world.rotator.on_outcome(recorded)

    key = await world.repository.load(UploadKey, signed.statement.key_id)
    assert key.destroyed == reason


async def test_an_outcome_the_event_store_does_not_hold_destroys_nothing(world: World) -> None:
    signed = await world.issue("team/db")
    command = world.command(signed)
    requested = await world.request(command)
    forged = StoredEvent.new(
        "secret",
        requested.aggregate_id,
        requested.version + 1,
        SecretStored(command.upload_id, STORE, "vault", "team/db", "1", "fp1:x"),
        ALICE,
    )

    with pytest.raises(PoisonMessage):
        await world.rotator.on_outcome(forged)

    assert (await world.repository.load(UploadKey, signed.statement.key_id)).destroyed is None
