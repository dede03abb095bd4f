"""Who may do what: principals, the token table and the authenticator's setup."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from m8.api import ApiSettings, auth, create_app
from m8.api.auth import (
    Authenticator,
    ClaimNames,
    JwksCache,
    Principal,
    TokenEntry,
    TokenFileTable,
    TokenTable,
    principal_of,
)
from m8.api.problems import Forbidden, Unauthorized, Unavailable
from m8.runtime import ConfigurationError


def entry(
    token: str,
    subject: str,
    roles: list[str],
    prefixes: list[str] | None = None,
    stores: list[str] | None = None,
) -> TokenEntry:
    digest = hashlib.sha256(token.encode()).hexdigest()
    fields: dict[str, object] = {"sha256": digest, "subject": subject, "roles": roles}
    if prefixes is not None:
        fields["prefixes"] = prefixes
    if stores is not None:
        fields["stores"] = stores
    return TokenEntry.model_validate(fields)


def user(prefixes: tuple[str, ...], stores: tuple[str, ...] = ("*",)) -> Principal:
    return Principal("u", frozenset({"user"}), prefixes, stores)


@pytest.mark.parametrize(
    ("prefix", "path", "allowed"),
    [
        ("team-a/", "team-a/db", True),
        ("team-a/", "team-a", False),
        ("team-a/", "team-ab/db", False),
        ("team-a", "team-a", True),
        ("team-a", "team-a/db/x", True),
        ("team-a", "team-ab/db", False),
        ("*", "any/path", True),
    ],
)
def test_a_prefix_covers_whole_path_segments(prefix: str, path: str, allowed: bool) -> None:
    assert user((prefix,)).may_write("s", path) is allowed


def test_a_user_writes_only_in_the_stores_it_names() -> None:
    assert user(("team-a/",), ("vault-dev",)).may_write("vault-dev", "team-a/x")
    assert not user(("team-a/",), ("vault-dev",)).may_write("aws-dev", "team-a/x")
    assert user(("team-a/",), ("*",)).may_write("aws-dev", "team-a/x")
    assert not user(("team-a/",), ()).may_write("vault-dev", "team-a/x")


def test_admins_write_anywhere_and_callers_without_rights_nowhere() -> None:
    assert Principal("root", frozenset({"admin"})).may_write("s", "any/path")
    assert not Principal("u", frozenset({"user"})).may_write("s", "any/path")  # no rights named
    assert not user(()).may_write("s", "any/path")
    assert not Principal("x", frozenset(), ("*",), ("*",)).may_write("s", "any/path")
    with pytest.raises(Forbidden):
        Principal("x", frozenset()).require_role("admin", "user")


@pytest.mark.parametrize(
    ("claims", "roles", "prefixes", "stores"),
    [
        ({}, set(), (), ()),
        ({"roles": "user admin"}, {"user", "admin"}, (), ()),
        ({"roles": ["user", "x"], "m8_prefixes": "team-a/"}, {"user"}, ("team-a/",), ()),
        ({"roles": ["user"], "m8_prefixes": ["a", "b/"]}, {"user"}, ("a", "b/"), ()),
        ({"roles": ["user"], "m8_prefixes": []}, {"user"}, (), ()),
        ({"roles": ["user"], "m8_stores": "vault-dev"}, {"user"}, (), ("vault-dev",)),
        ({"roles": ["user"], "m8_prefixes": "*", "m8_stores": ["*"]}, {"user"}, ("*",), ("*",)),
    ],
    ids=[
        "absent",
        "roles-string",
        "prefixes-string",
        "prefixes-list",
        "prefixes-empty",
        "stores-string",
        "everything-explicitly",
    ],
)
def test_an_absent_prefixes_or_stores_claim_means_none(
    claims: dict[str, object],
    roles: set[str],
    prefixes: tuple[str, ...],
    stores: tuple[str, ...],
) -> None:
    principal = principal_of({"sub": "carol", **claims})

    assert principal == Principal("carol", frozenset(roles), prefixes, stores)


@pytest.mark.parametrize(
    "claims",
    [
        {"m8_prefixes": None},
        {"m8_prefixes": 1},
        {"m8_prefixes": ["a/", None]},
        {"m8_stores": None},
        {"m8_stores": {"vault": True}},
        {"roles": {"admin": True}},
        {"roles": [["admin"]]},
    ],
)
def test_a_claim_of_another_type_is_refused(claims: dict[str, object]) -> None:
    with pytest.raises(Unauthorized, match="must be a string or a list of strings"):
        principal_of({"sub": "carol", **claims})


def test_the_stores_claim_is_read_where_the_settings_say() -> None:
    names = ClaimNames(roles="r", prefixes="p", stores="access.stores")

    principal = principal_of(
        {"sub": "carol", "r": "user", "p": "*", "access": {"stores": ["s1"]}}, names
    )

    assert principal.may_write("s1", "x")
    assert not principal.may_write("s2", "x")


def test_the_token_table_finds_the_caller_of_a_token_and_nobody_for_others() -> None:
    table = TokenTable(
        [
            entry("t-1", "alice", ["user"], ["a/"], ["vault-dev"]),
            entry("t-2", "root", ["admin"]),
        ]
    )

    alice = table.find("t-1")

    assert alice == Principal("alice", frozenset({"user"}), ("a/",), ("vault-dev",))
    assert table.find("t-2") == Principal("root", frozenset({"admin"}))
    assert table.find("t-3") is None
    assert table.find("") is None


async def test_a_malformed_authorization_header_is_unauthorized() -> None:
    authenticator = Authenticator(TokenTable([entry("t-1", "alice", ["user"])]), None)

    for header in (None, "", "Bearer", "Bearer   ", "Token t-1", "t-1"):
        with pytest.raises(Unauthorized):
            await authenticator.authenticate(header)
    assert (await authenticator.authenticate("bearer t-1")).subject == "alice"


def test_the_app_refuses_to_start_without_a_way_to_authenticate() -> None:
    with pytest.raises(ConfigurationError, match="M8_API_TOKEN_FILE or M8_OIDC_JWKS_URL"):
        create_app(ApiSettings())


def test_the_app_refuses_half_an_oidc_setup() -> None:
    with pytest.raises(ConfigurationError, match="M8_OIDC_ISSUER"):
        create_app(ApiSettings(oidc_jwks_url="https://id.example.com/jwks"))


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"tokens": [{"sha256": "abc", "subject": "x"}]}),
        json.dumps({"tokens": [{"sha256": "0" * 64, "subject": "x", "roles": ["root"]}]}),
        json.dumps({"tokens": [{"token": "plain-text", "subject": "x"}]}),
    ],
    ids=["not-json", "short-hash", "unknown-role", "plain-token"],
)
def test_an_unusable_token_file_stops_the_app_without_quoting_it(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(content)

    with pytest.raises(ConfigurationError) as refused:
        create_app(ApiSettings(api_token_file=path))

    assert str(path) in str(refused.value)
    assert "plain-text" not in str(refused.value)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _write(path: Path, *entries: TokenEntry) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"tokens": [e.model_dump() for e in entries]}))
    partial.replace(path)


def test_the_token_file_is_read_again_when_it_changes_at_most_once_per_interval(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens.json"
    _write(path, entry("t-1", "alice", ["user"]), entry("t-2", "bob", ["user"]))
    clock = Clock()
    table = TokenFileTable(path, check_every=1.0, clock=clock)

    _write(path, entry("t-2", "bob", ["user"]))  # alice revoked
    clock.now += 0.5
    before_the_interval = table.find("t-1")
    clock.now += 0.5
    after_it = table.find("t-1")

    assert before_the_interval is not None
    assert before_the_interval.subject == "alice"
    assert after_it is None
    assert table.find("t-2") is not None


def test_a_token_file_that_cannot_be_used_keeps_the_table_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.json"
    _write(path, entry("t-1", "alice", ["user"]))
    clock = Clock()
    table = TokenFileTable(path, check_every=1.0, clock=clock)

    path.write_text('{"tokens": [')
    clock.now += 1
    still = table.find("t-1")
    path.unlink()
    clock.now += 1
    gone = table.find("t-1")

    assert still is not None
    assert gone is not None
    assert caplog.text.count("the previous tokens stay in force") == 2


def test_reload_reads_the_file_at_once_whatever_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    _write(path, entry("t-1", "alice", ["user"]))
    authenticator = Authenticator(TokenFileTable(path, check_every=3600), None)

    _write(path, entry("t-2", "bob", ["user"]))
    authenticator.reload()

    assert authenticator.tokens is not None
    assert authenticator.tokens.find("t-1") is None
    assert authenticator.tokens.find("t-2") is not None


async def test_a_jwks_cache_does_not_fetch_again_for_unknown_kids_within_the_interval() -> None:
    clock = Clock()
    # Nothing listens on port 9 (discard): every fetch fails at once.
    cache = JwksCache("http://127.0.0.1:9/jwks", refetch=60, max_age=300, timeout=1, clock=clock)
    tries: list[float] = []
    fetch = cache._fetch

    async def counted() -> None:
        tries.append(clock.now)
        await fetch()

    cache._fetch = counted  # type: ignore[method-assign]

    for kid in ("a", "b", "c"):
        with pytest.raises(Unavailable):
            await cache.key(kid)
    clock.now += 60
    with pytest.raises(Unavailable):
        await cache.key("d")

    assert tries == [1000.0, 1060.0]


def test_a_token_file_completed_while_a_failed_read_was_under_way_is_read_at_the_next_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokens.json"
    _write(path, entry("t-1", "alice", ["user"]), entry("t-2", "bob", ["user"]))
    clock = Clock()
    table = TokenFileTable(path, check_every=1.0, clock=clock)
    real_load = auth.load_token_file

    def load_as_the_writer_finishes(read: Path) -> list[TokenEntry]:
        # The read catches the file half-written; right after it, the writer completes it
        # (alice revoked), before the reader could look at the file again.
        try:
            return real_load(read)
        finally:
            path.write_text(json.dumps({"tokens": [entry("t-2", "bob", ["user"]).model_dump()]}))

    path.write_text('{"tokens": [')  # the writer, half-way
    monkeypatch.setattr(auth, "load_token_file", load_as_the_writer_finishes)
    clock.now += 1
    during = table.find("t-1")  # the failed read: the old table stays in force
    monkeypatch.setattr(auth, "load_token_file", real_load)
    clock.now += 1
    after = table.find("t-1")

    assert during is not None
    assert after is None  # revoked without a SIGHUP
    assert table.find("t-2") is not None
