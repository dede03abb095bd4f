"""The key rotator counts what it does: keys issued and destroyed (by reason), sweeps, and
RPC requests by outcome; an operator sees it on its metrics port."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.exposition import generate_latest

from m8.eventsourcing import EventStoreUnavailable
from m8.keyrotator.metrics import KeyRotatorMetrics
from m8.keyrotator.rpc import RotatorRpc
from m8.messaging import RpcError
from tests.unit.memory_world import ALICE, LIFETIME, STORE, World


@pytest.fixture
async def world() -> World:
    created = World()
    await created.add_store()
    return created


def sample(metrics: KeyRotatorMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_issued_keys_are_counted_by_store(world: World) -> None:
    await world.issue("team/db")
    await world.issue("team/web")

    issued = sample(
        world.rotator.metrics,
        "m8_keyrotator_upload_keys_issued_total",
        store_type="vault",
        store=STORE,
    )
    assert issued == 2


async def test_a_key_destroyed_twice_is_counted_once_by_its_reason(world: World) -> None:
    key_id = (await world.issue("team/db")).statement.key_id

    await world.rotator.destroy(key_id, "rejected", ALICE)
    await world.rotator.destroy(key_id, "used", ALICE)

    metrics = world.rotator.metrics
    name = "m8_keyrotator_upload_keys_destroyed_total"
    assert sample(metrics, name, reason="rejected") == 1
    assert sample(metrics, name, reason="used") == 0


async def test_the_sweep_counts_its_passes_and_the_keys_it_expired(world: World) -> None:
    await world.issue("team/db")
    await world.issue("team/web")
    world.clock.advance(LIFETIME)

    assert await world.rotator.sweep() == 2
    assert await world.rotator.sweep() == 0

    metrics = world.rotator.metrics
    assert sample(metrics, "m8_keyrotator_upload_keys_destroyed_total", reason="expired") == 2
    assert sample(metrics, "m8_keyrotator_sweeps_total", outcome="ok") == 2


async def test_a_failed_sweep_is_counted_as_failed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unavailable(now: object, batch: int) -> list[str]:
        raise EventStoreUnavailable("MongoDB failed (AutoReconnect)")

    monkeypatch.setattr(world.upload_keys, "expired", unavailable)

    with pytest.raises(EventStoreUnavailable):
        await world.rotator.sweep()

    metrics = world.rotator.metrics
    assert sample(metrics, "m8_keyrotator_sweeps_total", outcome="failed") == 1
    assert sample(metrics, "m8_keyrotator_sweeps_total", outcome="ok") == 0


async def test_rpc_requests_are_counted_by_procedure_and_outcome(world: World) -> None:
    procedures = RotatorRpc(world.rotator).procedures()
    issue = procedures["issue_upload_key"]

    await issue({"store": STORE, "path": "team/db", "actor": "alice"})
    for refused in (
        {"store": "nowhere", "path": "team/db", "actor": "alice"},
        {"path": "team/db"},
    ):
        with pytest.raises(RpcError):
            await issue(refused)

    metrics, name = world.rotator.metrics, "m8_keyrotator_rpc_requests_total"
    assert sample(metrics, name, procedure="issue_upload_key", outcome="ok") == 1
    assert sample(metrics, name, procedure="issue_upload_key", outcome="unknown_store") == 1
    assert sample(metrics, name, procedure="issue_upload_key", outcome="bad_request") == 1


async def test_the_metrics_name_no_path_key_or_actor(world: World) -> None:
    key_id = (await world.issue("team/secret-path")).statement.key_id
    await world.rotator.destroy(key_id, "used", ALICE)
    world.clock.advance(timedelta(hours=1))
    await world.rotator.sweep()

    text = generate_latest(world.rotator.metrics.registry).decode()

    assert "m8_outbox_unpublished_events" in text  # the relay lag, beside its own
    for private in ("team/secret-path", key_id, "alice"):
        assert private not in text
