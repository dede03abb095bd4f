"""`m8 keyrotator` (`app`) and the operator's key commands `m8 keys ...` (`keys_app`)."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from m8.config import SettingsError, load_settings
from m8.crypto import Kek, KeyFileError, write_key_file
from m8.keyrotator.bootstrap import run
from m8.keyrotator.settings import KeyRotatorSettings
from m8.runtime import ConfigurationError

app = typer.Typer(help="Run the key rotator.", invoke_without_command=True)
keys_app = typer.Typer(help="Make the keys m8's services need.", no_args_is_help=True)

# Ids become file names: no separators, nothing a shell or a path would read differently.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_STORE_TYPE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


@app.callback()
def keyrotator() -> None:
    """Issue, sign and destroy one-time upload keys, and rotate the signing key."""
    try:
        asyncio.run(run(load_settings(KeyRotatorSettings)))
    except (SettingsError, ConfigurationError) as exc:
        _fail(str(exc))


@keys_app.command("generate-kek")
def generate_kek(
    store_type: Annotated[str, typer.Option(help="The reactor group: vault, aws, ...")],
    out: Annotated[Path, typer.Option(help="Directory to write the two key files into.")],
    kek_id: Annotated[
        str | None, typer.Option(help="The version id [default: <store-type>-<UTC time>].")
    ] = None,
) -> None:
    """Make a reactor group's KEK: a private file for its reactors, a public one for the rotator."""
    if not _STORE_TYPE.fullmatch(store_type):
        _fail("--store-type must be lower-case letters, digits and '-', like vault or aws")
    kek_id = f"{store_type}-{_timestamp()}" if kek_id is None else kek_id
    _check_id(kek_id, "--kek-id")
    private, public = out / f"{kek_id}.kek.json", out / f"{kek_id}.pub.json"
    for path in (private, public):
        if path.exists():
            _fail(f"{path} exists; choose another --kek-id")
    kek = Kek.generate(kek_id)
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_key_file(private, kek)
        write_key_file(public, kek.public)
    except (KeyFileError, OSError) as exc:
        _fail(str(exc))
    example = json.dumps({store_type: ["...", str(public.resolve())]})
    typer.echo(
        f"Wrote the private KEK {private} (mode 0600).\n"
        f"  Give it to the {store_type} reactors only, never to the key rotator.\n"
        f"Wrote its public half {public}.\n"
        f"  List it LAST for {store_type!r} in the key rotator's settings, after the KEKs\n"
        f"  still in use (new upload keys are sealed to the last one):\n"
        f"  M8_KEYROTATOR_KEK_FILES='{example}'\n"
        "Keep an old KEK listed, and with the reactors, until every key sealed to it has expired."
    )


@keys_app.command("generate-master-key")
def generate_master_key(
    out: Annotated[Path, typer.Option(help="The file to write (mode 0600).")],
    key_id: Annotated[
        str | None, typer.Option(help="The version id [default: rotator-master-<UTC time>].")
    ] = None,
) -> None:
    """Make the key rotator's master key, which encrypts its signing keys in MongoDB."""
    key_id = f"rotator-master-{_timestamp()}" if key_id is None else key_id
    _check_id(key_id, "--key-id")
    try:
        write_key_file(out, Kek.generate(key_id))
    except KeyFileError as exc:
        _fail(str(exc))
    typer.echo(
        f"Wrote the key rotator's master key {out} (mode 0600).\n"
        f"  Set M8_KEYROTATOR_MASTER_KEY_FILE={out.resolve()} for every key rotator process,\n"
        "  and back the file up: without it the stored signing keys cannot be used."
    )


def _check_id(value: str, option: str) -> None:
    if not _ID.fullmatch(value):
        _fail(f"{option} must be 1 to 64 letters, digits, '.', '_' or '-', starting alnum")


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)
