"""`m8 reactor vault|aws`: runs the reactor of one upstream store type."""

from __future__ import annotations

import asyncio

import typer

from m8.config import SettingsError, load_settings
from m8.logs import configure_logging
from m8.reactors.bootstrap import run
from m8.reactors.settings import ReactorSettings

app = typer.Typer(
    help="Reactors: write uploads into upstream stores (configured by M8_REACTOR_* variables).",
    no_args_is_help=True,
)


@app.command()
def vault() -> None:
    """Writes uploads into HashiCorp Vault / OpenBao KV v2 stores."""
    _run("vault")


@app.command()
def aws() -> None:
    """Writes uploads into AWS Secrets Manager stores."""
    _run("aws")


def _run(store_type: str) -> None:
    try:
        settings = load_settings(ReactorSettings)
        # Before the keys and credentials are read, so that what that says is logged as
        # everything else is (M8_REACTOR_DEV_UNPINNED_STORES' warning, say).
        configure_logging(settings.log_level, settings.log_format)
        asyncio.run(run(settings, store_type))
    except SettingsError as exc:  # a ConfigurationError too; never quotes a value
        typer.echo(f"m8 reactor {store_type}: {exc}", err=True)
        raise typer.Exit(2) from None


if __name__ == "__main__":
    app()
