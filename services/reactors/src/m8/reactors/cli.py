"""`m8 reactor <type>`: runs the reactor of one upstream store type (one command per type)."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable

import typer

from m8 import stores
from m8.config import SettingsError, load_settings
from m8.logs import configure_logging
from m8.reactors.bootstrap import run
from m8.reactors.settings import ReactorSettings
from m8.runtime import run_service
from m8.stores import StoreType


def make_app() -> typer.Typer:
    """The `m8 reactor` command, with a sub-command per registered store type."""
    app = typer.Typer(
        help="Reactors: write uploads into upstream stores (configured by M8_REACTOR_* variables).",
        no_args_is_help=True,
    )
    for store_type in stores.all_types():
        app.command(store_type.name, help=f"Writes uploads into {store_type.title} stores.")(
            _command(store_type)
        )
    return app


def _command(store_type: StoreType) -> Callable[[], None]:
    def command() -> None:
        _run(store_type.name)

    return command


def _run(store_type: str) -> None:
    try:
        settings = load_settings(ReactorSettings)
        # Before the keys and credentials are read, so that what that says is logged as
        # everything else is (M8_REACTOR_DEV_UNPINNED_STORES' warning, say).
        configure_logging(settings.log_level, settings.log_format)
        run_service(run(settings, store_type))
    except SettingsError as exc:  # a ConfigurationError too; never quotes a value
        typer.echo(f"m8 reactor {store_type}: {exc}", err=True)
        raise typer.Exit(2) from None
    _exit_without_waiting_for_upstream()


def _exit_without_waiting_for_upstream() -> None:
    """Exits now even if a request to a store that does not answer is still running: it
    would end only at its timeout, and Python waits for such threads at exit. Its message
    went back to the broker, and its path's lease holds the next try off until then."""
    main = threading.main_thread()
    if any(t.is_alive() and not t.daemon and t is not main for t in threading.enumerate()):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


app = make_app()

if __name__ == "__main__":
    app()
