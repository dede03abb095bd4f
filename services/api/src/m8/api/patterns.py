"""The server's input rules as JSON-Schema patterns, so the OpenAPI document states them.

A request valid by the document must never be refused with 422: the path grammar and the
byte lengths of base64 fields are therefore written out as regular expressions (no
look-arounds: the document's readers include generators that do not support them).
"""

from __future__ import annotations

# m8.domain.paths.SEGMENT's characters; tests/unit/test_api_patterns.py holds the two equal.
_SEGMENT_CHAR = "[A-Za-z0-9_.+=@-]"
_NOT_DOT = "[A-Za-z0-9_+=@-]"
# A segment is not "." or "..": it starts with a non-dot, or with one dot and a non-dot,
# or with two dots and one more character.
_SEGMENT = rf"(?:{_NOT_DOT}|\.{_NOT_DOT}|\.\.{_SEGMENT_CHAR}){_SEGMENT_CHAR}*"
PATH_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT})*$"

_B64 = "[A-Za-z0-9+/]"
_QUAD = f"{_B64}{{4}}"
# The last character before padding carries unused bits, which canonical base64 keeps zero.
_ONE_BYTE_TAIL = f"{_B64}[AQgw]=="
_TWO_BYTES_TAIL = f"{_B64}{{2}}[AEIMQUYcgkosw048]="


def base64_pattern(size: int) -> str:
    """Canonical standard base64 (with padding) of exactly `size` bytes."""
    quads, rest = divmod(size, 3)
    tail = ("", _ONE_BYTE_TAIL, _TWO_BYTES_TAIL)[rest]
    return f"^{_B64}{{{4 * quads}}}{tail}$"


def base64_min_pattern(min_size: int) -> str:
    """Canonical standard base64 (with padding) of at least `min_size` bytes."""
    quads, rest = divmod(min_size, 3)
    any_tail = f"(?:{_ONE_BYTE_TAIL}|{_TWO_BYTES_TAIL})"
    longer = f"(?:{_QUAD}){{{quads + 1},}}{any_tail}?"
    tails = (f"{any_tail}?", any_tail, _TWO_BYTES_TAIL)[rest]
    as_long = f"(?:{_QUAD}){{{quads}}}{tails}"
    return f"^(?:{longer}|{as_long})$"
