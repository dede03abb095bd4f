"""Upstream credentials of a reactor, per store name: given by the operator, never via the API.

The JSON comes from a file (``M8_REACTOR_CREDENTIALS_FILE``, mode 0600) or from the
environment (``M8_REACTOR_CREDENTIALS``). Each entry pins where its store lives, and the
reactor refuses a store whose catalog config says otherwise (``store_misconfigured``): the
catalog comes from the API and the event store, and must not be able to send the
reactor's token, or the values it writes, anywhere else::

    {"vault-prod": {"address": "https://vault.example:8200", "token": "hvs.…"},
     "vault-dr": {"address": "https://dr.example:8200",
                  "role_id": "…", "secret_id": "…", "approle_mount": "approle"},
     "aws-prod": {"region": "eu-west-1"},
     "aws-local": {"region": "us-east-1", "endpoint_url": "http://127.0.0.1:5000"}}

A Vault entry has the store's ``address`` and a token or an AppRole. An AWS entry has the
store's ``region`` and, for an endpoint other than AWS's own, its ``endpoint_url``; the
keys come from boto3's usual chain (environment, profile, role).

For development, a store with no entry is served only where the developer's shell points:
a Vault store at exactly ``VAULT_ADDR``, with ``VAULT_TOKEN``; an AWS store whose
``endpoint_url`` is exactly ``AWS_ENDPOINT_URL`` (both unset: AWS itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    SecretStr,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from m8.crypto.errors import KeyFileError
from m8.crypto.keyfiles import read_private_file
from m8.reactors.settings import ReactorSettings
from m8.runtime import ConfigurationError


class VaultCredentials(BaseModel):
    """Where one Vault store lives and how a reactor logs in: a token, or an AppRole."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str
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


class AwsCredentials(BaseModel):
    """Where one AWS Secrets Manager store lives; its keys come from boto3's chain."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: str
    endpoint_url: str | None = None


def _kind(entry: Any) -> str | None:
    """Which kind of entry: one with an address is Vault's, one with a region AWS's."""
    if isinstance(entry, dict):
        return "vault" if "address" in entry else "aws" if "region" in entry else None
    return "vault" if isinstance(entry, VaultCredentials) else "aws"


StoreCredentials = Annotated[
    Annotated[VaultCredentials, Tag("vault")] | Annotated[AwsCredentials, Tag("aws")],
    Discriminator(
        _kind,
        custom_error_type="store_entry",
        custom_error_message="give a Vault store's 'address' or an AWS store's 'region'",
    ),
]
Credentials = dict[str, VaultCredentials | AwsCredentials]
_CREDENTIALS = TypeAdapter(dict[str, StoreCredentials])


def load_credentials(settings: ReactorSettings) -> Credentials:
    """The credentials the operator gave, by store name (none at all is allowed)."""
    if settings.reactor_credentials_file and settings.reactor_credentials:
        raise ConfigurationError(
            "set M8_REACTOR_CREDENTIALS_FILE or M8_REACTOR_CREDENTIALS, not both"
        )
    if settings.reactor_credentials_file:
        source = str(settings.reactor_credentials_file)
        text = _read_private(settings.reactor_credentials_file)
    elif settings.reactor_credentials:
        source = "M8_REACTOR_CREDENTIALS"
        text = settings.reactor_credentials.get_secret_value()
    else:
        return {}
    try:
        return _CREDENTIALS.validate_json(text)
    except ValidationError as exc:
        # Only where and what: pydantic's own text quotes the input, i.e. the secrets.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'document'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigurationError(f"{source} is not valid: {problems}") from None


def _read_private(path: Path) -> str:
    """The text of a file that only its owner may read (like m8's key files)."""
    try:
        return read_private_file(path).decode("utf-8")
    except KeyFileError as exc:
        raise ConfigurationError(str(exc)) from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{path} is not UTF-8 text") from None
