"""The API's bootstrap: `create_app(settings)` wires everything; the lifespan runs it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import FastAPI
from prometheus_client import start_http_server

from m8.api import problems
from m8.api.auth import Authenticator
from m8.api.bodylimit import BodySizeLimit
from m8.api.deps import ApiContext
from m8.api.handlers import Commands
from m8.api.limits import Limits
from m8.api.metrics import ApiMetrics, MetricsMiddleware
from m8.api.queries import Queries
from m8.api.read_side import ReadSide
from m8.api.rotator import RotatorClient
from m8.api.routes import health, keys, me, secrets, stores, uploads
from m8.api.settings import ApiSettings
from m8.api.settled import SettledUploads
from m8.messaging import EventConsumer
from m8.messaging.topology import API_PROJECTIONS_QUEUE
from m8.runtime import Runtime

log = logging.getLogger(__name__)


def create_app(settings: ApiSettings) -> FastAPI:
    """The API as an ASGI app; its lifespan connects to MongoDB and RabbitMQ."""
    # Built now, so that a bad token file or OIDC setup stops the process at once.
    authenticator = Authenticator.from_settings(settings)
    metrics = ApiMetrics()
    limits = Limits.share_of(
        settings.api_replicas,
        upload_keys_per_minute=settings.api_upload_keys_per_minute,
        uploads_per_minute=settings.api_uploads_per_minute,
        long_polls=settings.api_long_polls_per_caller,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await Runtime.start("api", settings)
        try:
            rotator = RotatorClient(runtime.broker, settings.api_rpc_timeout)
            await rotator.start()
            queries = Queries(runtime.db, settings.api_replicas)
            await queries.create_indexes()
            runtime.spawn(queries.settled.run())
            runtime.spawn(metrics.watch_pending_uploads(runtime.db, runtime.recorder))
            await _start_read_side(runtime, queries.settled)
            app.state.api = ApiContext(
                settings=settings,
                runtime=runtime,
                authenticator=authenticator,
                rotator=rotator,
                commands=Commands(runtime.repository),
                queries=queries,
                metrics=metrics,
                limits=limits,
            )
            with _reload_on_sighup(authenticator), _metrics_server(settings, metrics):
                yield
        finally:
            await runtime.close()

    app = FastAPI(
        title="m8 secrets API",
        version="1",
        description="Put secrets into upstream stores; m8 never sees their values.",
        lifespan=lifespan,
        # Public documents map the attack surface: only where an operator asks for them.
        docs_url="/docs" if settings.api_public_docs else None,
        redoc_url="/redoc" if settings.api_public_docs else None,
        openapi_url="/openapi.json" if settings.api_public_docs else None,
    )
    problems.install(app, retry_after=settings.api_retry_after_seconds)
    # The routes themselves, not routers included: the app's router then lists every
    # route, which a 405's Allow header needs (problems.allowed_methods). Metrics are
    # served on their own port only (M8_API_METRICS_PORT): what the API's port answers is
    # what the public may reach.
    for module in (health, stores, keys, uploads, secrets, me):
        app.router.routes.extend(module.router.routes)
    app.add_middleware(BodySizeLimit, limit=settings.api_max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: sees every answer
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        return problems.add_schemas(generate())

    app.openapi = openapi  # type: ignore[method-assign]
    return app


@contextlib.contextmanager
def _reload_on_sighup(authenticator: Authenticator) -> Iterator[None]:
    """SIGHUP reads the token file again (an operator's explicit "revoke now")."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, authenticator.reload)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
        log.info("SIGHUP cannot be handled here; the token file is still read when it changes")
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


@contextlib.contextmanager
def _metrics_server(settings: ApiSettings, metrics: ApiMetrics) -> Iterator[None]:
    """/metrics on its own port (M8_API_METRICS_PORT), so the API's port never serves it."""
    if settings.api_metrics_port is None:
        yield
        return
    server, thread = start_http_server(
        settings.api_metrics_port, settings.api_host, registry=metrics.registry
    )
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def _start_read_side(runtime: Runtime, settled: SettledUploads) -> None:
    """Catches the read models up with this version (once, after an upgrade), then
    consumes events into them, redacts ciphertexts and wakes the long-polls here."""
    read_side = ReadSide(runtime.recorder, settled.wake)
    if await read_side.read_models.catch_up():
        log.info("read models caught up with this version")
    # No inbox: projections are idempotent by construction, and so is redaction.
    consumer = EventConsumer(runtime.broker, API_PROJECTIONS_QUEUE, read_side.handle, inbox=None)
    await runtime.consume(consumer)
