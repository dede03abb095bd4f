"""The rotator's Ed25519 signing keys: versioned, rotated on a schedule, kept across restarts.

One document per key in `rotator_signing_keys`: {_id: signing_key_id, seq, created_at,
verify_key, master_key_id, sealed_seed} (the seed encrypted at rest, see `master_key`). The
key with the highest seq signs. Once `period` has passed since it was created, whichever
rotator process notices first inserts seq + 1; the unique index on seq makes every rival
insert fail and the rivals adopt the winner's key. So processes sign with different keys
for no longer than their clocks disagree.

A replaced key signed its last statement when its successor was created (give or take that
skew), and a statement expires one upload key lifetime after it was signed. The key thus
stays published for that lifetime plus an overlap margin after its successor appeared; then
it is withdrawn: it leaves the published set and its sealed seed is deleted, while its
public record stays for audits.
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
    RotatorSigningKey,
    encode_verify_key,
    endorse,
    format_utc,
    verify_key_fingerprint,
)
from m8.eventstore.mongo import Document
from m8.keyrotator import clock
from m8.keyrotator.master_key import MasterKey
from m8.runtime import ConfigurationError

log = logging.getLogger(__name__)

COLLECTION = "rotator_signing_keys"
_SEALED = "sealed_seed"


@dataclass(frozen=True)
class PublishedKey:
    """A verify key as the `verify_keys` RPC publishes it."""

    signing_key_id: str
    verify_key: VerifyKey
    created_at: datetime
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
            "retires_at": format_utc(self.retires_at) if self.retires_at else None,
            "endorsed_by": self.endorsed_by,
            "endorsement": base64.b64encode(self.endorsement).decode()
            if self.endorsement
            else None,
        }


@dataclass(frozen=True)
class _Record:
    signing_key_id: str
    seq: int
    created_at: datetime
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
        master: MasterKey,
        *,
        period: timedelta,
        retention: timedelta,
    ) -> None:
        self.keys = db[COLLECTION]
        self.master = master
        self.period = period
        self.retention = retention
        self._current: _Record | None = None
        self._opened: dict[str, RotatorSigningKey] = {}
        self._rotating = asyncio.Lock()  # one rotation attempt per process, not one per request

    async def create_indexes(self) -> None:
        """The uniqueness that lets exactly one process rotate."""
        await self.keys.create_index("seq", unique=True, name="seq")

    async def current(self) -> RotatorSigningKey:
        """The key that signs now; rotates first if its period is over."""
        if self._current is None or self._due(self._current):
            async with self._rotating:
                if self._current is None or self._due(self._current):
                    self._current = await self._rotate_if_due()
        return self._open(self._current)

    async def published(self) -> list[PublishedKey]:
        """Every key whose statements may still be live, oldest first."""
        now = clock.now()
        return [
            PublishedKey(
                record.signing_key_id,
                self._open(record).verify_key,
                record.created_at,
                until,
                record.endorsed_by,
                record.endorsement,
            )
            for record, until in _retirements(await self._live(), self.retention)
            if until is None or now < until
        ]

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

    def _due(self, record: _Record) -> bool:
        return clock.now() >= record.created_at + self.period

    async def _live(self) -> list[_Record]:
        cursor = self.keys.find({_SEALED: {"$exists": True}}).sort("seq", ASCENDING)
        return [_Record.from_document(doc) async for doc in cursor]

    async def _rotate_if_due(self) -> _Record:
        # One read decides: the newest key of all (withdrawn ones keep their seq). Reading
        # the live keys first and the highest seq after would let a rival's fresh key slip
        # in between, and this process would add a second one beside it.
        last = await self.keys.find_one({}, sort=[("seq", DESCENDING)])
        newest = _Record.from_document(last) if last and _SEALED in last else None
        if newest is not None and not self._due(newest):
            return newest
        seq = last["seq"] + 1 if last else 1
        key = RotatorSigningKey.generate(f"rsk-{seq}-{secrets.token_hex(4)}")
        doc: dict[str, Any] = {
            "_id": key.signing_key_id,
            "seq": seq,
            "created_at": clock.now(),
            "verify_key": encode_verify_key(key.verify_key),
            "master_key_id": self.master.key_id,
            _SEALED: base64.b64encode(self.master.seal(key)).decode("ascii"),
        }
        if newest is not None:
            # The outgoing key vouches for its successor: pinned clients follow the rotation.
            predecessor = self._open(newest)
            doc["endorsed_by"] = predecessor.signing_key_id
            doc["endorsement"] = base64.b64encode(
                endorse(predecessor, key.signing_key_id, key.verify_key)
            ).decode("ascii")
        try:
            await self.keys.insert_one(doc)
        except DuplicateKeyError:
            pass  # another rotator rotated first: use its key
        else:
            self._opened[key.signing_key_id] = key
            log.info("signing key rotated in", extra={"signing_key_id": key.signing_key_id})
        return (await self._live())[-1]

    def _open(self, record: _Record) -> RotatorSigningKey:
        key = self._opened.get(record.signing_key_id)
        if key is None:
            if record.master_key_id != self.master.key_id:
                raise ConfigurationError(
                    f"signing key {record.signing_key_id!r} is encrypted with master key "
                    f"{record.master_key_id!r}, but master key {self.master.key_id!r} is "
                    "loaded: point M8_KEYROTATOR_MASTER_KEY_FILE at the right file"
                )
            key = self._opened[record.signing_key_id] = self.master.open(
                record.signing_key_id, record.sealed_seed
            )
        return key


def _retirements(
    records: Sequence[_Record], retention: timedelta
) -> Iterator[tuple[_Record, datetime | None]]:
    # A key retires `retention` after its successor took over; the newest has no successor.
    for record, successor in zip(records, [*records[1:], None], strict=True):
        yield record, successor.created_at + retention if successor else None
