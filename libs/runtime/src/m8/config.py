"""Settings for every m8 process, read once from the environment (prefix ``M8_``)."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TypeVar

import pydantic_settings
from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"

S = TypeVar("S", bound=BaseSettings)


class SettingsError(ValueError):
    """The environment holds settings that are not valid; the message names each variable
    and what is wrong with it, never its value (settings can be secrets)."""


class Settings(BaseSettings):
    """Where m8 finds its servers and how it behaves.

    The conventional variables of each tool (``VAULT_ADDR``, ``VAULT_TOKEN``,
    ``AWS_ENDPOINT_URL``) are honoured too, so an operator's shell setup just works.
    """

    model_config = SettingsConfigDict(env_prefix="M8_", extra="ignore")

    amqp_url: str = DEFAULT_AMQP_URL
    amqp_management_url: str = "http://127.0.0.1:15672"
    mongodb_uri: str | None = None
    mongodb_database: str = "m8"
    vault_addr: str | None = Field(
        default=None, validation_alias=AliasChoices("M8_VAULT_ADDR", "VAULT_ADDR")
    )
    vault_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("M8_VAULT_TOKEN", "VAULT_TOKEN")
    )
    aws_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("M8_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
    )
    aws_region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("M8_AWS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    )
    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern="^(json|console)$")
    state_dir: str = ".m8"
    services: str = Field(default="local", pattern="^(local|containers)$")
    # The cache of the in-memory SecantusDB that m8's development tooling starts (`m8 dev`,
    # the tests, the benchmarks) when M8_MONGODB_URI is unset. It holds every
    # document, so it bounds what a local system can hold: near full, every operation
    # waits for it, and full, writes fail (1G: about 50,000 uploads' documents).
    dev_mongodb_cache: str = Field(default="1G", pattern="^[1-9][0-9]*[MG]$")

    def upstream_variable(self, name: str) -> str | None:
        """A store type's development variable (its DevServer's: VAULT_ADDR, VAULT_TOKEN,
        AWS_ENDPOINT_URL), as these settings read it, else from the environment; either
        way with the M8_ prefix first. None when unset."""
        field = name.lower()
        if field in type(self).model_fields:
            value = getattr(self, field)
            return value.get_secret_value() if isinstance(value, SecretStr) else value
        return os.environ.get(f"M8_{name}") or os.environ.get(name) or None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()


def load_settings(cls: type[S]) -> S:
    """Reads `cls` from the environment; SettingsError lists what is wrong, without values."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix") or "")
        problems = "; ".join(
            f"{_variable(cls, prefix, error['loc'])}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise SettingsError(f"invalid settings: {problems}") from None
    except pydantic_settings.SettingsError as exc:
        # A value that is not the JSON a structured setting needs; the text names the field.
        raise SettingsError(f"invalid settings: {exc}") from None


def _variable(cls: type[BaseSettings], prefix: str, loc: tuple[int | str, ...]) -> str:
    # A field's first location is its name, or the first alias of one that has aliases.
    head, *rest = loc or ("settings",)
    name = f"{prefix}{head}".upper() if head in cls.model_fields else str(head).upper()
    return f"{name} at {'.'.join(str(part) for part in rest)}" if rest else name
