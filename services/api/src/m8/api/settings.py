"""Settings of the HTTP API (prefix ``M8_``), on top of every process's settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from m8.config import Settings


class ApiSettings(Settings):
    """Where the API listens, whom it trusts, and its limits."""

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=1, le=65535)
    # A JSON or TOML file of SHA-256 hashes of bearer tokens (see m8.api.auth). Read again
    # when it changes (looked at no more often than this) and on SIGHUP.
    api_token_file: Path | None = None
    api_token_file_check_seconds: float = Field(default=1.0, gt=0)
    # OpenID Connect: JWTs signed by a key of this JWKS, for this issuer and audience.
    oidc_jwks_url: str | None = None
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_roles_claim: str = "roles"  # dotted for nested claims: "realm_access.roles"
    oidc_prefixes_claim: str = "m8_prefixes"
    oidc_stores_claim: str = "m8_stores"
    oidc_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])
    # The JWKS is fetched at most once per interval, whatever kids tokens name, and is
    # refreshed once it is older than the max age; a fetch that fails keeps the old keys.
    oidc_jwks_refetch_seconds: float = Field(default=60.0, gt=0)
    oidc_jwks_max_age_seconds: float = Field(default=300.0, gt=0)
    oidc_jwks_timeout_seconds: float = Field(default=3.0, gt=0)
    api_max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    api_rpc_timeout: float = Field(default=5.0, gt=0)
    api_retry_after_seconds: int = Field(default=5, ge=1)
    api_max_wait_seconds: float = Field(default=30.0, ge=0)
    # Limits per caller, for the whole deployment: each of the M8_API_REPLICAS replicas
    # enforces its share (total / replicas) in its own memory, so they cost no database
    # write; a load balancer that spreads a caller's requests evenly makes the share hold.
    api_replicas: int = Field(default=1, ge=1)
    api_upload_keys_per_minute: int = Field(default=60, ge=1)
    api_uploads_per_minute: int = Field(default=60, ge=1)
    api_long_polls_per_caller: int = Field(default=4, ge=1)
    # /docs, /redoc and /openapi.json: off unless asked for (m8 dev turns them on).
    api_public_docs: bool = False
    # Prometheus metrics on their own port (on M8_API_HOST), never on the API's; unset: none.
    api_metrics_port: int | None = Field(default=None, ge=1, le=65535)
