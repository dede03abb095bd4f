"""Upstream credentials of a reactor, per store name: given by the operator, never via the API.

The JSON comes from a file (``M8_REACTOR_CREDENTIALS_FILE``, mode 0600) or from the
environment (``M8_REACTOR_CREDENTIALS``). A reactor serves only the stores it has an entry
for, and only exactly as the entry describes them: every field that decides where a value
lands, how it is encrypted and what upstream shows besides it is pinned here, and a store
whose catalog config says anything else is refused (``store_misconfigured``). The catalog
comes from the API and the event store, and must not be able to send the reactor's token,
or the values it writes, anywhere else::

    {"vault-prod": {"address": "https://vault.example:8200", "mount": "secret",
                    "path_prefix": "m8/", "token": "hvs.…"},
     "vault-dr": {"address": "https://dr.example:8200", "mount": "kv", "path_prefix": "",
                  "role_id": "…", "secret_id": "…", "approle_mount": "approle"},
     "aws-prod": {"region": "eu-west-1", "name_prefix": "m8/",
                  "kms_key_id": "arn:aws:kms:eu-west-1:111122223333:key/…"},
     "aws-local": {"region": "us-east-1", "name_prefix": "m8/",
                   "endpoint_url": "http://127.0.0.1:5000", "fingerprint_in_metadata": true}}

Each store type's entry is its StoreType's credentials model (m8.stores; it is known by
its type's ``entry_field``: a Vault entry by its address, an AWS entry by its region).
A Vault entry has the store's ``address``, ``mount`` and ``path_prefix``, and a token or an
AppRole. An AWS entry has the store's ``region`` and ``name_prefix``, its ``kms_key_id``
(absent: the store must name none, so AWS's own key is used) and, for an endpoint other
than AWS's own, its ``endpoint_url`` (absent: AWS itself); the keys come from boto3's
usual chain (environment, profile, role). ``fingerprint_in_metadata`` (default false)
must equal the store's: only then are fingerprints written upstream in clear.

``adopt_unmanaged`` (default false, either kind) is the reactor's alone, never the
catalog's: true lets m8 write over a secret that exists upstream without m8's mark (and
mark it m8's); false refuses such a write (``not_managed_by_m8``), so m8 never clobbers
what others keep in the store.

A store without an entry is refused. Only for development, M8_REACTOR_DEV_UNPINNED_STORES
=true serves such a store where the developer's shell points: a Vault store at exactly
``VAULT_ADDR``, with ``VAULT_TOKEN``; an AWS store whose ``endpoint_url`` is exactly
``AWS_ENDPOINT_URL`` (which must be set), each as its catalog config says.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag, TypeAdapter, ValidationError

from m8 import stores
from m8.crypto.errors import KeyFileError
from m8.crypto.keyfiles import read_private_file
from m8.reactors.settings import ReactorSettings
from m8.runtime import ConfigurationError
from m8.stores import StoreCredentials

log = logging.getLogger(__name__)


def _kind(entry: Any) -> str | None:
    """Which store type an entry is of: the one whose `entry_field` it has (Vault's address)."""
    for store_type in stores.all_types():
        if isinstance(entry, dict) and store_type.entry_field in entry:
            return store_type.name
        if isinstance(entry, store_type.credentials):
            return store_type.name
    return None


def _entries_adapter() -> TypeAdapter[dict[str, StoreCredentials]]:
    """Parses the JSON into entries of the store types registered now."""
    types = stores.all_types()
    given = " or ".join(f"{_a(t.name)} {t.name} store's {t.entry_field!r}" for t in types)
    entry: Any = Annotated[
        Union[tuple(Annotated[t.credentials, Tag(t.name)] for t in types)],  # noqa: UP007
        Discriminator(_kind, custom_error_type="store_entry", custom_error_message=f"give {given}"),
    ]
    return TypeAdapter(dict[str, entry])


def _a(word: str) -> str:
    """The article before `word`: "an aws store", "a vault store"."""
    return "an" if word[:1] in "aeiou" else "a"


@dataclass(frozen=True)
class Credentials:
    """The operator's entries by store name; whether stores without one are served (dev)."""

    stores: Mapping[str, StoreCredentials] = field(default_factory=dict)
    dev_unpinned_stores: bool = False

    def get(self, name: str) -> StoreCredentials | None:
        """The entry of the store called `name`, if the operator gave one."""
        return self.stores.get(name)


def load_credentials(settings: ReactorSettings) -> Credentials:
    """The credentials the operator gave, by store name (none at all is allowed)."""
    if settings.reactor_dev_unpinned_stores:
        log.warning(
            "M8_REACTOR_DEV_UNPINNED_STORES is on: stores without a credentials entry are "
            "served at VAULT_ADDR and AWS_ENDPOINT_URL as their catalog config says. This "
            "is for development only; never set it where the catalog is not yours alone"
        )
    return Credentials(_entries(settings), settings.reactor_dev_unpinned_stores)


def _entries(settings: ReactorSettings) -> dict[str, StoreCredentials]:
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
        return _entries_adapter().validate_json(text)
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
