"""The reactor groups' KEK public keys, per store type; the last one listed is the newest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from m8.crypto import KekPublicKey, KeyFileError, read_kek_public_file
from m8.domain import DomainError
from m8.runtime import ConfigurationError


class MissingKek(DomainError):
    """No KEK is registered for the store type of the target store."""

    code = "no_kek"


class KekPublicKeys:
    """Live KEK public keys of each store type, oldest first (as KekRing orders private ones)."""

    def __init__(self, by_type: Mapping[str, Sequence[KekPublicKey]]) -> None:
        for store_type, keks in by_type.items():
            ids = [kek.kek_id for kek in keks]
            if not ids:
                raise ConfigurationError(f"no KEK file is listed for store type {store_type!r}")
            if len(set(ids)) != len(ids):
                raise ConfigurationError(
                    f"a kek_id appears twice among the {store_type!r} KEKs ({', '.join(ids)}); "
                    "each KEK version needs its own id"
                )
        self._by_type = {store_type: list(keks) for store_type, keks in by_type.items()}

    @classmethod
    def load(cls, files: Mapping[str, Sequence[Path]]) -> KekPublicKeys:
        """Reads the public key files; ConfigurationError says which one is wrong."""
        if not files:
            raise ConfigurationError(
                "no KEK is configured: set M8_KEYROTATOR_KEK_FILES to the public halves "
                'written by `m8 keys generate-kek`, e.g. {"vault": ["/keks/vault-1.pub.json"]}'
            )
        try:
            return cls({t: [read_kek_public_file(p) for p in paths] for t, paths in files.items()})
        except KeyFileError as exc:
            raise ConfigurationError(f"M8_KEYROTATOR_KEK_FILES: {exc}") from None

    @property
    def store_types(self) -> frozenset[str]:
        """The store types keys can be issued for."""
        return frozenset(self._by_type)

    def newest(self, store_type: str) -> KekPublicKey:
        """The KEK new upload keys for `store_type` are sealed to, or MissingKek."""
        keks = self._by_type.get(store_type)
        if not keks:
            raise MissingKek(
                f"the key rotator has no KEK for {store_type!r} stores; an operator must add "
                "one to M8_KEYROTATOR_KEK_FILES (see `m8 keys generate-kek`)"
            )
        return keks[-1]
