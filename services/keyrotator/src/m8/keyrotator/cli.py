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
from m8.crypto import (
    Kek,
    KeyFileError,
    ReceiptKeyFile,
    ReceiptSigningKey,
    read_receipt_key_file,
    verify_key_fingerprint,
    write_key_file,
    write_receipt_key_file,
)
from m8.keyrotator.bootstrap import reseal_signing_keys, run
from m8.keyrotator.settings import KeyRotatorSettings
from m8.runtime import ConfigurationError, run_service

app = typer.Typer(help="Run the key rotator.", invoke_without_command=True)
keys_app = typer.Typer(help="Make the keys m8's services need.", no_args_is_help=True)

# Ids become file names: no separators, nothing a shell or a path would read differently.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_STORE_TYPE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


@app.callback()
def keyrotator() -> None:
    """Issue, sign and destroy one-time upload keys, and rotate the signing key."""
    try:
        run_service(run(load_settings(KeyRotatorSettings)))
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
        "  and back the file up: without it the stored signing keys cannot be used.\n"
        "  Replacing a master key in use: list both, new first, in "
        "M8_KEYROTATOR_MASTER_KEY_FILES,\n  then run `m8 keys rotate-master-key`."
    )


@keys_app.command("rotate-master-key")
def rotate_master_key() -> None:
    """Re-seal the stored signing keys under the newest master key, while rotators run.

    Reads the key rotator's settings: M8_KEYROTATOR_MASTER_KEY_FILES=NEW,OLD and
    M8_MONGODB_URI. Safe to run again; prints signing key ids, never key material.
    """
    try:
        done = asyncio.run(reseal_signing_keys(load_settings(KeyRotatorSettings)))
    except (SettingsError, ConfigurationError) as exc:
        _fail(str(exc))
    typer.echo(f"Newest master key: {done.master_key_id!r}")
    for what, ids in (
        ("Re-sealed under it", done.resealed),
        ("Already under it", done.already),
        ("Withdrawn or re-sealed by another process meanwhile", done.changed),
    ):
        typer.echo(f"  {what}: {len(ids)}" + (f" ({', '.join(ids)})" if ids else ""))
    if done.unopenable:
        for key_id, why in done.unopenable.items():
            typer.echo(f"error: {key_id}: {why}", err=True)
        _fail(
            f"{len(done.unopenable)} signing key(s) were not re-sealed: list the master key "
            "that sealed them in M8_KEYROTATOR_MASTER_KEY_FILES, after the new one, and run "
            "this again"
        )
    typer.echo(
        f"Every live signing key is sealed under master key {done.master_key_id!r}.\n"
        "  Once every key rotator runs with it first in M8_KEYROTATOR_MASTER_KEY_FILES, "
        "drop the old\n  master key from that list and deploy the rotators again."
    )


@keys_app.command("generate-receipt-key")
def generate_receipt_key(
    key_id: Annotated[str, typer.Option("--id", help="The key's id, e.g. receipt-vault-1.")],
    out: Annotated[Path, typer.Option(help="The file to write (mode 0600).")],
    endorse_with: Annotated[
        Path | None,
        typer.Option(help="The receipt key file this key replaces; it vouches for the new one."),
    ] = None,
) -> None:
    """Make a reactor's receipt key, which signs every outcome the reactor records."""
    _check_id(key_id, "--id")
    try:
        key = ReceiptSigningKey.generate(key_id)
        key_file = ReceiptKeyFile(key)
        if endorse_with is not None:
            old = read_receipt_key_file(endorse_with).key
            if old.receipt_key_id == key_id:
                _fail(f"{endorse_with} is {key_id!r} already; give the new key another --id")
            key_file = ReceiptKeyFile.successor(key, old)
        write_receipt_key_file(out, key_file)
    except KeyFileError as exc:
        _fail(str(exc))
    endorsed = (
        f"  Endorsed by {key_file.endorsed_by}: clients that pinned it follow this key.\n"
        if key_file.endorsed_by
        else ""
    )
    typer.echo(
        f"Wrote the receipt key {key_id!r} {out} (mode 0600).\n"
        f"  Its verify key: {verify_key_fingerprint(key.verify_key)}\n"
        f"{endorsed}"
        f"  Set M8_REACTOR_RECEIPT_KEY_FILE={out.resolve()} for one reactor group only;\n"
        "  it registers the key at start, and m8ctl checks every outcome against it."
    )


def _check_id(value: str, option: str) -> None:
    if not _ID.fullmatch(value):
        _fail(f"{option} must be 1 to 64 letters, digits, '.', '_' or '-', starting alnum")


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)
