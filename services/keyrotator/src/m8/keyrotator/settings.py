"""What the key rotator reads from the environment (prefix ``M8_``)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from m8.config import Settings

_SECONDS = re.compile(r"\d+(\.\d+)?")


def _seconds(value: object) -> object:
    # pydantic reads "PT15M" or "00:15:00" but not a plain "900" from the environment.
    return float(value) if isinstance(value, str) and _SECONDS.fullmatch(value) else value


Duration = Annotated[timedelta, BeforeValidator(_seconds)]


def _comma_separated(value: object) -> object:
    # "a.json, b.json" from the environment; a list from code passes through.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaSeparatedPaths = Annotated[list[Path], NoDecode, BeforeValidator(_comma_separated)]

# m8ctl refuses a successor key whose not_after exceeds its endorser's by more than 366
# days; successive keys' not_after are one period apart, so a longer period would strand
# every pinned client at the first rotation.
MAX_SIGNING_KEY_PERIOD = timedelta(days=365)


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
    keyrotator_master_key_files: CommaSeparatedPaths = Field(
        default_factory=list,
        description=(
            "Master key files, comma-separated, NEWEST FIRST: new signing keys are sealed "
            "under the first; a stored key opens with whichever listed key sealed it. List "
            "two while `m8 keys rotate-master-key` moves the stored keys to the new one."
        ),
    )
    keyrotator_master_key_file: Path | None = Field(
        default=None,
        description="The 0600 file written by `m8 keys generate-master-key` (one key).",
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
        description=(
            "How long one signing key signs before the next one replaces it; at most 365 days."
        ),
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

    keyrotator_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="The operations port: /metrics, /healthz and /readyz (m8.health); 0: none.",
    )
    keyrotator_metrics_host: str = Field(
        default="0.0.0.0",
        description="Where the operations port listens: every interface, or 127.0.0.1 & co.",
    )

    @field_validator("keyrotator_signing_key_period")
    @classmethod
    def _period_m8ctl_follows(cls, period: timedelta) -> timedelta:
        if period > MAX_SIGNING_KEY_PERIOD:
            raise ValueError(
                f"must be at most {MAX_SIGNING_KEY_PERIOD.days} days (e.g. P365D or 31536000): "
                "m8ctl refuses a successor signing key whose not_after is more than 366 "
                "days past its predecessor's, so clients could not follow the rotation"
            )
        return period
