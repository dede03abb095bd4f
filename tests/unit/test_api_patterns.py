"""The OpenAPI document's patterns say exactly what the server accepts."""

from __future__ import annotations

import base64
import re

from hypothesis import given
from hypothesis import strategies as st

from m8.api.patterns import PATH_PATTERN, base64_min_pattern, base64_pattern
from m8.domain import check_path
from m8.domain.errors import InvalidPath

PATH = re.compile(PATH_PATTERN)
# Characters of paths and their near misses, so generated paths often come close to valid.
PATHISH = st.text(alphabet="ab.-_+=@/\\ %\n0", max_size=24)


def _server_accepts(path: str) -> bool:
    try:
        check_path(path)
    except InvalidPath:
        return False
    return True


@given(PATHISH)
def test_the_path_pattern_is_the_domains_path_rule(path: str) -> None:
    # Within the length limit, which the document states as maxLength.
    assert bool(PATH.fullmatch(path)) == _server_accepts(path)


def test_the_path_pattern_refuses_dot_segments_and_allows_dots_inside_names() -> None:
    for path in ("a/./b", "a/../b", ".", "..", "a/", "/a", "a//b"):
        assert not PATH.fullmatch(path), path
    for path in ("...", ".env", "..x", "a.b/c..d", "team-a/db+1=@x"):
        assert PATH.fullmatch(path), path


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=40))
def test_a_base64_pattern_accepts_exactly_the_canonical_text_of_its_size(
    data: bytes, size: int
) -> None:
    text = base64.b64encode(data).decode()

    assert bool(re.fullmatch(base64_pattern(size), text)) == (len(data) == size)
    assert bool(re.fullmatch(base64_min_pattern(size), text)) == (len(data) >= size)


def test_a_base64_pattern_refuses_text_that_is_not_canonical() -> None:
    canonical = base64.b64encode(bytes(32)).decode()  # ends "AAA="
    loose = canonical[:-2] + "B="  # the unused bits set: decodes, but not canonical

    assert re.fullmatch(base64_pattern(32), canonical)
    assert not re.fullmatch(base64_pattern(32), loose)
    assert not re.fullmatch(base64_pattern(32), canonical.rstrip("="))
