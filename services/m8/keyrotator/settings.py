"""What the key rotator reads from the environment (prefix ``M8_``)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from m8.config import Settings

_SECONDS = re.compile(r"\d+(\.\d+)?")


def _seconds(value: object) -> object:
    # pydantic reads "PT15M" or "00:15:00" but not a plain "900" from the environment.
    return float(value) if isinstance(value, str) and _SECONDS.fullmatch(value) else value


Duration = Annotated[timedelta, BeforeValidator(_seconds)]


class KeyRotatorSettings(Settings):
    """The shared settings plus the rotator's keys, lifetimes and schedules.

    Durations take seconds (``900``, ``0.5``) or ISO-8601 (``PT15M``).
    """

    model_config = SettingsConfigDict(env_prefix="M8_", extra="ignore")

    keyrotator_kek_files: dict[str, list[Path]] = Field(
        default_factory=dict,
        description=(
            "KEK public-key files per store type, as JSON: "
            '{"vault": ["vault-1.pub.json", "vault-2.pub.json"]}. Oldest first: the LAST '
            "file of a type is the newest KEK, the one new upload keys are sealed to; the "
            "others stay listed until no key sealed to them can still be live."
        ),
    )
    keyrotator_master_key_file: Path | None = Field(
        default=None,
        description="The 0600 file written by `m8 keys generate-master-key`.",
    )
    keyrotator_master_key: SecretStr | None = Field(
        default=None,
        description="The same file's JSON text, for deployments that pass keys in the environment.",
    )
    keyrotator_upload_key_lifetime: Duration = Field(default=timedelta(minutes=15), gt=timedelta(0))
    keyrotator_sweep_interval: Duration = Field(default=timedelta(seconds=10), gt=timedelta(0))
    keyrotator_signing_key_period: Duration = Field(
        default=timedelta(days=30),
        gt=timedelta(0),
        description="How long one signing key signs before the next one replaces it.",
    )
    keyrotator_signing_key_overlap: Duration = Field(
        default=timedelta(minutes=5),
        ge=timedelta(0),
        description=(
            "A replaced signing key stays published for the upload key lifetime plus this "
            "margin (clock skew between rotator processes), so every statement it signed "
            "verifies until it expires."
        ),
    )
