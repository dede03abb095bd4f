"""`m8ctl`: put secrets into upstream stores without anyone in the middle reading them.

Values never come from the command line: a file, standard input, or a hidden prompt.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Column, Table

from m8.client.errors import ClientError, ExitCode
from m8.client.profile import Profile

if TYPE_CHECKING:
    from m8.client.sdk import M8Client

# httpx and PyNaCl are imported by the commands that need them: `--help` stays fast.

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
stores_app = typer.Typer(help="List stores; admins add, activate, deactivate them.")
add_app = typer.Typer(help="Register an upstream store (admin).", no_args_is_help=True)
secret_app = typer.Typer(help="Put secrets and see their fingerprints.", no_args_is_help=True)
upload_app = typer.Typer(help="Follow an upload.", no_args_is_help=True)
app.add_typer(stores_app, name="stores")
stores_app.add_typer(add_app, name="add")
app.add_typer(secret_app, name="secret")
app.add_typer(upload_app, name="upload")

out = Console()
err = Console(stderr=True)
# Where an upload can stop; `failed` waits for an operator's re-drive, `expired` for a retry.
FINAL = {
    "stored": ExitCode.OK,
    "rejected": ExitCode.REJECTED,
    "failed": ExitCode.FAILED,
    "expired": ExitCode.EXPIRED,
}


def fingerprint_column() -> Column:
    """Fingerprints are for comparing: never cut one short to fit a narrow terminal."""
    return Column("fingerprint", no_wrap=True, min_width=47)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def fail(message: str, code: ExitCode) -> NoReturn:
    """Prints an error a person can act on and exits with `code`."""
    err.print(f"[red]error:[/] {message}", highlight=False)
    raise typer.Exit(int(code))


@contextmanager
def session() -> Iterator[tuple[M8Client, Profile]]:
    """The saved profile and a client for it; client errors become exits."""
    from m8.client.sdk import M8Client

    try:
        profile = Profile.load()
        with M8Client(profile.server, profile.token) as client:
            yield client, profile
    except ClientError as exc:
        fail(exc.message, exc.exit_code)


def emit(data: Any, as_json: bool, render: Callable[[], None]) -> None:
    """JSON for scripts, or a human rendering."""
    if as_json:
        out.print_json(json.dumps(data))
    else:
        render()


# --- login --------------------------------------------------------------------------


@app.command()
def login(
    server: Annotated[str, typer.Argument(help="API base URL, e.g. https://m8.example.com")],
    token_file: Annotated[
        Path | None, typer.Option(help="Read the token from this file (else stdin or a prompt).")
    ] = None,
    repin: Annotated[
        bool, typer.Option(help="Trust the rotator keys the server shows now, replacing pins.")
    ] = False,
) -> None:
    """Save the server and your token, and pin the rotator's verify keys."""
    from m8.client.sdk import M8Client
    from m8.client.upload import pin_endorsed_keys, pin_published

    if token_file is not None:
        token = token_file.read_text().strip()
    elif not sys.stdin.isatty():
        token = sys.stdin.readline().strip()
    else:
        token = typer.prompt("API token", hide_input=True).strip()
    if not token:
        fail("no token given", ExitCode.USAGE)
    try:
        previous = Profile.load()
    except ClientError:
        previous = None
    profile = Profile(server.rstrip("/"), token)
    keep_pins = previous is not None and previous.server == profile.server and not repin
    if keep_pins and previous is not None:
        profile.pinned = dict(previous.pinned)
    try:
        with M8Client(profile.server, token) as client:
            published = client.rotator_keys()
            client.stores()  # proves the token works before we save it
    except ClientError as exc:
        fail(exc.message, exc.exit_code)
    if not profile.pinned:
        pin_published(profile, published)
    else:
        pin_endorsed_keys(profile, published)
        shown = {e["signing_key_id"]: e["verify_key"] for e in published}
        changed = [
            k for k, v in shown.items() if k in profile.pinned and profile.pinned[k].verify_key != v
        ]
        if changed:
            fail(
                f"the server shows a different key under pinned id(s) {', '.join(changed)}. "
                "This may be an attack. Check with your operator, then use --repin.",
                ExitCode.UNTRUSTED_KEY,
            )
    path = profile.save()
    out.print(f"Logged in to {profile.server}; profile saved to {path}.")
    out.print("Pinned rotator keys (compare with your operator's):")
    for key_id, pinned in profile.pinned.items():
        out.print(f"  {key_id}  {pinned.fingerprint}", highlight=False)


# --- secrets ------------------------------------------------------------------------


def _read_secret(file: Path | None) -> bytes:
    if file is not None:
        try:
            return file.read_bytes()
        except OSError as exc:
            fail(f"cannot read {file}: {exc.strerror}", ExitCode.USAGE)
    if not sys.stdin.isatty():
        return sys.stdin.buffer.read()
    value: str = typer.prompt("Secret value", hide_input=True, confirmation_prompt=True)
    return value.encode()


@secret_app.command("put")
def secret_put(
    path: Annotated[str, typer.Argument(help="Secret path, e.g. team/db/password")],
    store: Annotated[
        str | None, typer.Option(help="Target store (default: the default one).")
    ] = None,
    file: Annotated[Path | None, typer.Option(help="Read the value from this file.")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return once accepted.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the outcome.")] = 120.0,
    as_json: JsonOpt = False,
) -> None:
    """Encrypt a value locally and put it into an upstream store; print its fingerprint.

    The value comes from --file, else standard input, else a hidden prompt; bytes are sent
    exactly as read (a trailing newline from `echo` is part of the value; use printf).
    """
    from m8.client.upload import put_secret, read_value

    with session() as (client, profile):
        raw = bytearray(_read_secret(file))
        try:
            with read_value(raw) as value:
                accepted = put_secret(client, profile, path, store, value)
        except ClientError as exc:
            fail(exc.message, exc.exit_code)
        finally:
            raw[:] = bytes(len(raw))
        if no_wait:
            emit(accepted, as_json, lambda: out.print(f"Accepted: upload {accepted['upload_id']}"))
            return
        _follow(client, accepted["upload_id"], timeout, as_json)


def _follow(client: M8Client, upload_id: str, timeout: float, as_json: bool) -> NoReturn:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {"status": "pending"}
    with err.status(f"Waiting for upload {upload_id} to be stored…", spinner="dots"):
        while status["status"] not in FINAL and (left := deadline - time.monotonic()) > 0:
            status = client.upload(upload_id, wait=min(left, 20.0))
    _print_upload(status, as_json)
    raise typer.Exit(int(FINAL.get(status["status"], ExitCode.PENDING)))


def _print_upload(status: dict[str, Any], as_json: bool) -> None:
    def render() -> None:
        state = status["status"]
        if state == "stored":
            out.print(
                f"Stored {status.get('store')}:{status.get('path')} "
                f"(upstream version {status.get('upstream_version')})",
                highlight=False,
            )
            out.print(f"fingerprint {status.get('fingerprint')}", highlight=False)
        elif state == "expired":
            err.print(
                "[red]expired[/]: its one-time key expired before it was stored; "
                "put the secret again",
                highlight=False,
            )
        elif state in ("rejected", "failed"):
            err.print(
                f"[red]{state}[/]: {status.get('reason')}: {status.get('detail') or ''}",
                highlight=False,
            )
        else:
            err.print(f"Upload {status.get('upload_id')} is still {state}.", highlight=False)

    emit(status, as_json, render)


@secret_app.command("list")
def secret_list(
    store: Annotated[str | None, typer.Option(help="Only this store.")] = None,
    prefix: Annotated[str | None, typer.Option(help="Only paths starting with this.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List secrets with their fingerprints (never values)."""
    with session() as (client, _):
        data = client.secrets(store, prefix)

    def render() -> None:
        table = Table("store", "path", fingerprint_column(), "version", "stored", "by")
        for item in data.get("secrets", []):
            table.add_row(
                item["store"], item["path"], item.get("fingerprint") or "",
                str(item.get("upstream_version") or ""), str(item.get("stored_at") or ""),
                str(item.get("stored_by") or ""),
            )  # fmt: skip
        out.print(table)

    emit(data, as_json, render)


@secret_app.command("show")
def secret_show(
    store: Annotated[str, typer.Argument()], path: Annotated[str, typer.Argument()],
    as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Show one secret's fingerprint and upstream version."""
    with session() as (client, _):
        data = client.secret(store, path)
    emit(data, as_json, lambda: out.print_json(json.dumps(data)))


@secret_app.command("history")
def secret_history(
    store: Annotated[str, typer.Argument()], path: Annotated[str, typer.Argument()],
    as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Every upload to one secret: when, who, outcome and fingerprint."""
    with session() as (client, _):
        data = client.history(store, path)

    def render() -> None:
        table = Table("requested", "by", "status", fingerprint_column(), "version", "upload")
        for item in data.get("history", []):
            table.add_row(
                str(item.get("requested_at") or ""), str(item.get("requested_by") or ""),
                item["status"], item.get("fingerprint") or "",
                str(item.get("upstream_version") or ""), item["upload_id"],
            )  # fmt: skip
        out.print(table)

    emit(data, as_json, render)


@upload_app.command("status")
def upload_status(
    upload_id: Annotated[str, typer.Argument()],
    wait: Annotated[float, typer.Option(help="Seconds to wait for a final outcome.")] = 0.0,
    as_json: JsonOpt = False,
) -> None:
    """Show an upload's status (pending, stored, rejected, failed, expired)."""
    with session() as (client, _):
        if wait:
            _follow(client, upload_id, wait, as_json)
        status = client.upload(upload_id)
    _print_upload(status, as_json)
    raise typer.Exit(int(FINAL.get(status["status"], ExitCode.PENDING)))


# --- stores -------------------------------------------------------------------------


@stores_app.command("list")
def stores_list(as_json: JsonOpt = False) -> None:
    """The stores you may target; the default is marked."""
    with session() as (client, _):
        data = client.stores()

    def render() -> None:
        table = Table("name", "type", "active", "default")
        for item in data.get("stores", []):
            table.add_row(
                item["name"], item["type"], "yes" if item.get("active") else "no",
                "*" if item.get("default") else "",
            )  # fmt: skip
        out.print(table)

    emit(data, as_json, render)


def _admin(action: Callable[[M8Client], Any], done: str) -> None:
    with session() as (client, _):
        try:
            action(client)
        except ClientError as exc:
            fail(exc.message, exc.exit_code)
    out.print(done)


@add_app.command("vault")
def add_vault(
    name: Annotated[str, typer.Argument()],
    address: Annotated[str, typer.Option(help="Vault/OpenBao URL.")],
    mount: Annotated[str, typer.Option(help="KV v2 mount.")] = "secret",
    path_prefix: Annotated[str, typer.Option(help="Prefix under the mount.")] = "",
) -> None:
    """Register a Vault / OpenBao KV v2 store. Credentials belong to the reactors, not here."""
    body = {"type": "vault", "name": name, "address": address, "mount": mount,
            "path_prefix": path_prefix}  # fmt: skip
    _admin(lambda c: c.add_store(body), f"Store {name} registered.")


@add_app.command("aws")
def add_aws(
    name: Annotated[str, typer.Argument()],
    region: Annotated[str, typer.Option()],
    name_prefix: Annotated[str, typer.Option(help="Prefix of secret names.")] = "",
    kms_key_id: Annotated[str | None, typer.Option()] = None,
    endpoint_url: Annotated[str | None, typer.Option(help="For a non-AWS endpoint.")] = None,
) -> None:
    """Register an AWS Secrets Manager store."""
    body: dict[str, Any] = {"type": "aws", "name": name, "region": region,
                            "name_prefix": name_prefix}  # fmt: skip
    if kms_key_id:
        body["kms_key_id"] = kms_key_id
    if endpoint_url:
        body["endpoint_url"] = endpoint_url
    _admin(lambda c: c.add_store(body), f"Store {name} registered.")


@stores_app.command("activate")
def stores_activate(name: Annotated[str, typer.Argument()]) -> None:
    """Let uploads target a store again (admin)."""
    _admin(lambda c: c.store_action(name, "activate"), f"Store {name} is active.")


@stores_app.command("deactivate")
def stores_deactivate(name: Annotated[str, typer.Argument()]) -> None:
    """Stop uploads to a store (admin)."""
    _admin(lambda c: c.store_action(name, "deactivate"), f"Store {name} is inactive.")


@stores_app.command("set-default")
def stores_set_default(name: Annotated[str, typer.Argument()]) -> None:
    """Make a store the default target (admin)."""
    _admin(lambda c: c.store_action(name, "default"), f"Store {name} is the default.")
