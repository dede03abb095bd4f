"""Who may do what: principals, the token table and the authenticator's setup."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from m8.api import ApiSettings, create_app
from m8.api.auth import Authenticator, Principal, TokenEntry, TokenTable, principal_of
from m8.api.problems import Forbidden, Unauthorized
from m8.runtime import ConfigurationError


def entry(
    token: str, subject: str, roles: list[str], prefixes: list[str] | None = None
) -> TokenEntry:
    digest = hashlib.sha256(token.encode()).hexdigest()
    return TokenEntry.model_validate(
        {"sha256": digest, "subject": subject, "roles": roles, "prefixes": prefixes}
    )


@pytest.mark.parametrize(
    ("prefix", "path", "allowed"),
    [
        ("team-a/", "team-a/db", True),
        ("team-a/", "team-a", False),
        ("team-a/", "team-ab/db", False),
        ("team-a", "team-a", True),
        ("team-a", "team-a/db/x", True),
        ("team-a", "team-ab/db", False),
    ],
)
def test_a_prefix_covers_whole_path_segments(prefix: str, path: str, allowed: bool) -> None:
    assert Principal("u", frozenset({"user"}), (prefix,)).may_write(path) is allowed


def test_admins_write_anywhere_and_callers_without_a_role_nowhere() -> None:
    assert Principal("root", frozenset({"admin"}), ()).may_write("any/path")
    assert Principal("u", frozenset({"user"})).may_write("any/path")  # no prefixes: any path
    assert not Principal("u", frozenset({"user"}), ()).may_write("any/path")
    assert not Principal("x", frozenset()).may_write("any/path")
    with pytest.raises(Forbidden):
        Principal("x", frozenset()).require_role("admin", "user")


@pytest.mark.parametrize(
    ("claims", "roles", "prefixes"),
    [
        ({}, set(), None),
        ({"roles": "user admin"}, {"user", "admin"}, None),
        ({"roles": ["user", "offline_access"], "m8_prefixes": "team-a/"}, {"user"}, ("team-a/",)),
        ({"roles": ["user"], "m8_prefixes": ["a", "b/"]}, {"user"}, ("a", "b/")),
        ({"roles": ["user"], "m8_prefixes": []}, {"user"}, ()),
    ],
    ids=["absent", "roles-string", "prefixes-string", "prefixes-list", "prefixes-empty"],
)
def test_only_an_absent_prefixes_claim_means_any_path(
    claims: dict[str, object], roles: set[str], prefixes: tuple[str, ...] | None
) -> None:
    principal = principal_of({"sub": "carol", **claims}, "roles", "m8_prefixes")

    assert principal == Principal("carol", frozenset(roles), prefixes)


@pytest.mark.parametrize(
    "claims",
    [
        {"m8_prefixes": None},
        {"m8_prefixes": 1},
        {"m8_prefixes": ["a/", None]},
        {"roles": {"admin": True}},
        {"roles": [["admin"]]},
    ],
)
def test_a_claim_of_another_type_is_refused(claims: dict[str, object]) -> None:
    with pytest.raises(Unauthorized, match="must be a string or a list of strings"):
        principal_of({"sub": "carol", **claims}, "roles", "m8_prefixes")


def test_the_token_table_finds_the_caller_of_a_token_and_nobody_for_others() -> None:
    table = TokenTable([entry("t-1", "alice", ["user"], ["a/"]), entry("t-2", "root", ["admin"])])

    alice = table.find("t-1")

    assert alice == Principal("alice", frozenset({"user"}), ("a/",))
    assert table.find("t-2") == Principal("root", frozenset({"admin"}), None)
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
