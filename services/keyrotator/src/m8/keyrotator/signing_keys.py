"""The rotator's Ed25519 signing keys: versioned, rotated on a schedule, kept across restarts.

One document per key in `rotator_signing_keys`: {_id: signing_key_id, seq, created_at,
not_after, verify_key, self_signature, master_key_id, sealed_seed, endorsed_by?,
endorsement?} (the seed encrypted at rest, see `master_key`). The key with the highest seq
signs. Once `period` has passed since it was created, whichever rotator process notices
first inserts seq + 1; the unique index on seq makes every rival insert fail and the rivals
adopt the winner's key. So processes sign with different keys for no longer than their
clocks disagree.

Every key's life is bounded when it is made: `not_after` = created_at + period + retention
(retention = upload key lifetime + overlap), covered by the key's own `self_signature` and
by its predecessor's `endorsement`, so nobody can lengthen it later. The rotator never signs
a statement that outlives its signer: a key is also due for rotation as soon as a statement
signed now could expire after its `not_after` (when a rotation is late, or the lifetimes
were raised since the key was made). A key endorses at most one successor (a unique index
on `endorsed_by`): whoever once held an old seed cannot vouch for a key of their own beside
the real successor.

A replaced key signed its last statement when its successor was created (give or take that
skew), and a statement expires one upload key lifetime after it was signed. The key thus
stays published for that lifetime plus an overlap margin after its successor appeared (and
never past its `not_after`); then it is withdrawn: it leaves the published set and its
sealed seed is deleted, while its public record stays for audits and is listed as
withdrawn, so clients drop their pins of it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nacl.signing import VerifyKey
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from m8.crypto import (
    CryptoError,
    RotatorSigningKey,
    encode_verify_key,
    endorse,
    format_utc,
    key_self_signature,
    verify_key_fingerprint,
)
from m8.eventstore.mongo import Document, mongo_errors
from m8.keyrotator import clock
from m8.keyrotator.master_key import MasterKeys
from m8.runtime import ConfigurationError

log = logging.getLogger(__name__)

COLLECTION = "rotator_signing_keys"
_SEALED = "sealed_seed"
# What fixes a key's life; documents written before keys had one hold neither.
_FIXED_LIFE = ("not_after", "self_signature")
# How far ahead of this process's clock another rotator's may run: a key made "later" than
# that is due at once (see `_due`).
CLOCK_SKEW = timedelta(minutes=1)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class PublishedKey:
    """A verify key as the `verify_keys` RPC publishes it."""

    signing_key_id: str
    verify_key: VerifyKey
    created_at: datetime
    not_after: datetime
    self_signature: bytes
    retires_at: datetime | None  # None while it is the key that signs
    endorsed_by: str | None = None
    endorsement: bytes | None = None

    def to_dict(self) -> dict[str, str | None]:
        """The contract's form (docs/contracts.md)."""
        return {
            "signing_key_id": self.signing_key_id,
            "verify_key": encode_verify_key(self.verify_key),
            "fingerprint": verify_key_fingerprint(self.verify_key),
            "created_at": format_utc(self.created_at),
            "not_after": format_utc(self.not_after),
            "self_signature": _b64(self.self_signature),
            "retires_at": format_utc(self.retires_at) if self.retires_at else None,
            "endorsed_by": self.endorsed_by,
            "endorsement": _b64(self.endorsement) if self.endorsement else None,
        }


@dataclass(frozen=True)
class WithdrawnKey:
    """A key whose statements have all expired and whose seed is gone."""

    signing_key_id: str
    withdrawn_at: datetime

    def to_dict(self) -> dict[str, str]:
        """The contract's form."""
        return {
            "signing_key_id": self.signing_key_id,
            "withdrawn_at": format_utc(self.withdrawn_at),
        }


@dataclass(frozen=True)
class PublishedKeys:
    """What the `verify_keys` RPC answers: the live keys, oldest first, and the withdrawn."""

    keys: list[PublishedKey]
    withdrawn: list[WithdrawnKey]

    def to_dict(self) -> dict[str, Any]:
        """The contract's form."""
        return {
            "keys": [key.to_dict() for key in self.keys],
            "withdrawn": [key.to_dict() for key in self.withdrawn],
        }


@dataclass
class Resealed:
    """What `SigningKeys.reseal` did, by signing key id (no key material)."""

    master_key_id: str
    resealed: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)  # under the newest master key before
    changed: list[str] = field(default_factory=list)  # withdrawn or re-sealed meanwhile
    # Under a master key not loaded, or a box that does not open: id -> why.
    unopenable: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Record:
    signing_key_id: str
    seq: int
    created_at: datetime
    not_after: datetime
    self_signature: bytes
    master_key_id: str
    sealed_seed: bytes = field(repr=False)
    endorsed_by: str | None = None
    endorsement: bytes | None = None

    @classmethod
    def from_document(cls, doc: Document) -> _Record:
        endorsement = doc.get("endorsement")
        return cls(
            doc["_id"],
            doc["seq"],
            doc["created_at"],
            doc["not_after"],
            base64.b64decode(doc["self_signature"]),
            doc["master_key_id"],
            base64.b64decode(doc[_SEALED]),
            doc.get("endorsed_by"),
            base64.b64decode(endorsement) if endorsement else None,
        )


class SigningKeys:
    """The live signing keys in MongoDB, with the current one's private half in memory."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        masters: MasterKeys,
        *,
        period: timedelta,
        retention: timedelta,
    ) -> None:
        self.keys = db[COLLECTION]
        self.masters = masters
        self.period = period
        self.retention = retention
        self._current: _Record | None = None
        self._opened: dict[str, RotatorSigningKey] = {}
        self._rotating = asyncio.Lock()  # one rotation attempt per process, not one per request

    async def create_indexes(self) -> None:
        """The uniqueness that lets exactly one process rotate, and a key endorse only one.

        Sparse: the first key has no `endorsed_by` field at all (never a null).
        """
        await self.keys.create_index("seq", unique=True, name="seq")
        await self.keys.create_index("endorsed_by", unique=True, sparse=True, name="endorsed_by")

    async def current(self) -> RotatorSigningKey:
        """The key that signs now; rotates first if it is due (see `_due`)."""
        key, _ = await self.current_until()
        return key

    async def current_until(self) -> tuple[RotatorSigningKey, datetime]:
        """The key that signs now and its `not_after`, from one look (no rotation between)."""
        if self._current is None or self._due(self._current):
            async with self._rotating:
                if self._current is None or self._due(self._current):
                    with mongo_errors():
                        self._current = await self._rotate_if_due()
        record = self._current
        return self._open(record), record.not_after

    async def published(self) -> PublishedKeys:
        """Every key whose statements may still be live, oldest first, and every withdrawn."""
        with mongo_errors():
            return await self._published()

    async def _published(self) -> PublishedKeys:
        now = clock.now()
        keys = [
            PublishedKey(
                record.signing_key_id,
                self._open(record).verify_key,
                record.created_at,
                record.not_after,
                record.self_signature,
                until,
                record.endorsed_by,
                record.endorsement,
            )
            for record, until in _retirements(await self._live(), self.retention)
            if until is None or now < until
        ]
        cursor = self.keys.find({"withdrawn_at": {"$exists": True}}).sort("seq", ASCENDING)
        withdrawn = [WithdrawnKey(doc["_id"], doc["withdrawn_at"]) async for doc in cursor]
        # A key withdrawn between the two reads is withdrawn: never answer it as both.
        gone = {key.signing_key_id for key in withdrawn}
        return PublishedKeys([key for key in keys if key.signing_key_id not in gone], withdrawn)

    async def maintain(self) -> None:
        """Rotates if due and withdraws keys whose statements have all expired."""
        await self.current()
        now = clock.now()
        for record, until in _retirements(await self._live(), self.retention):
            if until is None or now < until:
                continue
            result = await self.keys.update_one(
                {"_id": record.signing_key_id, _SEALED: {"$exists": True}},
                {"$unset": {_SEALED: ""}, "$set": {"withdrawn_at": now}},
            )
            self._opened.pop(record.signing_key_id, None)
            if result.modified_count:
                log.info("signing key withdrawn", extra={"signing_key_id": record.signing_key_id})

    async def reseal(self) -> Resealed:
        """Re-seals every live seed that is not under the newest master key under it.

        Each with one update conditional on the box it read, so it is safe while rotators
        run (they open a seed with whichever loaded key its master_key_id names) and a
        second run changes nothing.
        """
        newest = self.masters.newest
        done = Resealed(newest.key_id)
        async for doc in self.keys.find({_SEALED: {"$exists": True}}).sort("seq", ASCENDING):
            key_id, master_key_id = doc["_id"], doc["master_key_id"]
            if master_key_id == newest.key_id:
                done.already.append(key_id)
                continue
            try:
                key = _unseal(self.masters, key_id, master_key_id, base64.b64decode(doc[_SEALED]))
            except ConfigurationError as exc:
                done.unopenable[key_id] = str(exc)
                continue
            result = await self.keys.update_one(
                {"_id": key_id, "master_key_id": master_key_id, _SEALED: doc[_SEALED]},
                {"$set": {"master_key_id": newest.key_id, _SEALED: _b64(newest.seal(key))}},
            )
            (done.resealed if result.modified_count else done.changed).append(key_id)
        return done

    def _due(self, record: _Record) -> bool:
        # Also due once a statement signed now could expire after the key's not_after: a
        # statement lives at most the upload key lifetime, which `retention` bounds. And
        # due when it claims to be made in the future: no rotator made it so (beyond the
        # skew between their clocks), and `now >= created_at + period` would not come.
        now = clock.now()
        return (
            now >= record.created_at + self.period
            or now + self.retention > record.not_after
            or record.created_at > now + CLOCK_SKEW
        )

    def _not_after(self, created_at: datetime) -> datetime:
        # Never later than a key made now would get: a created_at in the future (which a
        # MongoDB writer can set) must not buy a longer life.
        return clock.to_ms(min(created_at, clock.now()) + self.period + self.retention)

    async def _live(self) -> list[_Record]:
        cursor = self.keys.find({_SEALED: {"$exists": True}}).sort("seq", ASCENDING)
        return [await self._record(doc) async for doc in cursor]

    async def _record(self, doc: Document) -> _Record:
        """The record of a live key; a document the old code wrote is brought up to date."""
        fixed = [name for name in _FIXED_LIFE if name in doc]
        if not fixed:
            doc = await self._upgrade(doc)
        elif len(fixed) != len(_FIXED_LIFE):
            # The old code wrote neither; m8 always writes both. Someone removed one, maybe
            # to have the rotator sign a longer life: it signs nothing of the kind.
            raise ConfigurationError(
                f"signing key {doc['_id']!r} has {fixed[0]} but not "
                f"{(set(_FIXED_LIFE) - set(fixed)).pop()}: its document in {COLLECTION} "
                "was altered; restore it from a backup or withdraw the key"
            )
        return _Record.from_document(doc)

    async def _upgrade(self, doc: Document) -> Document:
        # Written before keys had a fixed life: give it the one it would have had, signed,
        # and re-endorse it under v2 if its endorser's seed is still here (a v1
        # endorsement does not cover not_after, so it goes). The document may be a
        # MongoDB writer's (fields unset, created_at moved ahead): `_not_after` gives no
        # longer a life than a key made now. One conditional update: a rival doing the
        # same at once changes nothing, and its result is read back.
        key_id = doc["_id"]
        key = self._open_document(doc)
        not_after = self._not_after(doc["created_at"])
        changes: dict[str, Any] = {
            "$set": {
                "not_after": not_after,
                "self_signature": _b64(key_self_signature(key, not_after)),
            }
        }
        endorser_doc = None
        if doc.get("endorsed_by"):
            endorser_doc = await self.keys.find_one(
                {"_id": doc["endorsed_by"], _SEALED: {"$exists": True}}
            )
        if endorser_doc is not None:
            endorser = self._open_document(endorser_doc)
            changes["$set"]["endorsement"] = _b64(
                endorse(endorser, key_id, key.verify_key, not_after)
            )
        elif doc.get("endorsement"):
            changes["$unset"] = {"endorsement": ""}
        result = await self.keys.update_one(
            {"_id": key_id, **{name: {"$exists": False} for name in _FIXED_LIFE}}, changes
        )
        if result.modified_count:
            log.info("signing key given its not_after", extra={"signing_key_id": key_id})
        upgraded = await self.keys.find_one({"_id": key_id})
        if upgraded is None or any(name not in upgraded for name in _FIXED_LIFE):
            raise ConfigurationError(f"signing key {key_id!r} vanished while it was upgraded")
        return upgraded

    async def _rotate_if_due(self) -> _Record:
        # One read decides: the newest key of all (withdrawn ones keep their seq). Reading
        # the live keys first and the highest seq after would let a rival's fresh key slip
        # in between, and this process would add a second one beside it.
        last = await self.keys.find_one({}, sort=[("seq", DESCENDING)])
        newest = await self._record(last) if last and _SEALED in last else None
        if newest is not None and not self._due(newest):
            return newest
        seq = last["seq"] + 1 if last else 1
        key = RotatorSigningKey.generate(f"rsk-{seq}-{secrets.token_hex(4)}")
        created_at = clock.now()
        not_after = self._not_after(created_at)
        doc: dict[str, Any] = {
            "_id": key.signing_key_id,
            "seq": seq,
            "created_at": created_at,
            "not_after": not_after,
            "verify_key": encode_verify_key(key.verify_key),
            "self_signature": _b64(key_self_signature(key, not_after)),
            "master_key_id": self.masters.newest.key_id,
            _SEALED: _b64(self.masters.newest.seal(key)),
        }
        if newest is not None:
            # The outgoing key vouches for its successor and the successor's whole life:
            # pinned clients follow the rotation, and only to this one key.
            predecessor = self._open(newest)
            doc["endorsed_by"] = predecessor.signing_key_id
            doc["endorsement"] = _b64(
                endorse(predecessor, key.signing_key_id, key.verify_key, not_after)
            )
        try:
            await self.keys.insert_one(doc)
        except DuplicateKeyError:
            pass  # another rotator rotated first (same seq, or same endorser): use its key
        else:
            self._opened[key.signing_key_id] = key
            log.info("signing key rotated in", extra={"signing_key_id": key.signing_key_id})
        return (await self._live())[-1]

    def _open(self, record: _Record) -> RotatorSigningKey:
        return self._key(record.signing_key_id, record.master_key_id, record.sealed_seed)

    def _open_document(self, doc: Document) -> RotatorSigningKey:
        return self._key(doc["_id"], doc["master_key_id"], base64.b64decode(doc[_SEALED]))

    def _key(self, signing_key_id: str, master_key_id: str, sealed: bytes) -> RotatorSigningKey:
        key = self._opened.get(signing_key_id)
        if key is None:
            key = self._opened[signing_key_id] = _unseal(
                self.masters, signing_key_id, master_key_id, sealed
            )
        return key


def _unseal(
    masters: MasterKeys, signing_key_id: str, master_key_id: str, sealed: bytes
) -> RotatorSigningKey:
    master = masters.get(master_key_id)
    if master is None:
        raise ConfigurationError(
            f"signing key {signing_key_id!r} is sealed under master key {master_key_id!r}, "
            f"which is not loaded (loaded: {', '.join(masters.key_ids)}): list its file in "
            "M8_KEYROTATOR_MASTER_KEY_FILES, and run `m8 keys rotate-master-key` before "
            "dropping an old master key"
        )
    try:
        return master.open(signing_key_id, sealed)
    except CryptoError as exc:
        raise ConfigurationError(str(exc)) from None


def _retirements(
    records: Sequence[_Record], retention: timedelta
) -> Iterator[tuple[_Record, datetime | None]]:
    # A key retires `retention` after its successor took over, and never after its
    # not_after (no statement it signed outlives that); the newest has no successor.
    for record, successor in zip(records, [*records[1:], None], strict=True):
        until = min(successor.created_at + retention, record.not_after) if successor else None
        yield record, until
