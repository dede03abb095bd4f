"""HashiCorp Vault / OpenBao KV v2 as a store type (the adapter: adapters/vault.py)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, model_validator

from m8.stores.types import (
    URL_PATTERN,
    DevServer,
    FingerprintInMetadata,
    StoreConfig,
    StoreCredentials,
    StoreType,
)


class VaultStoreConfig(StoreConfig):
    """A HashiCorp Vault / OpenBao KV v2 store. Credentials go to the reactors, not here."""

    address: str = Field(
        max_length=2048,
        pattern=URL_PATTERN,
        examples=["https://vault.example.com:8200"],
        description="Vault/OpenBao URL.",
    )
    mount: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,128}$", examples=["secret"], description="KV v2 mount."
    )
    path_prefix: str = Field(
        max_length=256,
        pattern=r"^([A-Za-z0-9_.+=@-]+/)*$",
        examples=["m8/"],
        description="Prefix under the mount.",
    )
    fingerprint_in_metadata: FingerprintInMetadata = False


class VaultCredentials(StoreCredentials):
    """Where one Vault store lives and how a reactor logs in: a token, or an AppRole."""

    address: str
    mount: str
    path_prefix: str
    token: SecretStr | None = None
    role_id: str | None = None
    secret_id: SecretStr | None = None
    approle_mount: str = "approle"

    @model_validator(mode="after")
    def _one_login(self) -> Self:
        approle = self.role_id is not None and self.secret_id is not None
        if (self.token is not None) == approle or (self.role_id is None) != (
            self.secret_id is None
        ):
            raise ValueError("give either a token, or a role_id and a secret_id")
        return self


VAULT = StoreType(
    name="vault",
    title="HashiCorp Vault / OpenBao KV v2",
    config=VaultStoreConfig,
    credentials=VaultCredentials,
    pinned=("address", "mount", "path_prefix", "fingerprint_in_metadata"),
    addresses=("address",),
    entry_field="address",
    cli_defaults={"mount": "secret", "path_prefix": ""},
    # A KV entry on Consul storage; Vault's own request limit (32 MiB) is larger.
    max_value_bytes=512 * 1024,
    adapter="m8.stores.adapters.vault:from_credentials",
    dev=DevServer(
        server="openbao",
        command=("bao", "server", "-dev", "-dev-listen-address=127.0.0.1:{port}"),
        ready="/v1/sys/health",
        address_variable="VAULT_ADDR",
        address_field="address",
        login_variable="VAULT_TOKEN",
        login_field="token",
        login_environment=("BAO_DEV_ROOT_TOKEN_ID", "VAULT_DEV_ROOT_TOKEN_ID"),
        config={"mount": "secret", "path_prefix": "m8/"},
    ),
)
