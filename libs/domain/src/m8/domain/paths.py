"""Secret paths: the one rule every part of m8 applies to them."""

from __future__ import annotations

import re

from m8.domain.errors import InvalidPath

SEGMENT = re.compile(r"[A-Za-z0-9_.+=@-]+")
MAX_PATH_LENGTH = 256
STORE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def check_path(path: str) -> str:
    """Returns `path` if it is a valid secret path (`team/db/password`), else InvalidPath."""
    if not path or len(path) > MAX_PATH_LENGTH:
        raise InvalidPath(f"a secret path has 1 to {MAX_PATH_LENGTH} characters")
    for segment in path.split("/"):
        if segment in ("", ".", "..") or not SEGMENT.fullmatch(segment):
            raise InvalidPath(
                "a secret path is segments of letters, digits and _.+=@- joined by '/', "
                "with no empty, '.' or '..' segment"
            )
    return path


def secret_id(store: str, path: str) -> str:
    """The id of the Secret aggregate for `path` in `store`."""
    return f"{store}:{path}"
