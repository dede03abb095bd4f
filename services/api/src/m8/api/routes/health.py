"""Liveness and readiness for orchestrators (metrics have a port of their own: m8.api.app)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from m8.api.deps import Api
from m8.api.models import Health, Readiness
from m8.api.problems import Unavailable, responses
from m8.eventsourcing import EventStoreUnavailable
from m8.eventstore import mongo_errors

router = APIRouter(tags=["operations"])
READY_TIMEOUT = 2.0


@router.get("/healthz")
async def healthz() -> Health:
    """The process is up."""
    return Health()


@router.get("/readyz", responses=responses(503))
async def readyz(api: Api) -> Readiness:
    """MongoDB answers and the broker connection is open."""
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            with mongo_errors():
                await api.runtime.db.command("ping")
    except (EventStoreUnavailable, TimeoutError):
        raise Unavailable("MongoDB does not answer") from None
    # A robust connection clears `connected` while it reconnects.
    if not api.runtime.broker.connection.connected.is_set():
        raise Unavailable("the connection to RabbitMQ is down")
    return Readiness(checks={"mongodb": "ok", "broker": "ok"})
