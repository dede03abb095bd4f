"""The API's upload command on the in-memory recorder: the claim and the request land
together or not at all."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from m8.api.handlers import UPLOAD_REQUESTS
from m8.domain import UploadKey, secret_id
from m8.domain.errors import (
    UnknownUploadKey,
    UploadAlreadyRequested,
    UploadKeyExpired,
    UploadKeyMismatch,
    UploadKeyUsed,
)
from tests.unit.memory_world import ALICE, LIFETIME, STORE, World


@pytest.fixture
async def world() -> World:
    created = World()
    await created.add_store()
    return created


async def test_an_upload_claims_its_key_and_is_recorded_as_requested(world: World) -> None:
    signed = await world.issue("team/db")
    command = world.command(signed)
    world.clock.advance(timedelta(minutes=1))
    world.appended.clear()

    await world.commands.request_upload(command, ALICE)

    key = await world.repository.load(UploadKey, command.key_id)
    assert key.claimed_by == command.upload_id
    assert (await world.upload(command)).status == "pending"
    record = await world.recorder.records(UPLOAD_REQUESTS).get(command.upload_id)
    assert record is not None
    assert record["requested_at"] == world.clock.now
    assert record["ciphertext_sha256"] == command.ciphertext_sha256
    # Handed to the outbox once, after the commit; only the request goes to the bus.
    assert world.appended == [["UploadKeyClaimed", "SecretUploadRequested"]]


async def test_the_exact_request_again_changes_nothing_and_another_with_its_id_is_refused(
    world: World,
) -> None:
    signed = await world.issue("team/db")
    command = world.command(signed)
    await world.commands.request_upload(command, ALICE)
    before = [e.event_id async for e in world.recorder.read_all()]

    await world.commands.request_upload(command, ALICE)
    with pytest.raises(UploadAlreadyRequested):
        await world.commands.request_upload(dataclasses.replace(command, path="team/other"), ALICE)

    assert [e.event_id async for e in world.recorder.read_all()] == before


@pytest.mark.parametrize(
    ("later", "refusal"),
    [(LIFETIME, UploadKeyExpired), (LIFETIME - timedelta(seconds=1), None)],
    ids=["at-expiry", "just-before"],
)
async def test_a_key_serves_until_it_expires_by_the_injected_clock(
    world: World, later: timedelta, refusal: type[Exception] | None
) -> None:
    signed = await world.issue("team/db")
    command = world.command(signed)
    world.clock.advance(later)

    if refusal is None:
        await world.commands.request_upload(command, ALICE)
        assert (await world.upload(command)).status == "pending"
        return
    with pytest.raises(refusal):
        await world.commands.request_upload(command, ALICE)
    assert await world.recorder.records(UPLOAD_REQUESTS).get(command.upload_id) is None
    assert (await world.repository.load(UploadKey, command.key_id)).claimed_by is None


async def test_a_refused_claim_leaves_neither_the_claim_nor_the_request(world: World) -> None:
    signed = await world.issue("team/db")
    first = world.command(signed)
    await world.commands.request_upload(first, ALICE)
    second = world.command(signed, b"another value")
    elsewhere = dataclasses.replace(world.command(await world.issue("team/db")), path="team/x")

    with pytest.raises(UploadKeyUsed):
        await world.commands.request_upload(second, ALICE)
    with pytest.raises(UploadKeyMismatch):
        await world.commands.request_upload(elsewhere, ALICE)

    for refused in (second, elsewhere):
        assert await world.recorder.records(UPLOAD_REQUESTS).get(refused.upload_id) is None
    secret = await world.recorder.load("secret", secret_id(STORE, "team/db"))
    assert [e.data["upload_id"] for e in secret] == [first.upload_id]


async def test_an_unknown_key_is_refused_with_where_to_get_one(world: World) -> None:
    command = dataclasses.replace(world.command(await world.issue("team/db")), key_id="nope")

    with pytest.raises(UnknownUploadKey, match="POST /v1/upload-keys"):
        await world.commands.request_upload(command, ALICE)
