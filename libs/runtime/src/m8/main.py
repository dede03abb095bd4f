"""`m8`: the server-side console. Each installed m8 distribution adds its own commands.

A distribution names its sub-commands in the entry point group ``m8.commands`` (the API
adds ``api`` and ``admin``, the key rotator ``keyrotator`` and ``keys``, the reactors
``reactor``, the development tooling ``dev``), so a service's image offers that service's
commands only.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

GROUP = "m8.commands"


def build() -> typer.Typer:
    """The `m8` command with every installed distribution's sub-commands."""
    app = typer.Typer(help="m8 secrets: server-side commands.", no_args_is_help=True)
    for entry in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        app.add_typer(entry.load(), name=entry.name)
    return app


app = build()
