"""m8's upstream store types: one descriptor each (types.py), and a registry of them.

A store type is one module here (vault.py, aws.py: its config, its credentials entry, its
descriptor) and one adapter in adapters/; registering its descriptor below is all the
rest of m8 needs. The adapters are imported only by the reactors, which have the extras.
"""

from m8.stores import aws, vault
from m8.stores.registry import UnknownStoreType, all_types, get, names, register, unregister
from m8.stores.types import (
    DevServer,
    FingerprintInMetadata,
    StoreConfig,
    StoreCredentials,
    StoreType,
)

# The built-in store types, in the order m8 lists them.
register(vault.VAULT)
register(aws.AWS)

__all__ = [
    "DevServer",
    "FingerprintInMetadata",
    "StoreConfig",
    "StoreCredentials",
    "StoreType",
    "UnknownStoreType",
    "all_types",
    "get",
    "names",
    "register",
    "unregister",
]
