"""`m8 dev`: run the system locally, and `m8 dev services up|down|status`."""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import threading
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from m8.client.errors import ClientError
from m8.client.outcome import check_receipt
from m8.client.profile import Profile
from m8.client.sdk import M8Client
from m8.client.upload import put_secret
from m8.config import get_settings
from m8.crypto import SecretBytes
from m8.devservices.manager import ServiceError, Services, local_services, tool
from m8.devservices.system import System, dev_store, dev_types, m8ctl_login
from m8.devservices.vhosts import virtual_host

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
        console.print(f"  export {key}={shlex.quote(value)}", markup=False, highlight=False)


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
    """Run the whole system in the foreground; Ctrl-C stops it all."""
    if ctx.invoked_subcommand is not None:
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    system = System(_workdir())
    try:
        services = _up()
    except ServiceError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    with contextlib.ExitStack() as cleanup:
        # Undone in reverse: the services, then their virtual host, then the servers.
        cleanup.callback(_stop_servers, services)
        try:
            # A virtual host of its own: two systems on one broker must not answer each
            # other's requests or take each other's events.
            vhost = cleanup.enter_context(virtual_host(services["rabbitmq"], prefix="m8-dev-"))
            cleanup.callback(_stop_system, system)
            reactors = " and ".join(t.name for t in dev_types())
            with console.status(f"Starting api, keyrotator and the {reactors} reactors…"):
                system.start(services, overrides={"M8_AMQP_URL": vhost.url})
            _print(services)
            config = system.workdir / "m8ctl.json"
            m8ctl_login(system, config)
            _usage(system, config)
            stop.wait()
        except KeyboardInterrupt:
            pass
        except ServiceError as exc:
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from None


def _usage(system: System, config: Path) -> None:
    console.print(f"\nm8 is up: API at {system.api_url}", highlight=False)
    named = [f"{dev_store(t.name)} ({t.title})" for t in dev_types()]
    console.print(f"Stores: {', '.join(named)}; the first is the default.", highlight=False)
    console.print("Use m8ctl as the dev admin, from any shell and directory:", highlight=False)
    for line in usage_lines(system.workdir, config, dev_store(dev_types()[-1].name)):
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"Logs: {system.workdir / 'logs'}. Press Ctrl-C to stop.", highlight=False)


def usage_lines(workdir: Path, config: Path, other_store: str) -> list[str]:
    """Shell commands that run as printed, in any directory: m8ctl and m8 by absolute path
    (a new shell has no virtualenv on its PATH), `m8 dev demo` told this system's state
    directory (it is relative to the directory by default), every path quoted."""
    m8ctl = shlex.quote(os.path.abspath(tool("m8ctl")))
    m8 = shlex.quote(os.path.abspath(tool("m8")))
    return [
        f"export M8CTL_CONFIG={shlex.quote(str(config.absolute()))}",
        f"printf 's3cr3t' | {m8ctl} secret put team/db/password",
        f"{m8ctl} secret put team/db/password --store {shlex.quote(other_store)} < file",
        f"{m8ctl} secret list",
        f"{m8ctl} whoami",
        f"M8_STATE_DIR={shlex.quote(str(workdir.absolute()))} {m8} dev demo"
        "    # one value into every store, equal fingerprints",
    ]


def _ignore_signals() -> None:
    # A second Ctrl-C must not cut the clean-up short and leave processes running.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _stop_system(system: System) -> None:
    _ignore_signals()
    with console.status("Stopping the services (they finish what they hold)…"):
        system.stop()


def _stop_servers(services: Services) -> None:
    _ignore_signals()
    services.stop()
    services.forget()
    console.print("Stopped.")


@dev.command("demo")
def demo() -> None:
    """Put one random value into every dev store and show the equal fingerprints."""
    try:
        system = System.load(_workdir())
        # The profile `m8 dev` logged in with m8ctl, pinned keys included.
        profile = Profile.load(system.workdir / "m8ctl.json")
        value = secrets.token_bytes(24)  # random and never shown: only fingerprints are
        fingerprints = {}
        with M8Client(profile.server, profile.token) as client:
            for store in (dev_store(t.name) for t in dev_types()):
                with SecretBytes(value) as secret:
                    accepted = put_secret(client, profile, "demo/value", store, secret)
                status = client.upload(accepted["upload_id"], wait=30)
                # Only what the reactor signed counts, as in `m8ctl secret put`.
                check = check_receipt(
                    client,
                    profile,
                    status,
                    accepted["upload_id"],
                    store,
                    "demo/value",
                    accepted["ciphertext_sha256"],
                )
                state = status["status"] if check.verified else "unverified"
                fingerprints[store] = status.get("fingerprint") if check.verified else None
                console.print(f"{store:10} {state:10} {status.get('fingerprint')}", highlight=False)
    except (ServiceError, ClientError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    same = len(set(fingerprints.values())) == 1 and None not in fingerprints.values()
    where = "both stores" if len(fingerprints) == 2 else f"all {len(fingerprints)} stores"
    console.print(f"Equal fingerprints in {where}." if same else "[red]Fingerprints differ![/]")
    if not same:
        raise typer.Exit(1)
