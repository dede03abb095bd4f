"""`m8 api`: serves the HTTP API with uvicorn until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Annotated, NoReturn

import typer
import uvicorn
from uvicorn.config import STARTUP_FAILURE

from m8.api.app import create_app
from m8.api.settings import ApiSettings
from m8.config import SettingsError, load_settings
from m8.logs import configure_logging
from m8.runtime import ConfigurationError

log = logging.getLogger(__name__)

app = typer.Typer(help="The HTTP API (settings from M8_* variables).")
# Every service is gone within 10 s of SIGTERM (what orchestrators wait before they kill).
# uvicorn notices the signal within 0.1 s; its shutdown, bounded here by SHUTDOWN_SECONDS,
# gives open requests (long-polls among them: they wait for an outcome) up to
# GRACEFUL_SHUTDOWN_SECONDS, then the app's lifespan closes the runtime
# (m8.runtime.Runtime.close) in what is left. That close takes well under a second unless
# MongoDB or RabbitMQ stall, when it may take up to 10 s: past SHUTDOWN_SECONDS the
# process ends anyway. Nothing is lost then: the broker takes back the events the
# projections had in hand when the connection drops, and the outbox's backstop publishes
# whatever was stored but not yet published.
GRACEFUL_SHUTDOWN_SECONDS = 3
SHUTDOWN_SECONDS = 9.5


@app.callback(invoke_without_command=True)
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on [M8_API_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on [M8_API_PORT]")] = None,
) -> None:
    """Serves the API."""
    try:
        settings = load_settings(ApiSettings)
    except SettingsError as exc:
        _fail(str(exc))
    configure_logging(settings.log_level, settings.log_format)
    try:
        api = create_app(settings)
    except ConfigurationError as exc:
        _fail(str(exc))
    config = uvicorn.Config(
        api,
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_config=None,  # keep m8's JSON logging
        access_log=False,  # paths name secrets; metrics count requests by route instead
        proxy_headers=False,
        # Named, not "auto": a missing uvloop fails at the start rather than costing CPU.
        # h11, not httptools: uvicorn caps a request's head at 16 KiB only with h11.
        loop="uvloop",
        http="h11",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = BoundedServer(config)
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT, raised again after the shutdown
        server.run()
    if not server.started:  # as uvicorn.run ends when the app could not start
        raise typer.Exit(STARTUP_FAILURE)


class BoundedServer(uvicorn.Server):
    """uvicorn's server, whose shutdown (open requests, then the app's lifespan) ends
    within `shutdown_seconds` whatever the app's close is waiting for."""

    def __init__(self, config: uvicorn.Config, shutdown_seconds: float = SHUTDOWN_SECONDS):
        super().__init__(config)
        self.shutdown_seconds = shutdown_seconds

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            async with asyncio.timeout(self.shutdown_seconds):
                await super().shutdown(sockets)
        except TimeoutError:
            log.warning(
                "the API's shutdown did not end in %gs: exiting without waiting for the rest",
                self.shutdown_seconds,
            )


def _fail(message: str) -> NoReturn:
    typer.echo(f"m8 api: {message}", err=True)
    raise typer.Exit(2)
