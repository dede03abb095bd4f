"""`m8`: the server-side console (services, operator tools, local development)."""

from __future__ import annotations

import typer

from m8.api.cli import app as api
from m8.devservices.cli import dev
from m8.keyrotator.cli import app as keyrotator
from m8.keyrotator.cli import keys_app
from m8.reactors.cli import app as reactor

app = typer.Typer(help="m8 secrets: server-side commands.", no_args_is_help=True)
app.add_typer(api, name="api")
app.add_typer(keyrotator, name="keyrotator")
app.add_typer(reactor, name="reactor")
app.add_typer(keys_app, name="keys")
app.add_typer(dev, name="dev")
