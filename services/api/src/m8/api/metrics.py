"""Prometheus metrics of the API, labelled by route template (never by a path's values),
by store type or by service: never by a path, an id or anything of a value.

Besides the requests: the uploads still pending (from `rm_uploads`, refreshed by
`ApiMetrics.watch_pending_uploads` every 15 s) and the outbox relay's lag
(`m8.health.outbox_lag`, as the reactors and the key rotator export it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from m8 import stores
from m8.api.projections import UPLOADS
from m8.domain import CATALOG_ID, StoreCatalog
from m8.eventsourcing import EventRecorder, EventStoreUnavailable
from m8.health import outbox_lag

log = logging.getLogger(__name__)

PENDING_REFRESH_SECONDS = 15.0
# A store no longer in the catalog (it never leaves it; a hand-edited event store).
UNKNOWN_STORE_TYPE = "unknown"


@dataclass(frozen=True)
class PendingUploads:
    """Uploads of one store type accepted and not yet settled: how many, and when the
    oldest was requested (None: none)."""

    count: int
    oldest: datetime | None

    def oldest_age(self, now: datetime) -> float:
        """Seconds the oldest has waited (0 when there is none)."""
        return max((now - self.oldest).total_seconds(), 0.0) if self.oldest else 0.0


async def create_pending_index(db: AsyncDatabase[Any]) -> None:
    """The index `pending_uploads` reads (idempotent)."""
    await db[UPLOADS].create_index(
        [("status", ASCENDING), ("requested_at", ASCENDING)], name="status_requested_at"
    )


async def pending_uploads(
    db: AsyncDatabase[Any], recorder: EventRecorder
) -> dict[str, PendingUploads]:
    """Pending uploads by store type (every registered store type, 0 when none): one
    aggregate over the pending documents of `rm_uploads`, and the store catalog."""
    pipeline: list[dict[str, Any]] = [
        {"$match": {"status": "pending"}},
        {"$group": {"_id": "$store", "count": {"$sum": 1}, "oldest": {"$min": "$requested_at"}}},
    ]
    try:
        by_store = [doc async for doc in await db[UPLOADS].aggregate(pipeline)]
    except PyMongoError as exc:
        raise EventStoreUnavailable(f"MongoDB failed ({type(exc).__name__})") from exc
    catalog = StoreCatalog.replay(
        CATALOG_ID,
        (e.decode() for e in await recorder.load(StoreCatalog.aggregate_type, CATALOG_ID)),
    )
    found = {store_type: PendingUploads(0, None) for store_type in stores.names()}
    for doc in by_store:
        known = catalog.stores.get(str(doc["_id"]))
        store_type = known.store_type if known else UNKNOWN_STORE_TYPE
        before = found.get(store_type, PendingUploads(0, None))
        oldest = min((t for t in (before.oldest, doc["oldest"]) if t is not None), default=None)
        found[store_type] = PendingUploads(before.count + int(doc["count"]), oldest)
    return found


_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class ApiMetrics:
    """The API's own registry, so that several apps in one process do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "m8_api_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "m8_api_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            registry=self.registry,
        )
        self.uploads_pending = Gauge(
            "m8_uploads_pending",
            "Uploads accepted with no outcome yet, by store type (refreshed every 15 s).",
            ["store_type"],
            registry=self.registry,
        )
        self.uploads_oldest_pending_age = Gauge(
            "m8_uploads_oldest_pending_age_seconds",
            "How long the oldest pending upload of a store type has waited (0: none).",
            ["store_type"],
            registry=self.registry,
        )
        self.registry.register(outbox_lag())

    async def refresh_pending_uploads(
        self, db: AsyncDatabase[Any], recorder: EventRecorder
    ) -> None:
        """Sets the pending-upload gauges from `rm_uploads` now."""
        now = datetime.now(UTC)
        for store_type, pending in (await pending_uploads(db, recorder)).items():
            self.uploads_pending.labels(store_type).set(pending.count)
            self.uploads_oldest_pending_age.labels(store_type).set(pending.oldest_age(now))

    async def watch_pending_uploads(
        self,
        db: AsyncDatabase[Any],
        recorder: EventRecorder,
        interval: float = PENDING_REFRESH_SECONDS,
    ) -> None:
        """Refreshes the pending-upload gauges every `interval` seconds until cancelled;
        a failed refresh is logged and leaves the last values."""
        with contextlib.suppress(PyMongoError):
            await create_pending_index(db)
        while True:
            try:
                await self.refresh_pending_uploads(db, recorder)
            except (EventStoreUnavailable, PyMongoError) as exc:
                log.warning("could not count pending uploads: %s", type(exc).__name__)
            except Exception:
                log.exception("counting pending uploads failed unexpectedly")
            await asyncio.sleep(interval)


class MetricsMiddleware:
    """Counts and times every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            # The router leaves the matched route in the scope; its path is the template.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.duration.labels(method, route).observe(time.perf_counter() - started)
