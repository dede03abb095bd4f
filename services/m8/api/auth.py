"""Who is calling: bearer tokens from a token file, or OpenID Connect JWTs.

The token file (JSON or TOML) lists SHA-256 hashes of tokens, never tokens:

    [[tokens]]
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    subject = "alice"
    roles = ["user"]
    prefixes = ["team-a/"]   # optional: the paths this user may write; absent means any

Roles are `admin` (everything) and `user` (upload, and read what m8 knows of the paths it
may upload to). Anyone authenticated without a role is refused (403).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from m8.api.problems import Forbidden, Unauthorized, Unavailable
from m8.api.settings import ApiSettings
from m8.runtime import ConfigurationError

Role = Literal["admin", "user"]
ROLES: frozenset[str] = frozenset({"admin", "user"})


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    subject: str
    roles: frozenset[str]
    prefixes: tuple[str, ...] | None = None  # None: any path

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def path_scope(self) -> tuple[str, ...] | None:
        """The prefixes covering every path this caller may write; None: any path."""
        if self.is_admin:
            return None
        if "user" not in self.roles:
            return ()
        return self.prefixes

    def may_write(self, path: str) -> bool:
        """Whether this caller may upload to `path` (and see what m8 knows of it)."""
        scope = self.path_scope()
        return scope is None or any(under(path, prefix) for prefix in scope)

    def require_role(self, *roles: Role) -> None:
        """Forbidden unless the caller has one of `roles`."""
        if not self.roles & set(roles):
            raise Forbidden(f"this needs the role {' or '.join(roles)}; {self.subject!r} lacks it")

    def require_write(self, path: str) -> None:
        """Forbidden unless the caller may upload to `path`."""
        if not self.may_write(path):
            allowed = ", ".join(self.prefixes or ()) or "none"
            raise Forbidden(
                f"{self.subject!r} may not write this path; allowed prefixes: {allowed}"
            )


def covered(prefix: str) -> tuple[str | None, str]:
    """What `prefix` covers: one path itself (or None), and every path starting with the other.

    By whole segments: "team-a" covers "team-a" and "team-a/db", never "team-ab/db";
    "team-a/" covers what is under "team-a/" only.
    """
    if prefix.endswith("/"):
        return None, prefix
    return prefix, prefix + "/"


def under(path: str, prefix: str) -> bool:
    """Whether `prefix` covers `path`."""
    exact, start = covered(prefix)
    return path == exact or path.startswith(start)


class TokenEntry(BaseModel):
    """One line of the token file."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    subject: str = Field(min_length=1)
    roles: list[Role] = Field(default_factory=list)
    prefixes: list[str] | None = None


class TokenFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[TokenEntry]


def load_token_file(path: Path) -> list[TokenEntry]:
    """The entries of a JSON or TOML token file (ConfigurationError if it is unusable)."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        return TokenFile.model_validate(raw).tokens
    except (OSError, ValueError, ValidationError) as exc:
        # The file holds hashes only, but say no more than where and what kind of fault.
        raise ConfigurationError(
            f"token file {path} is unusable ({type(exc).__name__}); see m8.api.auth"
        ) from None


class TokenTable:
    """Looks a token up by its hash, comparing with every entry in constant time."""

    def __init__(self, entries: Sequence[TokenEntry]) -> None:
        self._entries = [(bytes.fromhex(e.sha256), e) for e in entries]

    def find(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        found: TokenEntry | None = None
        for hashed, entry in self._entries:
            # No early exit: the time taken does not depend on which entry matched.
            if hmac.compare_digest(hashed, digest):
                found = entry
        if found is None:
            return None
        prefixes = tuple(found.prefixes) if found.prefixes is not None else None
        return Principal(found.subject, frozenset(found.roles), prefixes)


class OidcVerifier:
    """Verifies JWTs against the issuer's JWKS (keys cached, refetched for unknown kids)."""

    def __init__(self, settings: ApiSettings) -> None:
        if not (settings.oidc_jwks_url and settings.oidc_issuer and settings.oidc_audience):
            raise ConfigurationError(
                "OIDC needs M8_OIDC_JWKS_URL, M8_OIDC_ISSUER and M8_OIDC_AUDIENCE together"
            )
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.algorithms = list(settings.oidc_algorithms)
        self.roles_claim = settings.oidc_roles_claim
        self.prefixes_claim = settings.oidc_prefixes_claim
        self.jwks = jwt.PyJWKClient(settings.oidc_jwks_url, cache_keys=True, lifespan=300)

    async def verify(self, token: str) -> Principal:
        """The principal a valid JWT names; Unauthorized otherwise."""
        try:
            # PyJWKClient fetches with urllib: keep the event loop free meanwhile.
            key = await asyncio.to_thread(self.jwks.get_signing_key_from_jwt, token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWKClientConnectionError:
            raise Unavailable("the identity provider's keys cannot be fetched") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token is not valid: {type(exc).__name__}") from None
        return principal_of(claims, self.roles_claim, self.prefixes_claim)


def principal_of(claims: Mapping[str, Any], roles_claim: str, prefixes_claim: str) -> Principal:
    """The caller a verified JWT's claims name; Unauthorized if a claim has the wrong type.

    Roles: a list of strings, or one string of space-separated roles; absent: none.
    Prefixes: a list of strings, or one string (a list of one); absent: any path. Anything
    else is refused rather than guessed at: a mistyped prefixes claim must never mean
    "any path".
    """
    roles = _claim(claims, roles_claim)
    prefixes = _claim(claims, prefixes_claim)
    if isinstance(roles, str):
        roles = roles.split()
    return Principal(
        subject=str(claims["sub"]),
        roles=frozenset(_strings(roles, roles_claim) or ()) & ROLES,
        prefixes=_strings(prefixes, prefixes_claim),
    )


class _Absent:
    """A claim the token does not carry (unlike one that is there and null)."""


_ABSENT = _Absent()


def _claim(claims: Mapping[str, Any], name: str) -> object:
    value: object = claims
    for part in name.split("."):  # dotted for nested claims: "realm_access.roles"
        if not isinstance(value, Mapping):
            raise Unauthorized(f"the token's claim {name!r} is malformed: {part!r} is in no object")
        if part not in value:
            return _ABSENT
        value = value[part]
    return value


def _strings(value: object, name: str) -> tuple[str, ...] | None:
    """A claim as strings: a string is one, an absent claim None, any other type refused."""
    if isinstance(value, _Absent):
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise Unauthorized(f"the token's claim {name!r} must be a string or a list of strings")


class Authenticator:
    """Turns an Authorization header into a Principal, or refuses it."""

    def __init__(self, tokens: TokenTable | None, oidc: OidcVerifier | None) -> None:
        if tokens is None and oidc is None:
            raise ConfigurationError(
                "no way to authenticate callers: set M8_API_TOKEN_FILE or M8_OIDC_JWKS_URL"
            )
        self.tokens = tokens
        self.oidc = oidc

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> Authenticator:
        tokens = None
        if settings.api_token_file is not None:
            tokens = TokenTable(load_token_file(settings.api_token_file))
        oidc = OidcVerifier(settings) if settings.oidc_jwks_url else None
        return cls(tokens, oidc)

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a request with this Authorization header."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("send 'Authorization: Bearer <token>'", token_given=False)
        if self.tokens is not None and (principal := self.tokens.find(token)):
            return principal
        if self.oidc is not None and token.count(".") == 2:
            return await self.oidc.verify(token)
        raise Unauthorized("the token is not valid")
