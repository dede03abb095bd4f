"""Wiring of a reactor process: keys, credentials, adapters, the consumer and metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from m8.crypto import FingerprintKey, KekRing
from m8.messaging import EventConsumer
from m8.messaging.topology import reactor_queue
from m8.reactors import metrics
from m8.reactors.credentials import load_credentials
from m8.reactors.reactor import Reactor
from m8.reactors.retry import RetryPolicy
from m8.reactors.sealed_keys import SealedUploadKeys
from m8.reactors.settings import ReactorSettings
from m8.reactors.stores import STORE_TYPES, AdapterLimits, DevUpstreams, StoreAdapters
from m8.runtime import ConfigurationError, Runtime, service, wait_for_signal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReactorConfig:
    """Everything a reactor needs besides its connections, read and checked up front."""

    store_type: str
    keks: KekRing
    fingerprint_key: FingerprintKey
    stores: StoreAdapters
    retry: RetryPolicy
    concurrency: int


def configure(settings: ReactorSettings, store_type: str) -> ReactorConfig:
    """Reads keys and credentials; ConfigurationError says what is missing or wrong."""
    if store_type not in STORE_TYPES:
        raise ConfigurationError(f"no reactor for store type {store_type!r}: {STORE_TYPES}")
    keks, fingerprint_key = settings.kek_ring(), settings.fingerprint_key()
    stores = StoreAdapters(
        load_credentials(settings),
        AdapterLimits(settings.reactor_upstream_timeout, settings.reactor_upstream_threads),
        DevUpstreams(settings.vault_addr, settings.vault_token, settings.aws_endpoint_url),
    )
    return ReactorConfig(
        store_type,
        keks,
        fingerprint_key,
        stores,
        settings.retry_policy(),
        settings.reactor_concurrency,
    )


async def start(runtime: Runtime, config: ReactorConfig) -> Reactor:
    """Starts consuming `m8.reactor.<store_type>` on the runtime's connections."""
    reactor = Reactor(
        config.store_type,
        runtime.repository,
        SealedUploadKeys(runtime.db),
        config.stores,
        config.keks,
        config.fingerprint_key,
        config.retry,
    )
    queue = reactor_queue(config.store_type)
    consumer = EventConsumer(
        runtime.broker, queue, reactor.handle, runtime.inbox, concurrency=config.concurrency
    )
    await runtime.consume(consumer)
    log.info(
        "reactor consuming",
        extra={
            "queue": queue.name,
            "kek_ids": [kek.kek_id for kek in config.keks],
            "concurrency": config.concurrency,
            "outage_tolerated_seconds": round(config.retry.patience(), 1),
        },
    )
    return reactor


async def run(settings: ReactorSettings, store_type: str) -> None:
    """Runs the reactor of one store type until SIGTERM or SIGINT."""
    config = configure(settings, store_type)
    try:
        async with service(f"reactor-{store_type}", settings) as runtime:
            await start(runtime, config)
            metrics.serve(settings.reactor_metrics_port)
            await wait_for_signal()
    finally:
        # After the runtime closed: its consumers have finished the uploads in hand.
        await config.stores.close()
