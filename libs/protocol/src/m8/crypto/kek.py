"""Key-encryption keys (KEKs): the X25519 pairs that upload private keys are sealed to."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from nacl.public import PrivateKey, PublicKey

from m8.crypto.encoding import check_text
from m8.crypto.errors import DuplicateKeyId, InvalidInput, UnknownKek


@dataclass(frozen=True, slots=True)
class KekPublicKey:
    """The public half of a KEK, registered with the key rotator."""

    kek_id: str
    public_key: PublicKey

    def __post_init__(self) -> None:
        check_text(self.kek_id, field="kek_id")


@dataclass(frozen=True, slots=True, eq=False)
class Kek:
    """A KEK pair of one reactor group, versioned by ``kek_id``; only reactors hold it."""

    kek_id: str
    private_key: PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        check_text(self.kek_id, field="kek_id")

    @classmethod
    def generate(cls, kek_id: str) -> Kek:
        """A fresh random KEK."""
        return cls(kek_id=kek_id, private_key=PrivateKey.generate())

    @property
    def public(self) -> KekPublicKey:
        """The half to give to the rotator."""
        return KekPublicKey(kek_id=self.kek_id, public_key=self.private_key.public_key)


class KekRing:
    """The live KEKs of a reactor group, oldest first; the last one is the newest.

    Several versions stay live during a rotation: keys sealed to an older KEK must still
    open until they expire, while new ones are sealed to the newest.
    """

    __slots__ = ("_by_id", "_newest")

    def __init__(self, keks: Iterable[Kek]) -> None:
        by_id: dict[str, Kek] = {}
        for kek in keks:
            if kek.kek_id in by_id:
                raise DuplicateKeyId(f"kek_id {kek.kek_id!r} appears twice in the KEK ring")
            by_id[kek.kek_id] = kek
        if not by_id:
            raise InvalidInput("a KEK ring needs at least one KEK")
        self._by_id = by_id
        self._newest = next(reversed(by_id.values()))

    @property
    def newest(self) -> Kek:
        """The KEK new upload keys are sealed to."""
        return self._newest

    def get(self, kek_id: str) -> Kek:
        """The KEK with ``kek_id``; :class:`UnknownKek` if it is not live."""
        try:
            return self._by_id[kek_id]
        except KeyError:
            raise UnknownKek(kek_id) from None

    def __contains__(self, kek_id: object) -> bool:
        return kek_id in self._by_id

    def __iter__(self) -> Iterator[Kek]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __repr__(self) -> str:
        return f"KekRing(kek_ids={list(self._by_id)!r})"
