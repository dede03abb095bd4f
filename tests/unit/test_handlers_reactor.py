"""A reactor on the in-memory recorder, with a fake upstream store: the key rotator issues
the key and the API's command records the upload, as in production."""

from __future__ import annotations

import asyncio
from base64 import b64decode
from collections.abc import Callable
from datetime import timedelta

import pytest

from m8.crypto import OutcomeReceipt, fingerprint, verify_receipt
from m8.crypto.receipts import ReceiptStatus
from m8.domain import UploadKey
from m8.domain.events import SecretStored, SecretUploadRejected, SecretUploadSuperseded
from m8.eventsourcing import StoredEvent
from m8.messaging import NotNow, PoisonMessage, TransientError
from m8.reactors.path_leases import GIVEN_BACK, PathBusy, Taken
from m8.stores.adapters import TransientUpstreamError
from tests.unit.memory_world import ALICE, LIFETIME, STORE, World


@pytest.fixture
async def world() -> World:
    created = World()
    await created.add_store()
    return created


async def _requested(world: World, path: str = "team/db", value: bytes = b"s3cret") -> StoredEvent:
    command = world.command(await world.issue(path), value)
    return await world.request(command)


async def _outcome(world: World, requested: StoredEvent) -> SecretStored | SecretUploadRejected:
    [*_, last] = await world.recorder.load(requested.aggregate_type, requested.aggregate_id)
    outcome = last.decode()
    assert isinstance(outcome, SecretStored | SecretUploadRejected)
    return outcome


async def test_an_upload_is_written_upstream_once_and_recorded_stored_with_a_receipt(
    world: World,
) -> None:
    requested = await _requested(world, value=b"s3cret")

    await world.reactor.handle(requested)
    await world.reactor.handle(requested)  # a redelivery

    assert world.upstream.values("team/db") == [b"s3cret"]
    outcome = await _outcome(world, requested)
    assert isinstance(outcome, SecretStored)
    assert outcome.upstream_version == "1"
    assert outcome.receipt_signature is not None
    _verify_receipt(world, requested, outcome, "stored", "1", outcome.fingerprint)
    events = await world.events_of(requested.aggregate_type, requested.aggregate_id)
    assert events == ["SecretUploadRequested", "SecretStored"]


async def test_a_transient_upstream_failure_is_retried(world: World) -> None:
    world.upstream.failures = 2
    requested = await _requested(world)

    await world.reactor.handle(requested)

    assert isinstance(await _outcome(world, requested), SecretStored)


@pytest.mark.parametrize(
    ("later", "destroyed", "reason"),
    [
        (LIFETIME, None, "key_expired"),
        (LIFETIME, "expired", "key_expired"),
        (timedelta(0), "rejected", "key_destroyed"),
    ],
    ids=["expired-by-the-clock", "swept-as-expired", "destroyed"],
)
async def test_a_key_that_may_no_longer_serve_rejects_the_upload_with_its_reason(
    world: World, later: timedelta, destroyed: str | None, reason: str
) -> None:
    requested = await _requested(world)
    world.clock.advance(later)
    if destroyed is not None:
        await world.rotator.destroy(requested.data["key_id"], destroyed, ALICE)

    await world.reactor.handle(requested)

    outcome = await _outcome(world, requested)
    assert isinstance(outcome, SecretUploadRejected)
    assert outcome.reason == reason
    assert world.upstream.values("team/db") == []


async def test_a_redelivery_after_the_key_was_used_up_records_what_upstream_holds(
    world: World,
) -> None:
    requested = await _requested(world, value=b"s3cret")
    # An earlier delivery wrote upstream and died before recording it; then the key went.
    fingerprint = "fp1:earlier"
    await world.upstream.put("team/db", b"s3cret", requested.data["upload_id"], fingerprint)
    await world.rotator.destroy(requested.data["key_id"], "used", ALICE)

    await world.reactor.handle(requested)

    outcome = await _outcome(world, requested)
    assert isinstance(outcome, SecretStored)
    assert outcome.fingerprint == fingerprint


async def test_the_outcome_lets_the_rotator_destroy_the_key_as_used(world: World) -> None:
    requested = await _requested(world)
    await world.reactor.handle(requested)
    [*_, stored] = await world.recorder.load(requested.aggregate_type, requested.aggregate_id)

    await world.rotator.on_outcome(stored)

    key = await world.repository.load(UploadKey, requested.data["key_id"])
    assert key.destroyed == "used"


async def test_a_request_the_event_store_does_not_hold_is_poison_and_stores_nothing(
    world: World,
) -> None:
    requested = await _requested(world)
    forged = StoredEvent(**{**requested.__dict__, "event_id": "0" * 24})

    with pytest.raises(PoisonMessage):
        await world.reactor.handle(forged)

    assert world.upstream.values("team/db") == []


async def test_an_older_upload_handled_after_a_newer_one_was_stored_is_superseded(
    world: World,
) -> None:
    older = await _requested(world, value=b"old")
    newer = await _requested(world, value=b"new")

    await world.reactor.handle(newer)
    await world.reactor.handle(older)  # it arrives late: a redelivery, a slower reactor

    assert world.upstream.values("team/db") == [b"new"]
    [*_, last] = await world.recorder.load(older.aggregate_type, older.aggregate_id)
    superseded = last.decode()
    assert isinstance(superseded, SecretUploadSuperseded)
    assert (superseded.upload_id, superseded.superseded_by) == (
        older.data["upload_id"],
        newer.data["upload_id"],
    )
    assert superseded.receipt_signature is not None
    _verify_receipt(world, older, superseded, "superseded", None, None)
    assert (await world.upload_of(older)).status == "superseded"


@pytest.mark.parametrize("recorded", [True, False], ids=["fingerprint-upstream", "none-upstream"])
async def test_an_older_upload_written_before_its_reactor_died_is_stored_not_superseded(
    world: World, recorded: bool
) -> None:
    older = await _requested(world, value=b"old")
    newer = await _requested(world, value=b"new")
    value_fingerprint = fingerprint(b"old", world.fingerprint_key)
    # A reactor wrote the older upload and died before recording it; its lease ran out,
    # and the newer upload was written over it.
    await world.upstream.put(
        "team/db", b"old", older.data["upload_id"], value_fingerprint if recorded else ""
    )
    await world.reactor.handle(newer)

    await world.reactor.handle(older)

    assert world.upstream.values("team/db") == [b"old", b"new"]
    outcome = await _outcome(world, older)
    assert isinstance(outcome, SecretStored)
    assert (outcome.upstream_version, outcome.fingerprint) == ("1", value_fingerprint)
    assert (await world.upload_of(newer)).status == "stored"


async def test_a_newer_upload_handled_after_an_older_one_is_written_over_it(
    world: World,
) -> None:
    older = await _requested(world, value=b"old")
    newer = await _requested(world, value=b"new")

    await world.reactor.handle(older)
    await world.reactor.handle(newer)

    assert world.upstream.values("team/db") == [b"old", b"new"]


async def test_an_upload_waits_while_another_upload_of_its_path_is_being_written(
    world: World,
) -> None:
    older = await _requested(world, value=b"old")
    newer = await _requested(world, value=b"new")
    # Another reactor holds the path for the newer upload and is writing it now.
    other = world.leases.of("another-reactor")
    now = world.clock()
    taken = await other.take(newer.aggregate_id, newer.data["upload_id"], now + LIFETIME, now)
    assert taken == Taken(None)

    waiting = asyncio.create_task(world.reactor.handle(older))
    await _until(lambda: world.leases.refused > 0)
    assert not waiting.done()
    assert world.upstream.values("team/db") == []

    # The holder's upload is written and recorded.
    await world.another_reactor(other).handle(newer)
    async with asyncio.timeout(30):
        await waiting

    # The older one, waiting meanwhile, never lands over the newer value.
    assert world.upstream.values("team/db") == [b"new"]
    assert (await world.upload_of(older)).status == "superseded"


async def test_an_upload_whose_path_another_reactor_holds_too_long_is_put_off_untouched(
    world: World,
) -> None:
    older = await _requested(world, value=b"old")
    newer = await _requested(world, value=b"new")
    other = world.leases.of("another-reactor")
    now = world.clock()
    await other.take(newer.aggregate_id, newer.data["upload_id"], now + LIFETIME, now)
    world.reactor.path_wait = 0.2

    with pytest.raises(PathBusy) as busy:
        await world.reactor.handle(older)

    # Handed back by the consumer (NotNow), uncounted: nothing written, nothing recorded.
    assert isinstance(busy.value, NotNow)
    put_off = world.reactor.metrics.registry.get_sample_value(
        "m8_reactor_uploads_put_off_total", {"store_type": "vault"}
    )
    assert put_off == 1
    assert world.upstream.values("team/db") == []
    assert (await world.upload_of(older)).status == "pending"
    assert world.leases.leases[newer.aggregate_id].holder == newer.data["upload_id"]


async def test_a_delivery_queued_behind_its_path_in_this_process_too_long_is_put_off(
    world: World,
) -> None:
    first = await _requested(world, value=b"first")
    second = await _requested(world, value=b"second")
    writing, release = asyncio.Event(), asyncio.Event()

    async def slow_write() -> None:
        writing.set()
        await release.wait()

    world.upstream.before_put = slow_write
    world.reactor.path_wait = 0.2
    held = asyncio.create_task(world.reactor.handle(first))
    async with asyncio.timeout(30):
        await writing.wait()

    with pytest.raises(PathBusy):
        await world.reactor.handle(second)

    release.set()
    async with asyncio.timeout(30):
        await held
    assert world.upstream.values("team/db") == [b"first"]
    assert (await world.upload_of(second)).status == "pending"
    # Taken again later, it is written over the older value.
    world.upstream.before_put = None
    await world.reactor.handle(second)
    assert world.upstream.values("team/db") == [b"first", b"second"]


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(30):
        while not condition():
            await asyncio.sleep(0.01)


async def test_an_upload_whose_key_expired_while_it_waited_for_its_path_is_never_opened(
    world: World,
) -> None:
    requested = await _requested(world, value=b"late")
    # A holder that died: its lease runs out only after the upload key has expired.
    now = world.clock()
    await world.leases.take(requested.aggregate_id, "a-dead-holder", now + 2 * LIFETIME, now)

    waiting = asyncio.create_task(world.reactor.handle(requested))
    await _until(lambda: world.leases.refused > 0)
    world.clock.advance(3 * LIFETIME)
    async with asyncio.timeout(30):
        await waiting

    outcome = await _outcome(world, requested)
    assert isinstance(outcome, SecretUploadRejected)
    assert outcome.reason == "key_expired"
    assert world.upstream.values("team/db") == []


def _verify_receipt(
    world: World,
    requested: StoredEvent,
    outcome: SecretStored | SecretUploadSuperseded,
    status: ReceiptStatus,
    version: str | None,
    value_fingerprint: str | None,
) -> None:
    """Raises unless the reactor's receipt key signed exactly this outcome of `requested`."""
    assert outcome.receipt_signature is not None
    receipt = OutcomeReceipt(
        outcome.upload_id,
        STORE,
        "team/db",
        status,
        version,
        value_fingerprint,
        requested.data["ciphertext_sha256"],
    )
    verify_receipt(
        receipt,
        world.receipt_key.receipt_key_id,
        b64decode(outcome.receipt_signature),
        {world.receipt_key.receipt_key_id: world.receipt_key.verify_key},
    )


async def test_a_twin_delivery_in_another_reactor_waits_for_the_first_and_writes_nothing(
    world: World,
) -> None:
    requested = await _requested(world, value=b"once")
    writing, finish = asyncio.Event(), asyncio.Event()

    async def hold_the_write() -> None:
        writing.set()
        await finish.wait()

    world.upstream.before_put = hold_the_write
    first = asyncio.create_task(world.reactor.handle(requested))
    await _until(writing.is_set)
    # The same upload again, in another reactor, while the first is writing it.
    other = world.leases.of("another-reactor")
    twin = asyncio.create_task(world.another_reactor(other).handle(requested))
    await _until(lambda: other.refused > 0)
    assert not twin.done()

    finish.set()
    async with asyncio.timeout(30):
        await asyncio.gather(first, twin)

    assert world.upstream.values("team/db") == [b"once"]
    events = await world.events_of(requested.aggregate_type, requested.aggregate_id)
    assert events == ["SecretUploadRequested", "SecretStored"]


async def test_a_holder_whose_lease_was_not_renewed_in_time_writes_nothing_and_gives_it_back(
    world: World,
) -> None:
    requested = await _requested(world, value=b"late")
    lease = world.reactor.lease

    async def stall() -> None:
        # The first attempt fails after so long that the lease may run out during another.
        world.clock.advance(lease.ttl - lease.write_margin + timedelta(seconds=1))
        world.upstream.before_put = None
        raise TransientUpstreamError("slow", store=STORE, path="team/db", action="write")

    world.upstream.before_put = stall
    with pytest.raises(TransientError):
        await world.reactor.handle(requested)

    assert world.upstream.values("team/db") == []
    assert (await world.upload_of(requested)).status == "pending"
    assert world.leases.leases[requested.aggregate_id].until == GIVEN_BACK
    # Handled again, it takes the lease anew and writes.
    await world.reactor.handle(requested)
    assert world.upstream.values("team/db") == [b"late"]


async def test_a_holder_whose_lease_ran_short_before_its_write_request_writes_nothing(
    world: World,
) -> None:
    requested = await _requested(world, value=b"slow")
    lease = world.reactor.lease

    async def slow_reads() -> None:
        # The requests before the write (reads, a write-ahead, logins) used up the lease.
        world.clock.advance(lease.ttl - lease.write_margin + timedelta(seconds=1))
        world.upstream.before_put = None

    world.upstream.before_put = slow_reads
    with pytest.raises(TransientError):
        await world.reactor.handle(requested)

    assert world.upstream.values("team/db") == []
    assert world.leases.leases[requested.aggregate_id].until == GIVEN_BACK
