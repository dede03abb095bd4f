"""A store type: all m8 knows about one kind of upstream store, in one descriptor.

The API's store models, the broker's queues, `m8 reactor <type>`, a reactor's credentials
and adapters, `m8ctl stores add <type>` and `m8 dev` all read the registry (registry.py);
none of them names a type. Importing a descriptor imports pydantic only: the adapter, and
with it its upstream's SDK, is imported when a reactor first builds one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

# An upstream's address in a store config. No '@' is allowed: a URL must not carry credentials.
URL_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$"

# Off by default: a fingerprint in clear upstream lets the store's readers see which
# secrets are equal. The reactors' credentials pin the same setting per store.
FingerprintInMetadata = Annotated[
    bool,
    Field(
        description=(
            "write each secret's fingerprint upstream in clear (the store's readers can then "
            "see which secrets are equal); otherwise it is sealed for the reactors"
        )
    ),
]


class StoreConfig(BaseModel):
    """A store's config in the catalog, as an admin registers it: never a credential."""

    model_config = ConfigDict(extra="forbid")


class StoreCredentials(BaseModel):
    """A reactor's entry for one store: where it lives, pinned, and how to log in.

    Every type's entry has `fingerprint_in_metadata` (pinned: it must equal the store's)
    and `adopt_unmanaged`, the reactor's alone (see m8.reactors.credentials).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    fingerprint_in_metadata: bool = False
    adopt_unmanaged: bool = False


@dataclass(frozen=True)
class DevServer:
    """A local server of this type, for development: `m8 dev` and the tests run one.

    m8.devservices runs `command` (a console script of the development tools, "{port}"
    a free loopback port) and waits until GET `ready` answers 2xx. A server it starts
    gets a new root login through `login_environment` (never on the command line), which
    it then passes on as `login_variable`; the address goes into `address_variable`: the
    variables the upstream's own tools read (VAULT_ADDR, VAULT_TOKEN). When
    `address_variable` is set already, that server is used instead (and checked with
    `ready` only if `ready_elsewhere`).

    The store `m8 dev` registers there has `config` and the address in `address_field`,
    and its reactors' entry the login in `login_field`. With
    M8_REACTOR_DEV_UNPINNED_STORES a reactor serves a store without a credentials entry
    only where `address_variable` points (m8.reactors.stores).
    """

    server: str  # its name among m8 dev's servers ("openbao")
    command: tuple[str, ...]
    ready: str
    address_variable: str
    address_field: str
    login_variable: str | None = None
    login_field: str | None = None
    login_environment: tuple[str, ...] = ()
    ready_elsewhere: bool = True
    config: Mapping[str, Any] = field(default_factory=dict)
    # What the reactors need besides their entry to talk to it (moto wants some keys).
    reactor_environment: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StoreType:
    """One kind of upstream store."""

    # The catalog's `type`, the queue `m8.reactor.<name>`, `m8 reactor <name>`.
    name: str
    # What it is, in a few words ("AWS Secrets Manager").
    title: str
    config: type[StoreConfig]
    credentials: type[StoreCredentials]
    # The credentials fields that the store's catalog config must equal, field by field.
    pinned: tuple[str, ...]
    # The field by which a credentials entry is known to be of this type ("address").
    entry_field: str
    # The largest value the upstream takes: m8's envelope limit (m8.crypto.envelope's
    # MAX_VALUE_BYTES) must not exceed any type's (a unit test checks it).
    max_value_bytes: int
    # "module:function", its AdapterFactory (m8.stores.adapters.base): imported only when
    # a reactor builds the first adapter of this type, and with it the upstream's SDK.
    adapter: str
    # Pinned fields that are URLs: compared with a trailing slash aside.
    addresses: tuple[str, ...] = ()
    # What `m8ctl stores add <name>` fills in for options not given (the API requires them).
    cli_defaults: Mapping[str, Any] = field(default_factory=dict)
    dev: DevServer | None = None
