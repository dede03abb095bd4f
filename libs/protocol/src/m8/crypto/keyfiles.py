"""Key files for operators: small JSON documents with standard base64 fields.

Secret key files (KEK, rotator signing key, fingerprint key) are created with mode 0600,
atomically (written under a temporary name, then linked into place), and are refused on
read when group or others have any permission bit. A KEK's public half can be exported to
a 0644 file for registration with the key rotator. `write_private_file` and
`read_private_file` do the same for any other file only its owner may read (tokens, state).

Formats (``kind`` names type and version)::

    {"kind": "m8-kek-v1", "kek_id": "...", "private_key": "<b64>"}
    {"kind": "m8-kek-public-v1", "kek_id": "...", "public_key": "<b64>"}
    {"kind": "m8-signing-key-v1", "signing_key_id": "...", "seed": "<b64>"}
    {"kind": "m8-fingerprint-key-v1", "key": "<b64>"}

The ``loads_*`` functions read the same JSON from a string, e.g. an environment variable.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import nacl.exceptions
from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey

from m8.crypto.encoding import b64decode, b64encode, require_fields, require_str
from m8.crypto.errors import (
    InsecureKeyFile,
    InvalidInput,
    KeyFileError,
    KeyFileExists,
)
from m8.crypto.fingerprint import FingerprintKey
from m8.crypto.kek import Kek, KekPublicKey
from m8.crypto.signing import RotatorSigningKey

KEK_KIND = "m8-kek-v1"
KEK_PUBLIC_KIND = "m8-kek-public-v1"
SIGNING_KEY_KIND = "m8-signing-key-v1"
FINGERPRINT_KEY_KIND = "m8-fingerprint-key-v1"

SECRET_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644

KeyFileContent = Kek | KekPublicKey | RotatorSigningKey | FingerprintKey
_T = TypeVar("_T")


def dumps_key(key: KeyFileContent) -> str:
    """The key file text for ``key``; private kinds contain key material."""
    doc: dict[str, str]
    if isinstance(key, Kek):
        doc = {
            "kind": KEK_KIND,
            "kek_id": key.kek_id,
            "private_key": b64encode(bytes(key.private_key)),
        }
    elif isinstance(key, KekPublicKey):
        doc = {
            "kind": KEK_PUBLIC_KIND,
            "kek_id": key.kek_id,
            "public_key": b64encode(bytes(key.public_key)),
        }
    elif isinstance(key, RotatorSigningKey):
        doc = {
            "kind": SIGNING_KEY_KIND,
            "signing_key_id": key.signing_key_id,
            "seed": b64encode(bytes(key.signing_key)),
        }
    else:
        doc = {"kind": FINGERPRINT_KEY_KIND, "key": b64encode(key.key)}
    return json.dumps(doc, sort_keys=True, indent=2) + "\n"


def write_key_file(
    path: str | os.PathLike[str], key: KeyFileContent, *, overwrite: bool = False
) -> Path:
    """Write ``key`` atomically; 0600 for private keys, 0644 for a KEK public half.

    Raises :class:`KeyFileExists` if ``path`` exists and ``overwrite`` is false.
    """
    mode = PUBLIC_FILE_MODE if isinstance(key, KekPublicKey) else SECRET_FILE_MODE
    return _write(Path(path), dumps_key(key).encode("utf-8"), mode, overwrite=overwrite)


def write_private_file(
    path: str | os.PathLike[str], content: str | bytes, *, overwrite: bool = False
) -> Path:
    """Write a file only its owner can read (0600), atomically; text is stored as UTF-8.

    Replacing an existing file (``overwrite=True``) never keeps its old, maybe looser,
    mode. Raises :class:`KeyFileExists` if ``path`` exists and ``overwrite`` is false,
    :class:`KeyFileError` if it cannot be written.
    """
    data = content.encode("utf-8") if isinstance(content, str) else content
    return _write(Path(path), data, SECRET_FILE_MODE, overwrite=overwrite)


def read_private_file(path: str | os.PathLike[str]) -> bytes:
    """The content of a regular file only its owner may access.

    Raises :class:`InsecureKeyFile` if group or others have any permission bit, and
    :class:`KeyFileError` if it cannot be read.
    """
    return _read(path, private=True)


def read_kek_file(path: str | os.PathLike[str]) -> Kek:
    """A KEK from a 0600 key file."""
    return loads_kek(_text(path, private=True), source=str(path))


def read_kek_public_file(path: str | os.PathLike[str]) -> KekPublicKey:
    """A KEK public half from an exported file (any permissions)."""
    return loads_kek_public(_text(path, private=False), source=str(path))


def read_signing_key_file(path: str | os.PathLike[str]) -> RotatorSigningKey:
    """A rotator signing key from a 0600 key file."""
    return loads_signing_key(_text(path, private=True), source=str(path))


def read_fingerprint_key_file(path: str | os.PathLike[str]) -> FingerprintKey:
    """A fingerprint key from a 0600 key file."""
    return loads_fingerprint_key(_text(path, private=True), source=str(path))


def loads_kek(text: str, *, source: str = "KEK") -> Kek:
    """Parse the text of a KEK file."""
    doc = _parse(text, KEK_KIND, frozenset({"kek_id", "private_key"}), source)
    raw = b64decode(doc["private_key"], field="private_key", error=KeyFileError)
    return _build(
        source, lambda: Kek(require_str(doc, "kek_id", error=KeyFileError), PrivateKey(raw))
    )


def loads_kek_public(text: str, *, source: str = "KEK public key") -> KekPublicKey:
    """Parse the text of an exported KEK public half."""
    doc = _parse(text, KEK_PUBLIC_KIND, frozenset({"kek_id", "public_key"}), source)
    raw = b64decode(doc["public_key"], field="public_key", error=KeyFileError)
    return _build(
        source,
        lambda: KekPublicKey(require_str(doc, "kek_id", error=KeyFileError), PublicKey(raw)),
    )


def loads_signing_key(text: str, *, source: str = "signing key") -> RotatorSigningKey:
    """Parse the text of a rotator signing key file."""
    doc = _parse(text, SIGNING_KEY_KIND, frozenset({"signing_key_id", "seed"}), source)
    seed = b64decode(doc["seed"], field="seed", error=KeyFileError)
    return _build(
        source,
        lambda: RotatorSigningKey(
            require_str(doc, "signing_key_id", error=KeyFileError), SigningKey(seed)
        ),
    )


def loads_fingerprint_key(text: str, *, source: str = "fingerprint key") -> FingerprintKey:
    """Parse the text of a fingerprint key file."""
    doc = _parse(text, FINGERPRINT_KEY_KIND, frozenset({"key"}), source)
    return _build(
        source, lambda: FingerprintKey(b64decode(doc["key"], field="key", error=KeyFileError))
    )


_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _write(target: Path, data: bytes, mode: int, *, overwrite: bool) -> Path:
    if not overwrite and target.exists():
        raise KeyFileExists(f"{target} exists; refusing to overwrite it")
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    try:
        # O_EXCL with the final mode: the content is never readable by others, not even
        # briefly, and a replaced file's old mode is not kept.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)  # the umask may have removed bits we want (0644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, target)
        else:
            # link() fails if the target appeared meanwhile, unlike rename().
            os.link(tmp, target)
        _fsync_dir(target.parent)
    except FileExistsError:
        raise KeyFileExists(f"{target} exists; refusing to overwrite it") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write {target}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return target


def _read(path: str | os.PathLike[str], *, private: bool) -> bytes:
    # Symlinks are followed on read: Kubernetes mounts secrets as symlinks. The mode of
    # the file actually opened is what counts, so it is checked on the descriptor.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise KeyFileError(f"cannot open {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path} is not a regular file")
        if private and info.st_mode & 0o077:
            raise InsecureKeyFile(
                f"{path} has mode {stat.S_IMODE(info.st_mode):04o}; group and others "
                f"must have no access (chmod 600 {path})"
            )
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)


def _text(path: str | os.PathLike[str], *, private: bool) -> str:
    try:
        return _read(path, private=private).decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {path} is not UTF-8 text") from None


def _parse(text: str, kind: str, fields: frozenset[str], source: str) -> Mapping[str, object]:
    try:
        doc = json.loads(text)
    except ValueError:
        # `from None`: the decoder error carries the document, i.e. the key.
        raise KeyFileError(f"{source} is not a JSON key file") from None
    if not isinstance(doc, dict):
        raise KeyFileError(f"{source} is not a JSON key file")
    found = doc.get("kind")
    if found != kind:
        shown = found if isinstance(found, str) and found in _KINDS else "unknown"
        raise KeyFileError(f"{source} is a {shown!s} key file, expected {kind}")
    return require_fields(doc, fields | {"kind"}, what=source, error=KeyFileError)


_KINDS = frozenset({KEK_KIND, KEK_PUBLIC_KIND, SIGNING_KEY_KIND, FINGERPRINT_KEY_KIND})


def _build(source: str, make: Callable[[], _T]) -> _T:
    try:
        return make()
    except (nacl.exceptions.CryptoError, InvalidInput):
        raise KeyFileError(f"{source} holds a key of the wrong size or an invalid id") from None


def _fsync_dir(directory: Path) -> None:
    # Makes the new directory entry durable; not every platform lets a directory be opened.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
