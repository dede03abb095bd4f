"""Upstream secret stores behind one small protocol: one module per store type."""

from m8.reactors.adapters.aws import AwsSecretsManagerConfig, AwsSecretsManagerStore
from m8.reactors.adapters.base import (
    NotManagedByM8,
    PermanentUpstreamError,
    TransientUpstreamError,
    UpstreamError,
    UpstreamSecret,
    UpstreamStore,
    UpstreamVersion,
)
from m8.reactors.adapters.marks import FingerprintMarks
from m8.reactors.adapters.vault import VaultKvConfig, VaultKvStore

__all__ = [
    "AwsSecretsManagerConfig",
    "AwsSecretsManagerStore",
    "FingerprintMarks",
    "NotManagedByM8",
    "PermanentUpstreamError",
    "TransientUpstreamError",
    "UpstreamError",
    "UpstreamSecret",
    "UpstreamStore",
    "UpstreamVersion",
    "VaultKvConfig",
    "VaultKvStore",
]
