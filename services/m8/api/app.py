"""The API's bootstrap: `create_app(settings)` wires everything; the lifespan runs it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from m8.api import problems
from m8.api.auth import Authenticator
from m8.api.bodylimit import BodySizeLimit
from m8.api.deps import ApiContext
from m8.api.handlers import Commands
from m8.api.metrics import ApiMetrics, MetricsMiddleware
from m8.api.projections import SecretReadModels, UploadKeysProjection
from m8.api.queries import Queries
from m8.api.redaction import CiphertextRedactor
from m8.api.rotator import RotatorClient
from m8.api.routes import health, keys, secrets, stores, uploads
from m8.api.settings import ApiSettings
from m8.eventsourcing import StoredEvent
from m8.eventstore import ProjectionRunner
from m8.messaging import EventConsumer, Handler
from m8.messaging.topology import API_PROJECTIONS_QUEUE
from m8.runtime import Runtime


def create_app(settings: ApiSettings) -> FastAPI:
    """The API as an ASGI app; its lifespan connects to MongoDB and RabbitMQ."""
    # Built now, so that a bad token file or OIDC setup stops the process at once.
    authenticator = Authenticator.from_settings(settings)
    metrics = ApiMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await Runtime.start("api", settings)
        try:
            rotator = RotatorClient(runtime.broker, settings.api_rpc_timeout)
            await rotator.start()
            queries = Queries(runtime.db)
            await queries.create_indexes()
            await runtime.consume(
                EventConsumer(
                    runtime.broker, API_PROJECTIONS_QUEUE, _read_side(runtime), inbox=None
                )
            )
            app.state.api = ApiContext(
                settings=settings,
                runtime=runtime,
                authenticator=authenticator,
                rotator=rotator,
                commands=Commands(runtime),
                queries=queries,
                metrics=metrics,
            )
            yield
        finally:
            await runtime.close()

    app = FastAPI(
        title="m8 secrets API",
        version="1",
        description="Put secrets into upstream stores; m8 never sees their values.",
        lifespan=lifespan,
    )
    problems.install(app, retry_after=settings.api_retry_after_seconds)
    for module in (health, stores, keys, uploads, secrets):
        app.include_router(module.router)
    app.add_middleware(BodySizeLimit, limit=settings.api_max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: sees every answer
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        return problems.add_schemas(generate())

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _read_side(runtime: Runtime) -> Handler:
    """The projections consumer's handler: read models, then ciphertext redaction."""
    # No inbox: projections are idempotent by construction, and so is redaction.
    runner = ProjectionRunner(runtime.recorder, [UploadKeysProjection()])
    secrets = SecretReadModels(runtime.recorder)
    redactor = CiphertextRedactor(runtime.recorder, runtime.repository)

    async def handle(event: StoredEvent) -> None:
        await runner.handle(event)
        await secrets.handle(event)
        await redactor.handle(event)

    return handle
