"""`m8`: the server-side console (services, operator tools, local development)."""

from __future__ import annotations

import typer

from m8.devservices.cli import dev

app = typer.Typer(help="m8 secrets: server-side commands.", no_args_is_help=True)
app.add_typer(dev, name="dev")
