"""The sealed upload private keys, as the key rotator keeps them (`upload_keys`, contracts.md)."""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from m8.crypto import SealedUploadKey
from m8.eventstore.mongo import Document, mongo_errors

COLLECTION = "upload_keys"


class SealedUploadKeys:
    """Reads the rotator's `upload_keys` collection; a missing document is a destroyed key."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection = db[COLLECTION]

    async def get(self, key_id: str) -> SealedUploadKey | None:
        """The sealed key of `key_id`; MalformedEnvelope if its document is damaged."""
        with mongo_errors():
            doc = await self.collection.find_one(
                {"_id": key_id}, projection={"kek_id": True, "sealed_private_key": True}
            )
        if doc is None:
            return None
        return SealedUploadKey.from_dict(
            {
                "key_id": key_id,
                "kek_id": doc.get("kek_id"),
                "sealed_private_key": doc.get("sealed_private_key"),
            }
        )
