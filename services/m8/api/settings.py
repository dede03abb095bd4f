"""Settings of the HTTP API (prefix ``M8_``), on top of every process's settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from m8.config import Settings


class ApiSettings(Settings):
    """Where the API listens, whom it trusts, and its limits."""

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=1, le=65535)
    # A JSON or TOML file of SHA-256 hashes of bearer tokens (see m8.api.auth).
    api_token_file: Path | None = None
    # OpenID Connect: JWTs signed by a key of this JWKS, for this issuer and audience.
    oidc_jwks_url: str | None = None
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_roles_claim: str = "roles"  # dotted for nested claims: "realm_access.roles"
    oidc_prefixes_claim: str = "m8_prefixes"
    oidc_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])
    api_max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    api_rpc_timeout: float = Field(default=5.0, gt=0)
    api_retry_after_seconds: int = Field(default=5, ge=1)
    api_max_wait_seconds: float = Field(default=30.0, ge=0)
