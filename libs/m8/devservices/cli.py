"""`m8 dev`: run the system locally, and `m8 dev services up|down|status`."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from m8.config import get_settings
from m8.devservices.manager import ServiceError, Services, local_services

console = Console()
dev = typer.Typer(help="Run m8 on this machine with real local servers.", no_args_is_help=False)
services_cli = typer.Typer(help="Start, inspect and stop the local servers.", no_args_is_help=True)
dev.add_typer(services_cli, name="services")


def _workdir() -> Path:
    return Path(get_settings().state_dir).resolve()


def _print(services: Services) -> None:
    health = services.health()
    table = Table("service", "url", "owner", "healthy")
    for info in services:
        owner = f"m8 (pid {info.pid})" if info.managed else "external"
        mark = "[green]yes[/]" if health[info.name] else "[red]no[/]"
        table.add_row(info.name, info.url, owner, mark)
    console.print(table)


def _up() -> Services:
    workdir = _workdir()
    if Services.load(workdir).infos:
        raise ServiceError(f"Servers are already up (see {workdir}); run `m8 dev services down`.")
    services = local_services(get_settings(), workdir)
    services.save()
    return services


@services_cli.command("up")
def services_up() -> None:
    """Start the local servers in the background and print where they listen."""
    try:
        services = _up()
    except ServiceError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    _print(services)
    console.print("\nPoint m8 at them with:")
    for key, value in services.environment().items():
        console.print(f"  export {key}={value}", markup=False)


@services_cli.command("status")
def services_status() -> None:
    """Show each local server and whether it answers now."""
    services = Services.load(_workdir())
    if not services.infos:
        console.print("No local servers are up. Start them with `m8 dev services up`.")
        raise typer.Exit(1)
    _print(services)
    if not all(services.health().values()):
        raise typer.Exit(1)


@services_cli.command("down")
def services_down() -> None:
    """Stop the local servers that `up` started."""
    services = Services.load(_workdir())
    services.stop()
    services.forget()
    console.print("Local servers stopped.")


@dev.callback(invoke_without_command=True)
def run_locally(ctx: typer.Context) -> None:
    """Start everything in the foreground; Ctrl-C stops it all."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        services = _up()
    except ServiceError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        _print(services)
        console.print("\nm8 is up. Environment for tools:")
        for key, value in services.environment().items():
            console.print(f"  export {key}={value}", markup=False)
        console.print("\nPress Ctrl-C to stop.")
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        services.stop()
        services.forget()
        console.print("Stopped.")
