"""Who is calling: bearer tokens from a token file, or OpenID Connect JWTs.

The token file (JSON or TOML) lists SHA-256 hashes of tokens, never tokens:

    [[tokens]]
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    subject = "alice"
    roles = ["user"]
    prefixes = ["team-a/"]   # the paths this user may write
    stores = ["vault-dev"]   # the stores it may write them in

Roles are `admin` (everything) and `user` (upload, and read what m8 knows of the paths it
may upload to). Anyone authenticated without a role is refused (403).

A user's rights fail closed: it may write a path only if both a prefix of `prefixes` covers
it and `stores` names the store. Without `prefixes` (or `stores`) it may write nothing;
`["*"]` says "every path" (or "every store") and must be written out. An OIDC token says
the same in its claims M8_OIDC_PREFIXES_CLAIM (default `m8_prefixes`) and
M8_OIDC_STORES_CLAIM (default `m8_stores`): an absent claim means none.

The file is read again when it changes (its stat, looked at no more than once every
M8_API_TOKEN_FILE_CHECK_SECONDS) and on SIGHUP, so a revoked token stops working without
a restart; a new file that cannot be used leaves the previous table in force (logged).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from m8.api.problems import Forbidden, Unauthorized, Unavailable
from m8.api.settings import ApiSettings
from m8.runtime import ConfigurationError

log = logging.getLogger(__name__)

Role = Literal["admin", "user"]
ROLES: frozenset[str] = frozenset({"admin", "user"})
ANY = "*"  # in prefixes or stores: all of them


@dataclass(frozen=True)
class Principal:
    """An authenticated caller and the (store, path) pairs it may write."""

    subject: str
    roles: frozenset[str]
    prefixes: tuple[str, ...] = ()  # ANY: every path; empty: none
    stores: tuple[str, ...] = ()  # ANY: every store; empty: none

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def path_scope(self) -> tuple[str, ...] | None:
        """The prefixes covering every path this caller may write; None: any path."""
        return self._scope(self.prefixes)

    def store_scope(self) -> tuple[str, ...] | None:
        """The stores this caller may write in; None: any store."""
        return self._scope(self.stores)

    def _scope(self, granted: tuple[str, ...]) -> tuple[str, ...] | None:
        if self.is_admin:
            return None
        if "user" not in self.roles:
            return ()
        return None if ANY in granted else granted

    def may_write(self, store: str, path: str) -> bool:
        """Whether this caller may upload to `path` in `store` (and see what m8 knows of it)."""
        paths, stores = self.path_scope(), self.store_scope()
        return (stores is None or store in stores) and (
            paths is None or any(under(path, prefix) for prefix in paths)
        )

    def require_role(self, *roles: Role) -> None:
        """Forbidden unless the caller has one of `roles`."""
        if not self.roles & set(roles):
            raise Forbidden(f"this needs the role {' or '.join(roles)}; {self.subject!r} lacks it")

    def require_write(self, store: str, path: str) -> None:
        """Forbidden unless the caller may upload to `path` in `store`."""
        if not self.may_write(store, path):
            prefixes = ", ".join(self.prefixes) or "none"
            stores = ", ".join(self.stores) or "none"
            raise Forbidden(
                f"{self.subject!r} may not write this path in store {store!r}; "
                f"allowed prefixes: {prefixes}; allowed stores: {stores}"
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
    prefixes: list[str] = Field(default_factory=list)  # absent: no path; ["*"]: every path
    stores: list[str] = Field(default_factory=list)  # absent: no store; ["*"]: every store


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
        return Principal(
            found.subject, frozenset(found.roles), tuple(found.prefixes), tuple(found.stores)
        )


def _stamp(path: Path) -> tuple[int, int, int, int]:
    """What changes when the file is rewritten or replaced (an atomic rename too)."""
    stat = os.stat(path)
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


class TokenFileTable:
    """The token table of a file, read again when the file changes or on `reload()`."""

    def __init__(
        self, path: Path, check_every: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.check_every = check_every
        self.clock = clock
        self._table = TokenTable(load_token_file(path))  # at start, unusable is fatal
        self._stamp = _stamp_or_none(path)
        self._checked = clock()

    def find(self, token: str) -> Principal | None:
        now = self.clock()
        if now - self._checked >= self.check_every:
            # One stat a second at most, however many requests come.
            self._checked = now
            try:
                changed = _stamp(self.path) != self._stamp
            except OSError:
                changed = True  # gone or unreadable: reload says so, and keeps the table
            if changed:
                self.reload()
        return self._table.find(token)

    def reload(self) -> None:
        """Reads the file again; if it is unusable, keeps the table in force (logged)."""
        # The stamp of what is read is taken BEFORE the read, never after: a write that
        # completes in between then changes the file's stamp from this one, so the next
        # check reads it. A stamp taken after a failed read could be the complete new
        # file's, never read: revoked tokens would stay in force until the next SIGHUP.
        stamp = _stamp_or_none(self.path)
        try:
            entries = load_token_file(self.path)
        except ConfigurationError as exc:  # it turns OSError into one
            log.error(
                "the token file cannot be used; the previous tokens stay in force",
                # Its text names the path and the kind of fault only, never the content.
                extra={"path": str(self.path), "error": str(exc)},
            )
            self._stamp = stamp  # not the same broken file every second
            return
        self._table = TokenTable(entries)
        self._stamp = stamp
        log.info("token file read", extra={"path": str(self.path), "entries": len(entries)})


def _stamp_or_none(path: Path) -> tuple[int, int, int, int] | None:
    try:
        return _stamp(path)
    except OSError:
        return None


class JwksCache:
    """The identity provider's signing keys by kid, fetched at most once per interval.

    A token naming an unknown kid cannot make every request fetch the JWKS: a fetch happens
    when the keys are missing or older than `max_age`, and never sooner than `refetch`
    after the last try. A fetch that fails or times out keeps the keys there were.
    """

    def __init__(
        self,
        url: str,
        refetch: float,
        max_age: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.refetch = refetch
        self.max_age = max_age
        self.timeout = timeout
        self.clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._tried_at: float | None = None
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key `kid`; Unauthorized if the provider does not list it, Unavailable if the
        keys were never fetched."""
        if kid not in self._keys or self._stale():
            async with self._lock:  # concurrent callers wait for one fetch
                if (kid not in self._keys or self._stale()) and self._due():
                    await self._fetch()
        key = self._keys.get(kid)
        if key is not None:
            return key
        if self._fetched_at is None:
            raise Unavailable("the identity provider's keys cannot be fetched")
        raise Unauthorized("the token is signed by a key the identity provider does not list")

    def _stale(self) -> bool:
        return self._fetched_at is None or self.clock() - self._fetched_at >= self.max_age

    def _due(self) -> bool:
        return self._tried_at is None or self.clock() - self._tried_at >= self.refetch

    async def _fetch(self) -> None:
        self._tried_at = self.clock()
        try:
            async with (
                asyncio.timeout(self.timeout),  # the whole fetch, not each read
                httpx.AsyncClient(timeout=self.timeout) as client,
            ):
                response = await client.get(self.url, headers={"Accept": "application/json"})
                response.raise_for_status()
            keyset = jwt.PyJWKSet.from_dict(response.json())
        except (TimeoutError, httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.warning(
                "the identity provider's keys cannot be fetched; the known keys stay",
                extra={"error": type(exc).__name__},
            )
            return
        self._keys = {key.key_id: key for key in keyset.keys if key.key_id is not None}
        self._fetched_at = self.clock()


class OidcVerifier:
    """Verifies JWTs against the issuer's JWKS."""

    def __init__(self, settings: ApiSettings) -> None:
        if not (settings.oidc_jwks_url and settings.oidc_issuer and settings.oidc_audience):
            raise ConfigurationError(
                "OIDC needs M8_OIDC_JWKS_URL, M8_OIDC_ISSUER and M8_OIDC_AUDIENCE together"
            )
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.algorithms = list(settings.oidc_algorithms)
        self.claims = ClaimNames(
            settings.oidc_roles_claim, settings.oidc_prefixes_claim, settings.oidc_stores_claim
        )
        self.jwks = JwksCache(
            settings.oidc_jwks_url,
            refetch=settings.oidc_jwks_refetch_seconds,
            max_age=settings.oidc_jwks_max_age_seconds,
            timeout=settings.oidc_jwks_timeout_seconds,
        )

    async def verify(self, token: str) -> Principal:
        """The principal a valid JWT names; Unauthorized otherwise."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token is not valid: {type(exc).__name__}") from None
        if not isinstance(kid, str):
            raise Unauthorized("the token does not name its signing key (kid)")
        key = await self.jwks.key(kid)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token is not valid: {type(exc).__name__}") from None
        return principal_of(claims, self.claims)


@dataclass(frozen=True)
class ClaimNames:
    """Where a JWT carries roles, path prefixes and stores (dotted for nested claims)."""

    roles: str = "roles"
    prefixes: str = "m8_prefixes"
    stores: str = "m8_stores"


def principal_of(claims: Mapping[str, Any], names: ClaimNames = ClaimNames()) -> Principal:
    """The caller a verified JWT's claims name; Unauthorized if a claim has the wrong type.

    Roles: a list of strings, or one string of space-separated roles. Prefixes and stores:
    a list of strings, or one string (a list of one). An absent claim gives none; anything
    else is refused rather than guessed at: a mistyped claim must never mean "all".
    """
    roles = _claim(claims, names.roles)
    if isinstance(roles, str):
        roles = roles.split()
    return Principal(
        subject=str(claims["sub"]),
        roles=frozenset(_strings(roles, names.roles)) & ROLES,
        prefixes=_strings(_claim(claims, names.prefixes), names.prefixes),
        stores=_strings(_claim(claims, names.stores), names.stores),
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


def _strings(value: object, name: str) -> tuple[str, ...]:
    """A claim as strings: a string is one, an absent claim none, any other type refused."""
    if isinstance(value, _Absent):
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise Unauthorized(f"the token's claim {name!r} must be a string or a list of strings")


class TokenLookup(Protocol):
    def find(self, token: str) -> Principal | None: ...


class Authenticator:
    """Turns an Authorization header into a Principal, or refuses it."""

    def __init__(self, tokens: TokenLookup | None, oidc: OidcVerifier | None) -> None:
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
            tokens = TokenFileTable(settings.api_token_file, settings.api_token_file_check_seconds)
        oidc = OidcVerifier(settings) if settings.oidc_jwks_url else None
        return cls(tokens, oidc)

    def reload(self) -> None:
        """Reads the token file again (on SIGHUP)."""
        if isinstance(self.tokens, TokenFileTable):
            self.tokens.reload()

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
