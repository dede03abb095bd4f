"""Wire encodings shared by every m8 crypto structure.

- Bytes in any dict form are standard base64 (RFC 4648 section 4, ``+/`` alphabet, with
  ``=`` padding). Decoding is strict: only the canonical encoding is accepted, so one
  value has exactly one textual form.
- Canonical JSON: sorted keys, separators ``(",", ":")``, no NaN, UTF-8 (not ASCII-escaped).
- Times: ISO-8601 in UTC with microseconds and a ``Z`` suffix,
  ``2025-01-31T12:00:00.000000Z``; parsing accepts only that exact form, so signed
  bytes survive a decode/encode round trip.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import UTC, datetime

from m8.crypto.errors import CryptoError, InvalidInput


def b64encode(data: bytes | bytearray | memoryview) -> str:
    """Standard base64 with padding."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: object, *, field: str, error: type[CryptoError]) -> bytes:
    """Decode canonical standard base64, raising ``error`` (naming only ``field``)."""
    if not isinstance(text, str):
        raise error(f"{field} must be a base64 string")
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        # `from None`: binascii's message may quote the input, which can be key material.
        raise error(f"{field} is not valid base64") from None
    if base64.b64encode(data).decode("ascii") != text:
        raise error(f"{field} is not canonical base64")
    return data


def urlsafe_b64encode_unpadded(data: bytes) -> str:
    """base64url without padding, for short identifiers shown to people."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def canonical_json(obj: Mapping[str, object]) -> bytes:
    """The one byte form of a JSON object that m8 encrypts or signs."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def format_utc(moment: datetime) -> str:
    """ISO-8601 UTC with microseconds and ``Z``; refuses naive datetimes."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput("timestamps must be timezone-aware")
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_utc(text: object, *, field: str, error: type[CryptoError]) -> datetime:
    """Parse the exact form :func:`format_utc` writes."""
    if not isinstance(text, str):
        raise error(f"{field} must be an ISO-8601 UTC string")
    try:
        if not text.endswith("Z"):
            raise ValueError
        moment = datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
    except ValueError:
        raise error(
            f"{field} is not an ISO-8601 UTC timestamp like 2025-01-31T12:00:00.000000Z"
        ) from None
    if format_utc(moment) != text:
        raise error(f"{field} is not in canonical form")
    return moment


def require_str(data: Mapping[str, object], key: str, *, error: type[CryptoError]) -> str:
    """A non-empty string field of a decoded dict."""
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise error(f"{key} must be a non-empty string")
    return value


def require_fields(
    data: object, fields: frozenset[str], *, what: str, error: type[CryptoError]
) -> Mapping[str, object]:
    """``data`` as a dict holding exactly ``fields``."""
    if not isinstance(data, dict):
        raise error(f"{what} must be a JSON object")
    keys = set(data)
    if keys != fields:
        # Unknown names are not quoted: inside an envelope they are part of the plaintext.
        missing = sorted(fields - keys)
        raise error(f"{what} lacks fields {missing} or has {len(keys - fields)} unknown ones")
    return data


def check_text(value: object, *, field: str) -> str:
    """A non-empty string that encodes to UTF-8 (no lone surrogates)."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{field} must be a non-empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{field} is not valid Unicode text") from None
    return value
