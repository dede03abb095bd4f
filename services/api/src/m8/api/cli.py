"""`m8 api`: serves the HTTP API with uvicorn until SIGTERM or SIGINT."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
import uvicorn

from m8.api.app import create_app
from m8.api.settings import ApiSettings
from m8.config import SettingsError, load_settings
from m8.logs import configure_logging
from m8.runtime import ConfigurationError

app = typer.Typer(help="The HTTP API (settings from M8_* variables).")
# Open requests get this long on SIGTERM; the runtime's close takes at most 3 s more.
GRACEFUL_SHUTDOWN_SECONDS = 5


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
    uvicorn.run(
        api,
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_config=None,  # keep m8's JSON logging
        access_log=False,  # paths name secrets; metrics count requests by route instead
        proxy_headers=False,
        # Long-polls end when the API stops; they cannot hold it past 10 s.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


def _fail(message: str) -> NoReturn:
    typer.echo(f"m8 api: {message}", err=True)
    raise typer.Exit(2)
