"""Wiring of the key rotator: its keys, stores, RPC server, consumer, loops and operations
port (metrics and probes)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from m8.domain import CATALOG_ID, StoreCatalog
from m8.eventstore.mongo import Document, connect_database
from m8.health import serve_health
from m8.keyrotator.keks import KekPublicKeys
from m8.keyrotator.master_key import MasterKeys
from m8.keyrotator.rpc import RotatorRpc
from m8.keyrotator.service import KeyRotator, every
from m8.keyrotator.settings import KeyRotatorSettings
from m8.keyrotator.signing_keys import Resealed, SigningKeys
from m8.keyrotator.upload_keys import (
    BACKSTOP,
    COLLECTION,
    LIVE_COLLECTION,
    UploadKeyStore,
)
from m8.messaging import EventConsumer, RpcServer
from m8.messaging.topology import KEYROTATOR_QUEUE, RPC_KEYROTATOR_QUEUE
from m8.runtime import ConfigurationError, Runtime, service, wait_for_signal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RotatorKeys:
    """The keys the rotator needs from its operator, read before anything connects."""

    keks: KekPublicKeys
    masters: MasterKeys

    @classmethod
    def load(cls, settings: KeyRotatorSettings) -> RotatorKeys:
        """Reads them; ConfigurationError says what to set."""
        return cls(
            KekPublicKeys.load(settings.keyrotator_kek_files), MasterKeys.from_settings(settings)
        )


async def start(runtime: Runtime, settings: KeyRotatorSettings, keys: RotatorKeys) -> KeyRotator:
    """Starts the rotator on `runtime`; it stops when the runtime closes."""
    await create_upload_key_indexes(runtime.db)
    upload_keys = UploadKeyStore(runtime.recorder)
    lifetime = settings.keyrotator_upload_key_lifetime
    signing = signing_keys(runtime.db, settings, keys.masters)
    await signing.create_indexes()
    await signing.current()  # fails now, not at the first request, if the master key is wrong
    rotator = KeyRotator(runtime.repository, upload_keys, signing, keys.keks, lifetime)
    await _warn_of_missing_keks(rotator)
    await runtime.consume(
        RpcServer(runtime.broker, RPC_KEYROTATOR_QUEUE, RotatorRpc(rotator).procedures())
    )
    # No inbox: destroying a key twice destroys it once (the aggregate says it is gone).
    await runtime.consume(
        EventConsumer(runtime.broker, KEYROTATOR_QUEUE, rotator.on_outcome, inbox=None)
    )
    interval = settings.keyrotator_sweep_interval
    runtime.spawn(every(interval, rotator.sweep, "upload key sweep"))
    runtime.spawn(every(interval, signing.maintain, "signing key rotation"))
    return rotator


async def create_upload_key_indexes(db: AsyncDatabase[Document]) -> None:
    """The expiry indexes the sweep scans; the one on `upload_keys` is the TTL backstop
    (m8.keyrotator.upload_keys says why it fires late)."""
    await db[COLLECTION].create_index(
        "expires_at", expireAfterSeconds=int(BACKSTOP.total_seconds()), name="expiry"
    )
    await db[LIVE_COLLECTION].create_index("expires_at", name="expiry")


def signing_keys(
    db: AsyncDatabase[Document], settings: KeyRotatorSettings, masters: MasterKeys
) -> SigningKeys:
    """The signing keys as the settings shape them (the rotator and `m8 keys` share this)."""
    return SigningKeys(
        db,
        masters,
        period=settings.keyrotator_signing_key_period,
        retention=settings.keyrotator_upload_key_lifetime + settings.keyrotator_signing_key_overlap,
    )


async def reseal_signing_keys(settings: KeyRotatorSettings) -> Resealed:
    """`m8 keys rotate-master-key`: re-seals the stored signing keys under the newest master
    key of the rotator's settings. ConfigurationError says what to set."""
    masters = MasterKeys.from_settings(settings)
    if not settings.mongodb_uri:
        raise ConfigurationError("M8_MONGODB_URI is not set: where is MongoDB?")
    db = await connect_database(settings.mongodb_uri, settings.mongodb_database)
    try:
        return await signing_keys(db, settings, masters).reseal()
    except PyMongoError as exc:
        raise ConfigurationError(f"cannot reach MongoDB ({type(exc).__name__})") from None
    finally:
        await db.client.close()


async def run(settings: KeyRotatorSettings) -> None:
    """`m8 keyrotator`: serves until SIGTERM or SIGINT."""
    keys = RotatorKeys.load(settings)
    async with service("keyrotator", settings) as runtime:
        rotator = await start(runtime, settings, keys)
        async with serve_health(
            runtime,
            rotator.metrics.registry,
            settings.keyrotator_metrics_host,
            settings.keyrotator_metrics_port,
        ):
            await wait_for_signal()


async def _warn_of_missing_keks(rotator: KeyRotator) -> None:
    catalog = await rotator.repository.load(StoreCatalog, CATALOG_ID)
    missing = {s.store_type for s in catalog.stores.values()} - rotator.keks.store_types
    if missing:
        log.warning(
            "no KEK for some registered store types: uploads to them are refused",
            extra={"store_types": sorted(missing)},
        )
