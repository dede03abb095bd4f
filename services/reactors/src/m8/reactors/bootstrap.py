"""Wiring of a reactor process: keys, credentials, adapters, the consumer, and its operations
port (metrics and probes)."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from m8 import stores
from m8.crypto import FingerprintKey, KekRing, ReceiptKeyFile, encode_verify_key
from m8.crypto.encoding import b64encode
from m8.eventstore.mongo import Document
from m8.health import serve_health
from m8.messaging import EventConsumer
from m8.messaging.permissions import reactor_service
from m8.messaging.topology import reactor_queue
from m8.reactors.credentials import load_credentials
from m8.reactors.metrics import ReactorMetrics
from m8.reactors.path_leases import LeaseTerms, PathLeases
from m8.reactors.reactor import PATH_WAIT, Reactor
from m8.reactors.retry import RetryPolicy
from m8.reactors.sealed_keys import SealedUploadKeys
from m8.reactors.settings import ReactorSettings
from m8.reactors.stores import DevUpstreams, StoreAdapters
from m8.runtime import ConfigurationError, Runtime, service, wait_for_signal
from m8.stores.adapters import AdapterLimits, adapter_factory

log = logging.getLogger(__name__)

# The reactors' receipt verify keys, which the API lists at GET /v1/keys/receipts.
RECEIPT_KEYS = "receipt_keys"


@dataclass(frozen=True)
class ReactorConfig:
    """Everything a reactor needs besides its connections, read and checked up front."""

    store_type: str
    keks: KekRing
    fingerprint_key: FingerprintKey
    stores: StoreAdapters
    retry: RetryPolicy
    concurrency: int
    receipt_key: ReceiptKeyFile
    # How long an upload holds its path without renewing it, and how a write checks it.
    lease: LeaseTerms
    # How long a delivery waits for its path before it goes back to its queue.
    path_wait: float = PATH_WAIT


def configure(settings: ReactorSettings, store_type: str) -> ReactorConfig:
    """Reads keys and credentials; ConfigurationError says what is missing or wrong."""
    if store_type not in stores.names():
        raise ConfigurationError(f"no reactor for store type {store_type!r}: {stores.names()}")
    try:
        # Now, not at the first upload: an install without the type's SDK must not start.
        adapter_factory(stores.get(store_type))
    except ImportError as exc:
        raise ConfigurationError(
            f"the {store_type} adapter cannot be loaded ({exc.name or exc}): install "
            f"m8-stores[{store_type}]"
        ) from None
    keks, fingerprint_key = settings.kek_ring(), settings.fingerprint_key()
    receipt_key = settings.receipt_key()
    adapters = StoreAdapters(
        load_credentials(settings),
        AdapterLimits(settings.reactor_upstream_timeout, settings.reactor_upstream_threads),
        dev_upstreams(settings),
    )
    retry = settings.retry_policy()
    lease = LeaseTerms.for_upstream_timeout(settings.reactor_upstream_timeout)
    return ReactorConfig(
        store_type,
        keks,
        fingerprint_key,
        adapters,
        retry,
        settings.reactor_concurrency,
        receipt_key,
        lease,
        settings.reactor_path_wait_seconds,
    )


def dev_upstreams(settings: ReactorSettings) -> DevUpstreams:
    """Where the developer's shell points each store type's local server (VAULT_ADDR & co.)."""
    found: dict[str, str] = {}
    for store_type in stores.all_types():
        dev = store_type.dev
        for variable in (dev.address_variable, dev.login_variable) if dev else ():
            value = settings.upstream_variable(variable) if variable else None
            if variable and value is not None:
                found[variable] = value
    return found


async def register_receipt_key(
    db: AsyncDatabase[Document], key_file: ReceiptKeyFile, store_type: str
) -> None:
    """Publishes the receipt verify key in `receipt_keys` (for m8ctl to pin and check).

    ConfigurationError if its id is registered with another verify key: a receipt under
    that id must name one key only, or a client could not tell whose it is.
    """
    key = key_file.key
    collection = db[RECEIPT_KEYS]
    verify_key = encode_verify_key(key.verify_key)
    endorsement = None if key_file.endorsement is None else b64encode(key_file.endorsement)
    for _ in range(2):  # a twin reactor may insert the same key between our two steps
        try:
            # The filter holds the verify key: a document under this id with another key
            # does not match, so the upsert's insert fails on the duplicate id.
            await collection.update_one(
                {"_id": key.receipt_key_id, "verify_key": verify_key},
                {
                    "$setOnInsert": {
                        "endorsed_by": key_file.endorsed_by,
                        "endorsement": endorsement,
                        "registered_at": datetime.now(UTC),
                    },
                    "$addToSet": {"store_types": store_type},
                },
                upsert=True,
            )
            return
        except DuplicateKeyError:
            found = await collection.find_one({"_id": key.receipt_key_id})
            if found is not None and found.get("verify_key") != verify_key:
                raise ConfigurationError(
                    f"receipt key id {key.receipt_key_id!r} is registered with another verify "
                    "key; give this reactor that key's file, or make a new key under a new id "
                    "(m8 keys generate-receipt-key --id NEW_ID --out FILE --endorse-with OLD_FILE)"
                ) from None
    raise ConfigurationError(f"could not register receipt key {key.receipt_key_id!r}")


async def start(runtime: Runtime, config: ReactorConfig) -> Reactor:
    """Starts consuming `m8.reactor.<store_type>` on the runtime's connections."""
    # Before any outcome: a receipt must never name a key that clients cannot find.
    await register_receipt_key(runtime.db, config.receipt_key, config.store_type)
    reactor = Reactor(
        config.store_type,
        runtime.repository,
        SealedUploadKeys(runtime.db),
        config.stores,
        config.keks,
        config.fingerprint_key,
        config.retry,
        config.receipt_key.key,
        # Owned by this reactor, not the process: tests run two reactors in one.
        PathLeases(
            runtime.db,
            f"{runtime.name}@{socket.gethostname()}:{os.getpid()}/{uuid.uuid4().hex[:8]}",
        ),
        config.lease,
        # Its own too: two reactors in one process count apart.
        ReactorMetrics(),
        path_wait=config.path_wait,
    )
    queue = reactor_queue(config.store_type)
    # No inbox: a repeat finds the outcome recorded in the Secret and does nothing, and the
    # upstream write is idempotent by upload id for a repeat that overtakes the outcome.
    consumer = EventConsumer(
        runtime.broker, queue, reactor.handle, inbox=None, concurrency=config.concurrency
    )
    await runtime.consume(consumer)
    log.info(
        "reactor consuming",
        extra={
            "queue": queue.name,
            "kek_ids": [kek.kek_id for kek in config.keks],
            "receipt_key_id": config.receipt_key.key.receipt_key_id,
            "concurrency": config.concurrency,
            "outage_tolerated_seconds": round(config.retry.patience(), 1),
        },
    )
    return reactor


async def run(settings: ReactorSettings, store_type: str) -> None:
    """Runs the reactor of one store type until SIGTERM or SIGINT."""
    config = configure(settings, store_type)
    try:
        async with service(reactor_service(store_type), settings) as runtime:
            reactor = await start(runtime, config)
            async with serve_health(
                runtime,
                reactor.metrics.registry,
                settings.reactor_metrics_host,
                settings.reactor_metrics_port,
            ):
                await wait_for_signal()
    finally:
        # After the runtime closed: its consumers have finished the uploads in hand.
        await config.stores.close()
