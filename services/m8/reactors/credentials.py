"""Upstream credentials of a reactor, per store name: given by the operator, never via the API.

The JSON comes from a file (``M8_REACTOR_CREDENTIALS_FILE``, mode 0600) or from the
environment (``M8_REACTOR_CREDENTIALS``)::

    {"vault-prod": {"token": "hvs.…"},
     "vault-dr": {"role_id": "…", "secret_id": "…", "approle_mount": "approle"}}

AWS stores need no entry: boto3's usual chain (environment, profile, role) applies.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, SecretStr, TypeAdapter, ValidationError, model_validator

from m8.reactors.settings import ReactorSettings
from m8.runtime import ConfigurationError


class VaultCredentials(BaseModel):
    """How a reactor logs in to one Vault store: a token, or an AppRole."""

    model_config = ConfigDict(frozen=True, extra="forbid")

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


Credentials = dict[str, VaultCredentials]
_CREDENTIALS = TypeAdapter(Credentials)


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
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ConfigurationError(f"cannot open {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if mode & 0o077:
            raise ConfigurationError(
                f"{path} has mode {stat.S_IMODE(mode):04o}; group and others must have no "
                f"access (chmod 600 {path})"
            )
        raw = handle.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{path} is not UTF-8 text") from None
