"""`m8ctl`: put secrets into upstream stores without anyone in the middle reading them.

Values never come from the command line: a file, standard input, or a hidden prompt.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, cast

import typer
from typer.core import TyperGroup

from m8.client.errors import ClientError, ExitCode
from m8.client.output import (
    Field,
    LazyConsole,
    OutputFormat,
    choose,
    json_text,
    on_terminal,
    print_fields,
    print_rows,
    tsv_rows,
)
from m8.client.profile import PinSet, Profile

if TYPE_CHECKING:
    from rich.console import Console

    # The click that TyperGroup is typed with: typer's own copy (private, so a typer
    # upgrade may move it; only mypy sees this import).
    from typer._click import Command, Context

    from m8.client.sdk import M8Client
    from m8.stores import StoreType

# The HTTP client, PyNaCl, rich's tables and the store types (pydantic models) are imported by the
# commands that need them: `--help` and `secret put` stay fast.

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
stores_app = typer.Typer(help="List stores; admins add, activate, deactivate them.")


class StoreTypeCommands(TyperGroup):
    """`m8ctl stores add <type>`: a command per registered store type (m8.stores), made
    when asked for, so that no other command pays for importing the store types."""

    def list_commands(self, ctx: Context) -> list[str]:
        from m8 import stores

        return [*super().list_commands(ctx), *stores.names()]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        from m8 import stores

        if cmd_name not in stores.names():
            return super().get_command(ctx, cmd_name)
        app = typer.Typer(add_completion=False)
        app.command(cmd_name)(add_store_command(stores.get(cmd_name)))
        return typer.main.get_command(app)


add_app = typer.Typer(
    cls=StoreTypeCommands, help="Register an upstream store (admin).", no_args_is_help=True
)
secret_app = typer.Typer(help="Put secrets and see their fingerprints.", no_args_is_help=True)
upload_app = typer.Typer(help="Follow an upload.", no_args_is_help=True)
config_app = typer.Typer(help="Your profile: the store your uploads go to.", no_args_is_help=True)
app.add_typer(stores_app, name="stores")
stores_app.add_typer(add_app, name="add")
app.add_typer(secret_app, name="secret")
app.add_typer(upload_app, name="upload")
app.add_typer(config_app, name="config")

# No emoji codes: m8ctl prints none, and a `:name:` in a server's message stays as sent.
# Whether either is a terminal is its stream's isatty() (on_terminal), never rich's
# `is_terminal`: FORCE_COLOR=1 asks for colour, not for a table on a pipe. Each is made
# when first printed through (LazyConsole stands in for the Console it makes).
out = cast("Console", LazyConsole())
err = cast("Console", LazyConsole(stderr=True))
# The exit code of each settled status (m8.protocol.status.SETTLED): where an upload can
# stop; `failed` waits for an operator's re-drive, `expired` for a retry.
EXIT_CODES = {
    "stored": ExitCode.OK,
    "rejected": ExitCode.REJECTED,
    "superseded": ExitCode.SUPERSEDED,
    "failed": ExitCode.FAILED,
    "expired": ExitCode.EXPIRED,
}
# The outcomes a reactor signs a receipt for.
SIGNED = frozenset({"stored", "rejected", "superseded", "failed"})


def _me_quietly() -> dict[str, Any]:
    """GET /v1/me for shell completion: quick, and silent whatever goes wrong."""
    from m8.client.sdk import M8Client

    try:
        profile = Profile.load()
        with M8Client(profile.server, profile.token, timeout=3.0) as client:
            return client.me()
    except Exception:  # a completion offers nothing rather than fail
        return {}


def complete_store(incomplete: str) -> list[str]:
    """Shell completion: the stores you may write in (GET /v1/me)."""
    stores = _me_quietly().get("stores")
    names = stores if isinstance(stores, list) else []
    return [name for name in names if isinstance(name, str) and name.startswith(incomplete)]


def complete_path(incomplete: str) -> list[str]:
    """Shell completion: the path prefixes you may write under (GET /v1/me)."""
    prefixes = _me_quietly().get("prefixes")
    given = prefixes if isinstance(prefixes, list) else []
    return [
        prefix
        for prefix in given
        if isinstance(prefix, str) and prefix != "*" and prefix.startswith(incomplete)
    ]


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts (-o json).")]
OutputOpt = Annotated[
    OutputFormat | None,
    typer.Option(
        "--output",
        "-o",
        help="table (fits the terminal), wide (nothing cut), json or tsv. "
        "Default: table when standard output is a terminal, else tsv.",
        case_sensitive=False,
        show_default=False,
    ),
]
OutcomeOutputOpt = Annotated[
    OutputFormat | None,
    typer.Option(
        "--output",
        "-o",
        help="table (a sentence for people), wide (every field, nothing cut), json, or tsv "
        "(a header line and one line). Default: table when standard output is a terminal, "
        "else tsv. With table or wide, and standard error a terminal, the stage shows "
        "while you wait.",
        case_sensitive=False,
        show_default=False,
    ),
]
# Output meant for people: only then is a wait drawn on a terminal.
FOR_PEOPLE = (OutputFormat.TABLE, OutputFormat.WIDE)
StoreOpt = Annotated[
    str | None,
    typer.Option(help="The store (default: your profile's store).", autocompletion=complete_store),
]
PathArg = Annotated[
    str, typer.Argument(help="Secret path, e.g. team/db/password", autocompletion=complete_path)
]
# `secret show|history` take extra arguments only to recognise the form before
# (`STORE PATH`) and say what to type instead.
OLD_FORM = {"allow_extra_args": True}


def output_format(output: OutputFormat | None, as_json: bool) -> OutputFormat:
    """The format a list or show command prints in (-o, --json, or what stdout is)."""
    try:
        return choose(output, as_json, on_terminal(out))
    except ValueError as exc:
        fail(str(exc), ExitCode.USAGE)


def fail(message: str, code: ExitCode) -> NoReturn:
    """Prints an error a person can act on and exits with `code`."""
    # Piped, a line per error (a log keeps commands in it whole); on a terminal, wrapped.
    err.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=not on_terminal(err))
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


# --- login --------------------------------------------------------------------------


@app.command()
def login(
    server: Annotated[str, typer.Argument(help="API base URL, e.g. https://m8.example.com")],
    token_file: Annotated[
        Path | None, typer.Option(help="Read the token from this file (else stdin or a prompt).")
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="Your store (else the server's default, shown to you).")
    ] = None,
    repin: Annotated[
        bool,
        typer.Option("--repin", help="Trust the keys the server shows now, replacing your pins."),
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", help="With --repin: do not ask (you checked the keys).")
    ] = False,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="Allow plain http:// to a host other than this machine."),
    ] = False,
) -> None:
    """Save the server, your token and your store, and pin the server's keys."""
    from m8.client.errors import NotLoggedIn
    from m8.client.keys import report, utc_now
    from m8.client.pins import Changes, conflicts, parse_published, pin_first_use, refresh
    from m8.client.profile import RECEIPT, ROTATOR
    from m8.client.sdk import M8Client
    from m8.crypto import format_utc

    url = _server_url(server, insecure)  # before anything touches the network
    try:
        previous: Profile | None = Profile.load()
    except NotLoggedIn:
        previous = None
    except ClientError as exc:  # unreadable or insecure: never overwrite it unseen
        fail(
            f"{exc.message}. m8ctl did not log in, so as not to overwrite a profile it cannot "
            "read (it holds the keys you pinned). Fix it, or move it away to start afresh.",
            exc.exit_code,
        )
    if previous is not None and previous.server != url and not repin:
        fail(
            f"this profile is logged in to {previous.server}. Logging in to {url} means "
            "trusting that server's keys instead: check its fingerprints with your operator, "
            f"then run `m8ctl login {url} --repin`.",
            ExitCode.USAGE,
        )
    token = _read_token(token_file)
    try:
        with M8Client(url, token) as client:
            rotator = parse_published(client.rotator_keys(), ROTATOR)
            receipts = parse_published(client.receipt_keys(), RECEIPT)
            stores = client.stores()  # also proves the token works before we save it
    except ClientError as exc:
        fail(exc.message, exc.exit_code)
    now = utc_now()
    same_server = previous is not None and previous.server == url
    profile = Profile(url, token, path=previous.path if previous else None)
    if previous is not None and not repin:
        profile.rotator_keys, profile.receipt_keys = previous.rotator_keys, previous.receipt_keys
        changed = conflicts(profile.rotator_keys, rotator)
        changed += conflicts(profile.receipt_keys, receipts)
        if changed:
            fail(
                f"the server shows a different key under pinned id(s) {', '.join(changed)}. "
                "This may be an attack. Check with your operator, then use --repin.",
                ExitCode.UNTRUSTED_KEY,
            )
    changes = Changes()
    for pins, published in ((profile.rotator_keys, rotator), (profile.receipt_keys, receipts)):
        if pins.pinned or pins.dropped:
            changes.extend(refresh(pins, published, now))
        else:  # trust on first use: shown below for the user to compare
            changes.extend(pin_first_use(pins, published, now))
    profile.keys_checked_at = format_utc(now)
    report(changes)
    if not profile.rotator_keys.pinned:
        fail(
            "m8ctl trusts no rotator key of this server (see the notes above), so every "
            "upload would be refused. Tell your operator; once they confirm the fingerprints "
            f"the server shows, run `m8ctl login {url} --repin`.",
            ExitCode.UNTRUSTED_KEY,
        )
    if repin and previous is not None:
        _confirm_repin(previous, profile, yes)
    kept = previous.store if previous is not None and same_server else None
    profile.store, how = _choose_store(store, kept, stores)
    path = profile.save()
    out.print(f"Logged in to {profile.server}; profile saved to {path}.", highlight=False)
    _show_pins("Pinned rotator keys (compare with your operator's):", profile.rotator_keys)
    _show_pins("Pinned receipt keys (compare with your operator's):", profile.receipt_keys)
    if not profile.receipt_keys.pinned:
        err.print(
            "[yellow]warning:[/] the server shows no receipt keys: m8ctl cannot confirm any "
            "outcome (exit code 10) until you log in again once the reactors run.",
            highlight=False,
        )
    out.print(f"Your store: {profile.store or '(none)'} - {how}", highlight=False)


def _server_url(server: str, insecure: bool) -> str:
    import ipaddress
    from urllib.parse import urlsplit

    url = server.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(f"{server!r} is not a server URL like https://m8.example.com", ExitCode.USAGE)
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme == "http" and not loopback and not insecure:
        fail(
            f"{url} is plain http: your token and the keys m8ctl pins would cross the network "
            "unprotected, and anyone on the way could swap them. Use https://, or add "
            "--insecure if you really mean it (http to this machine, 127.0.0.1, is allowed).",
            ExitCode.USAGE,
        )
    return url


def _read_token(token_file: Path | None) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            fail(f"cannot read {token_file}: {exc.strerror}", ExitCode.USAGE)
    elif not sys.stdin.isatty():
        token = sys.stdin.readline().strip()
    else:
        token = typer.prompt("API token", hide_input=True).strip()
    if not token:
        fail("no token given", ExitCode.USAGE)
    return token


def _confirm_repin(previous: Profile, profile: Profile, yes: bool) -> None:
    """Shows what is trusted now and what would be, and asks (or takes --yes)."""
    out.print(f"Now pinned (for {previous.server}):", highlight=False)
    _show_pins("  rotator keys:", previous.rotator_keys)
    _show_pins("  receipt keys:", previous.receipt_keys)
    out.print(f"The server {profile.server} shows:", highlight=False)
    _show_pins("  rotator keys:", profile.rotator_keys)
    _show_pins("  receipt keys:", profile.receipt_keys)
    if yes:
        return
    if not sys.stdin.isatty():
        fail(
            "--repin replaces the keys you trust and there is no terminal to ask on. Compare "
            "the new fingerprints above with your operator's, then run again with --yes.",
            ExitCode.USAGE,
        )
    if not typer.confirm("Trust the keys the server shows now?", default=False):
        fail("nothing changed", ExitCode.USAGE)


def _choose_store(
    option: str | None, kept: str | None, stores: dict[str, Any]
) -> tuple[str | None, str]:
    """The profile's store and how it was chosen (the server's default only on first use)."""
    if option is not None:
        return _usable_store(option, stores), "chosen with --store."
    if kept is not None:
        return kept, "kept from your profile."
    default = stores.get("default")
    if not isinstance(default, str):
        return None, "the server has no default: choose one with `m8ctl config set-store NAME`."
    if sys.stdin.isatty():
        default = _usable_store(typer.prompt("Store for your uploads", default=default), stores)
    return default, (
        "the server's default today, taken on trust (trust on first use): check with your "
        "operator that it is the store you mean. m8ctl always names it in uploads and never "
        "follows a later change of the server's default; change it with "
        "`m8ctl config set-store NAME`, or pass --store NAME for one upload."
    )


def _usable_store(name: str, stores: dict[str, Any]) -> str:
    listed = {s.get("name"): s for s in stores.get("stores", []) if isinstance(s, dict)}
    if name not in listed:
        names = ", ".join(sorted(str(n) for n in listed)) or "none"
        fail(f"the server has no store {name!r} you may use (it lists: {names})", ExitCode.USAGE)
    if not listed[name].get("active"):
        fail(f"store {name!r} is inactive: an admin must activate it first", ExitCode.USAGE)
    return name


def _show_pins(title: str, pins: PinSet) -> None:
    out.print(title, highlight=False)
    for key_id, pinned in pins.pinned.items():
        until = f"  until {pinned.not_after}" if pinned.not_after else ""
        out.print(f"  {key_id}  {pinned.fingerprint}{until}", highlight=False)
    if not pins.pinned:
        out.print("  (none)", highlight=False)


# --- config -------------------------------------------------------------------------


@config_app.command("set-store")
def config_set_store(
    name: Annotated[
        str, typer.Argument(help="A store from `stores list`.", autocompletion=complete_store)
    ],
) -> None:
    """Choose the store your uploads go to (when you pass no --store)."""
    with session() as (client, profile):
        profile.store = _usable_store(name, client.stores())
        profile.save()
    out.print(f"Your store is now {name}: uploads go there unless you pass --store.")


CONFIG_FIELDS = (
    Field("server"),
    Field("store"),
    Field("keys_checked_at"),
    Field("rotator_keys"),
    Field("receipt_keys"),
)


@config_app.command("show")
def config_show(output: OutputOpt = None, as_json: JsonOpt = False) -> None:
    """Your server, store and pinned keys (never the token)."""
    fmt = output_format(output, as_json)
    try:
        profile = Profile.load()
    except ClientError as exc:
        fail(exc.message, exc.exit_code)
    data = {
        "server": profile.server,
        "store": profile.store,
        "keys_checked_at": profile.keys_checked_at,
        "rotator_keys": profile.rotator_keys.to_dict(),
        "receipt_keys": profile.receipt_keys.to_dict(),
    }

    if fmt in (OutputFormat.JSON, OutputFormat.TSV):
        # In TSV, each kind of key is the comma-separated ids of the pinned ones.
        pinned = {"rotator_keys": list(profile.rotator_keys.pinned)}
        pinned["receipt_keys"] = list(profile.receipt_keys.pinned)
        print_fields(out, fmt, CONFIG_FIELDS, {**data, **pinned}, data)
        return
    out.print(f"server {profile.server}\nstore  {profile.store or '(none)'}", highlight=False)
    _show_pins("Pinned rotator keys:", profile.rotator_keys)
    _show_pins("Pinned receipt keys:", profile.receipt_keys)
    for pins in (profile.rotator_keys, profile.receipt_keys):
        for key_id, dropped in pins.dropped.items():
            out.print(f"dropped {key_id}: {dropped.reason} ({dropped.at})", highlight=False)


ME_FIELDS = (Field("subject"), Field("roles"), Field("stores"), Field("prefixes"))


@app.command()
def whoami(output: OutputOpt = None, as_json: JsonOpt = False) -> None:
    """Who your token says you are: your roles, the stores and path prefixes you may use."""
    fmt = output_format(output, as_json)
    with session() as (client, _):
        data = client.me()
    print_fields(out, fmt, ME_FIELDS, data)


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
    path: PathArg,
    store: StoreOpt = None,
    file: Annotated[Path | None, typer.Option(help="Read the value from this file.")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return once accepted.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the outcome.")] = 120.0,
    output: OutcomeOutputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Encrypt a value locally and put it into an upstream store; print its fingerprint.

    The value comes from --file, else standard input, else a hidden prompt; bytes are sent
    exactly as read (a trailing newline from `echo` is part of the value; use printf).
    "Stored" is printed only when the reactor's signed receipt verifies. When standard
    error is a terminal and the output is for people (table, wide), it shows the stage the
    upload is in while you wait (accepted, queued, waiting for another upload to the path,
    writing: a reactor holds the path for it).
    """
    from m8.client.progress import stages
    from m8.client.upload import put_secret, read_value

    fmt = output_format(output, as_json)
    with session() as (client, profile):
        raw = bytearray(_read_secret(file))
        with stages(err, "preparing the upload", show=fmt in FOR_PEOPLE) as stage:
            try:
                with read_value(raw) as value:
                    accepted = put_secret(client, profile, path, store, value, on_stage=stage)
            except ClientError as exc:
                fail(exc.message, exc.exit_code)
            finally:
                raw[:] = bytes(len(raw))
            if not no_wait:  # the stage line stays until the outcome is in
                upload_id = accepted["upload_id"]
                status = _await(client, upload_id, accepted["store"], timeout, stage, fmt)
        if no_wait:
            accepted_text = f"Accepted: upload {accepted['upload_id']}"
            _show_upload(accepted, fmt, lambda: out.print(accepted_text, highlight=False))
            return
        # Our own upload id, store, path and ciphertext hash: never the API's echo of them.
        chosen = (accepted["store"], accepted["path"], accepted["ciphertext_sha256"])
        _finish(client, profile, accepted["upload_id"], status, fmt, chosen)


Chosen = tuple[str, str, str]  # store, path, SHA-256 of the ciphertext sent


def _await(
    client: M8Client,
    upload_id: str,
    store: str | None,
    timeout: float,
    stage: Callable[[str], None],
    fmt: OutputFormat,
) -> dict[str, Any]:
    """The upload's view once settled (or at the deadline), each stage shown to `stage`.

    While a person watches the stage, short polls so that it moves, longer while it does
    not (StagePolls); otherwise one long-poll at a time, as the SDK does.
    """
    from m8.client.outcome import LONG_POLL, StagePolls, await_outcome
    from m8.client.progress import shows_stages, upload_stage

    watched = shows_stages(err, fmt in FOR_PEOPLE)
    stage(upload_stage({"status": "pending"}, store))
    return await_outcome(
        client,
        upload_id,
        timeout,
        on_view=lambda view: stage(upload_stage(view, store)),
        poll=StagePolls() if watched else LONG_POLL,
    )


def _finish(
    client: M8Client,
    profile: Profile,
    upload_id: str,
    status: dict[str, Any],
    fmt: OutputFormat,
    chosen: Chosen | None,
) -> NoReturn:
    """Prints an outcome once its receipt is checked, and exits with its code.

    An outcome a reactor signs ("stored", "rejected", "failed") counts only with a receipt
    that verifies; any other is exit 10, so that a script never acts on the API's word.
    """
    from m8.client.outcome import check_receipt

    state = status.get("status")
    if state not in SIGNED:
        # Nothing signed vouches for it: m8ctl's own store, path and hash where it has them,
        # and none of the API's word on what was written.
        _print_upload({**_ours(status, upload_id, chosen), **UNVOUCHED}, fmt)
        raise typer.Exit(int(EXIT_CODES.get(str(state), ExitCode.PENDING)))
    # Without our own store, path and ciphertext hash (`upload status ID`), the shown ones
    # are checked: the receipt binds them to the upload id, so a verified one vouches for them.
    shown_hash = status.get("ciphertext_sha256")
    store, path, sent = chosen or (
        str(status.get("store")),
        str(status.get("path")),
        shown_hash if isinstance(shown_hash, str) else None,
    )
    check = check_receipt(client, profile, status, upload_id, store, path, sent)
    shown = {**_ours(status, upload_id, chosen), "store": store, "path": path}
    shown |= {"receipt_verified": check.verified, "receipt_problem": check.problem}
    if not check.verified:
        # For programs, the server's word as `claimed_status` (and nothing of what it says
        # was written); for people, only the error.
        unverified = {**shown, **UNVOUCHED, "status": "unverified", "claimed_status": state}
        if fmt in (OutputFormat.JSON, OutputFormat.TSV):
            _show_upload(unverified, fmt, lambda: None)
        claimed = {
            "stored": "was stored",
            "rejected": "was rejected",
            "superseded": "was superseded",
            "failed": "failed",
        }
        err.print(
            f"[red]unverified outcome[/]: the server says upload {upload_id} {claimed[state]}, "
            f"but {check.problem}. m8ctl cannot confirm that outcome"
            f"{', nor its fingerprint' if state == 'stored' else ''}. Check again with "
            f"`m8ctl upload status {upload_id}`; if this persists, tell your operator.",
            highlight=False,
        )
        raise typer.Exit(int(ExitCode.UNVERIFIED))
    _print_upload(shown, fmt)
    raise typer.Exit(int(EXIT_CODES[str(state)]))


# What only a receipt that verifies vouches for: left out (null) of any other outcome.
UNVOUCHED: dict[str, Any] = {"fingerprint": None, "upstream_version": None, "receipt": None}


def _ours(status: dict[str, Any], upload_id: str, chosen: Chosen | None) -> dict[str, Any]:
    """The API's view with m8ctl's own upload id, and its own store, path and ciphertext
    hash when it chose them (`secret put`; `upload status ID` has only the API's)."""
    view = {**status, "upload_id": upload_id}
    if chosen is not None:
        view["store"], view["path"], view["ciphertext_sha256"] = chosen
    return view


# An upload as `secret put` and `upload status` print it in TSV (one header, whatever the
# outcome: absent fields are empty) and in `wide` (those with a value).
UPLOAD_FIELDS = (
    Field("upload_id", "upload", whole=True),
    Field("status"),
    Field("store"),
    Field("path"),
    Field("fingerprint", whole=True),
    Field("upstream_version", "version"),
    Field("receipt_verified", "receipt verified"),
    Field("reason"),
    Field("detail"),
    Field("stage"),
    Field("claimed_status", "claimed status"),
    Field("receipt_problem", "receipt problem"),
    Field("requested_by", "by"),
    Field("requested_at", "requested"),
    Field("updated_at", "updated"),
    Field("ciphertext_sha256", "ciphertext sha256", whole=True),
    Field("status_url", "status url", whole=True),  # `--no-wait` only
)


def _show_upload(view: dict[str, Any], fmt: OutputFormat, table: Callable[[], None]) -> None:
    """An upload on standard output: JSON or TSV for programs, `table` for people, or
    every field that has a value, nothing cut (`wide`)."""
    if fmt is OutputFormat.JSON:
        sys.stdout.write(json_text(view))
    elif fmt is OutputFormat.TSV:
        sys.stdout.write(tsv_rows(UPLOAD_FIELDS, [view]))
    elif fmt is OutputFormat.WIDE:
        shown = [f for f in UPLOAD_FIELDS if view.get(f.name) is not None]
        print_fields(out, fmt, shown, view)
    else:
        table()


def _print_upload(status: dict[str, Any], fmt: OutputFormat) -> None:
    """A checked outcome (or a pending upload): "stored" goes to standard output; any other
    is also told on standard error, but in JSON (a program reads `status`)."""
    state = status["status"]

    def stored() -> None:  # only ever with a verified receipt
        out.print(
            f"Stored {status.get('store')}:{status.get('path')} "
            f"(upstream version {status.get('upstream_version')}; receipt verified)",
            highlight=False,
        )
        out.print(f"fingerprint {status.get('fingerprint')}", highlight=False)

    _show_upload(status, fmt, stored if state == "stored" else lambda: None)
    if fmt is not OutputFormat.JSON and state != "stored":
        _tell(status)


def _tell(status: dict[str, Any]) -> None:
    """Why an upload is not stored, on standard error."""
    from m8.client.progress import upload_stage

    state = status["status"]
    if state == "expired":
        err.print(
            "[red]expired[/]: its one-time key expired before it was stored; put the secret again",
            highlight=False,
        )
    elif state == "superseded":  # only ever with a verified receipt
        err.print(
            f"[yellow]superseded[/]: a newer upload to {status.get('store')}:"
            f"{status.get('path')} was stored first, so this value was not written over "
            "it (receipt verified)",
            highlight=False,
        )
    elif state in ("rejected", "failed"):  # only ever with a verified receipt
        err.print(
            f"[red]{state}[/]: {status.get('reason')}: {status.get('detail') or ''} "
            "(receipt verified)",
            highlight=False,
        )
    elif state == "pending":
        err.print(
            f"Upload {status.get('upload_id')} is still pending ({upload_stage(status)}).",
            highlight=False,
        )
    else:
        err.print(f"Upload {status.get('upload_id')} is still {state}.", highlight=False)


SECRET_FIELDS = (
    Field("store"),
    Field("path"),
    Field("fingerprint", whole=True),
    Field("upstream_version", "version"),
    Field("stored_at", "stored"),
    Field("stored_by", "by"),
    Field("updated_at", "updated", wide=True),
)
HISTORY_FIELDS = (
    Field("requested_at", "requested"),
    Field("requested_by", "by"),
    Field("status"),
    Field("fingerprint", whole=True),
    Field("upstream_version", "version"),
    Field("upload_id", "upload", wide=True, whole=True),  # for `m8ctl upload status ID`
    Field("completed_at", "completed", wide=True),
)


@secret_app.command("list")
def secret_list(
    store: Annotated[
        str | None, typer.Option(help="Only this store.", autocompletion=complete_store)
    ] = None,
    prefix: Annotated[
        str | None,
        typer.Option(help="Only paths starting with this.", autocompletion=complete_path),
    ] = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List secrets with their fingerprints (never values)."""
    fmt = output_format(output, as_json)
    with session() as (client, _):
        data = client.secrets(store, prefix)
    print_rows(out, fmt, SECRET_FIELDS, data.get("secrets", []), data)


def _refuse_old_form(ctx: typer.Context, path: str) -> None:
    """`secret show|history STORE PATH`, the form before: say what to type now."""
    if len(ctx.args) == 1:
        command = ctx.info_name
        fail(
            f"`m8ctl secret {command}` takes PATH [--store S] now, like `secret put` "
            f"(STORE PATH was the form before). Run: m8ctl secret {command} {ctx.args[0]} "
            f"--store {path}",
            ExitCode.USAGE,
        )
    if ctx.args:
        fail(f"unexpected arguments: {' '.join(ctx.args)}", ExitCode.USAGE)


@secret_app.command("show", context_settings=OLD_FORM)
def secret_show(
    ctx: typer.Context,
    path: PathArg,
    store: StoreOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one secret's fingerprint and upstream version."""
    from m8.client.upload import chosen_store

    fmt = output_format(output, as_json)
    _refuse_old_form(ctx, path)
    with session() as (client, profile):
        data = client.secret(chosen_store(profile, store), path)
    print_fields(out, fmt, SECRET_FIELDS, data)


@secret_app.command("history", context_settings=OLD_FORM)
def secret_history(
    ctx: typer.Context,
    path: PathArg,
    store: StoreOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every upload to one secret: when, who, outcome and fingerprint."""
    from m8.client.upload import chosen_store

    fmt = output_format(output, as_json)
    _refuse_old_form(ctx, path)
    with session() as (client, profile):
        data = client.history(chosen_store(profile, store), path)
    print_rows(out, fmt, HISTORY_FIELDS, data.get("history", []), data)


@upload_app.command("status")
def upload_status(
    upload_id: Annotated[str, typer.Argument()],
    wait: Annotated[float, typer.Option(help="Seconds to wait for a final outcome.")] = 0.0,
    output: OutcomeOutputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show an upload's status (pending with its stage, stored, rejected, failed, expired)."""
    fmt = output_format(output, as_json)
    with session() as (client, profile):
        if wait:
            from m8.client.progress import stages

            with stages(err, show=fmt in FOR_PEOPLE) as stage:
                status = _await(client, upload_id, None, wait, stage, fmt)
        else:
            status = client.upload(upload_id)
        _finish(client, profile, upload_id, status, fmt, None)


# --- stores -------------------------------------------------------------------------


STORE_FIELDS = (
    Field("name"),
    Field("type"),
    Field("active"),
    Field("default"),
    Field("config", wide=True),
)


@stores_app.command("list")
def stores_list(output: OutputOpt = None, as_json: JsonOpt = False) -> None:
    """The stores you may target; the default is marked."""
    fmt = output_format(output, as_json)
    with session() as (client, _):
        data = client.stores()
    print_rows(out, fmt, STORE_FIELDS, data.get("stores", []), data)


def _admin(action: Callable[[M8Client], Any], done: str) -> None:
    with session() as (client, _):
        try:
            action(client)
        except ClientError as exc:
            fail(exc.message, exc.exit_code)
    out.print(done)


def add_store_command(store_type: StoreType) -> Callable[..., None]:
    """`m8ctl stores add <type> NAME --option ...`: an option per field of the type's config.

    A bool field is a --x/--no-x flag; a field the API requires is a required option
    unless the type suggests a value (`cli_defaults`); an optional one given empty is left
    out of the request, as if not given.
    """
    fields = store_type.config.model_fields
    parameters = [
        inspect.Parameter(
            "name",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Annotated[str, typer.Argument()],
        )
    ]
    for field_name, field in fields.items():
        flag = "--" + field_name.replace("_", "-")
        declared = (f"{flag}/--no-{flag[2:]}",) if field.annotation is bool else ()
        default = store_type.cli_defaults.get(
            field_name, ... if field.is_required() else field.default
        )
        parameters.append(
            inspect.Parameter(
                field_name,
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=Annotated[
                    field.annotation, typer.Option(*declared, help=field.description)
                ],
            )
        )

    def add(name: str, **config: Any) -> None:
        body: dict[str, Any] = {"type": store_type.name, "name": name}
        for field_name, value in config.items():
            if fields[field_name].default is None and value in (None, ""):
                continue  # absent: the store has none (AWS's own KMS key, say)
            body[field_name] = value
        _admin(lambda c: c.add_store(body), f"Store {name} registered.")

    *others, last = store_type.pinned
    pinned = f"{', '.join(others)} and {last}" if others else last
    add.__doc__ = (
        f"Register {_article(store_type.title)} {store_type.title} store. Credentials belong "
        f"to the reactors, not here.\n\nThe reactors' credentials must pin the same {pinned}."
    )
    add.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return add


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


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
