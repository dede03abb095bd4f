"""Where the rotator keeps issued upload keys: sealed in `upload_keys`, listed in
`rotator_live_keys` until destroyed.

`upload_keys` holds one document per key, as docs/contracts.md pins it (reactors read
it). Deleting the document destroys the key. The rotator destroys keys itself, recording
UploadKeyDestroyed in the same transaction, when an upload ends or the key expires (the
sweep). The TTL index is only the backstop for when no rotator has run for a long while:
it deletes a key `BACKSTOP` after its expiry, so the decryption window closes even then,
but it records no event. That is why it fires long after expiry: had it raced the sweep,
keys would vanish without their `expired` record.

`rotator_live_keys` ({_id: key_id, expires_at}) lists every key that was issued and not
yet destroyed, written and deleted in the same transactions as the events that say so,
and has no TTL. The sweep reads it, so a key the backstop removed is still recorded
destroyed (and its ciphertext redacted) once a rotator runs again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from m8.crypto import SealedUploadKey
from m8.domain import Store
from m8.eventsourcing import EventRecorder, Records, Transaction

COLLECTION = "upload_keys"
LIVE_COLLECTION = "rotator_live_keys"
BACKSTOP = timedelta(hours=1)


class UploadKeyStore:
    """Sealed upload keys by key id, and the ids of those not yet destroyed, with expiry."""

    def __init__(self, recorder: EventRecorder) -> None:
        self.keys: Records = recorder.records(COLLECTION)
        self.live: Records = recorder.records(LIVE_COLLECTION)

    async def insert(
        self,
        transaction: Transaction,
        sealed: SealedUploadKey,
        store: Store,
        path: str,
        created_at: datetime,
        expires_at: datetime,
    ) -> None:
        """Stores a newly issued key (in the unit of work that records its issue)."""
        fields = sealed.to_dict()
        await transaction.records(COLLECTION).insert(
            {
                "_id": fields["key_id"],
                "store": store.name,
                "store_type": store.store_type,
                "path": path,
                "kek_id": fields["kek_id"],
                "sealed_private_key": fields["sealed_private_key"],
                "expires_at": expires_at,
                "created_at": created_at,
            }
        )
        await transaction.records(LIVE_COLLECTION).insert(
            {"_id": fields["key_id"], "expires_at": expires_at}
        )

    async def delete(self, transaction: Transaction, key_id: str) -> None:
        """Destroys the key (nothing happens if it is gone already)."""
        await transaction.records(COLLECTION).delete(key_id)
        await transaction.records(LIVE_COLLECTION).delete(key_id)

    async def expired(self, now: datetime, limit: int) -> list[str]:
        """Ids of keys past their expiry and not yet destroyed, oldest first."""
        ids: list[str] = []
        # `upload_keys` too: keys issued by a rotator from before the live list.
        for records in (self.live, self.keys):
            due = await records.ids_due("expires_at", now, limit - len(ids))
            ids += [key_id for key_id in due if key_id not in ids]
            if len(ids) >= limit:
                break
        return ids
