"""Upstream secret stores behind one small protocol (base.py): one module per store type.

Importing this package imports no upstream SDK; `m8.stores.adapters.vault` needs hvac
(the `vault` extra), `m8.stores.adapters.aws` boto3 (the `aws` extra).
"""

from m8.stores.adapters.base import (
    AdapterFactory,
    AdapterLimits,
    NotManagedByM8,
    PermanentUpstreamError,
    TransientUpstreamError,
    UpstreamError,
    UpstreamSecret,
    UpstreamStore,
    UpstreamVersion,
    adapter_factory,
)
from m8.stores.adapters.marks import FingerprintMarks

__all__ = [
    "AdapterFactory",
    "AdapterLimits",
    "FingerprintMarks",
    "NotManagedByM8",
    "PermanentUpstreamError",
    "TransientUpstreamError",
    "UpstreamError",
    "UpstreamSecret",
    "UpstreamStore",
    "UpstreamVersion",
    "adapter_factory",
]
