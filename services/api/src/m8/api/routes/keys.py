"""Upload keys and the rotator's verify keys, both answered by the key rotator over RPC."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from pymongo import ASCENDING

from m8.api.deps import Api, Caller, metadata_of
from m8.api.models import (
    ReceiptKey,
    ReceiptKeys,
    SignedStatementView,
    UploadKeyRequest,
    VerifyKeys,
)
from m8.api.problems import responses
from m8.crypto import InvalidInput, decode_verify_key, verify_key_fingerprint
from m8.eventstore.mongo import Document, mongo_errors

router = APIRouter(prefix="/v1", tags=["keys"])
log = logging.getLogger(__name__)


@router.get("/keys/rotator", responses=responses(401, 403, 502, 503))
async def rotator_keys(api: Api, _: Caller) -> VerifyKeys:
    """The rotator's live verify keys: pin them, and check every upload key against them."""
    return await api.rotator.verify_keys()


@router.post(
    "/upload-keys",
    status_code=201,
    responses=responses(400, 401, 403, 404, 409, 413, 415, 422, 429, 502, 503),
)
async def issue_upload_key(
    body: UploadKeyRequest, api: Api, principal: Caller
) -> SignedStatementView:
    """A one-time upload key for `path` in `store` (default: the default store), signed by
    the rotator; verify it before use."""
    api.limits.upload_keys.take(principal.subject)
    # The rotator gets the store the rights were checked on, never "the default" again:
    # the default may change in between.
    store = await api.store_or_default(body.store)
    principal.require_write(store, body.path)
    return await api.rotator.issue_upload_key(store, body.path, metadata_of(principal))


@router.get("/keys/receipts", responses=responses(401, 403, 503))
async def receipt_keys(api: Api, _: Caller) -> ReceiptKeys:
    """The reactors' receipt verify keys: pin them, and check every outcome against them."""
    # Written by each reactor at start (`receipt_keys`, contracts.md).
    with mongo_errors():
        cursor = api.runtime.db["receipt_keys"].find().sort("_id", ASCENDING)
        views = [_receipt_key(doc) async for doc in cursor]
    return ReceiptKeys(keys=[view for view in views if view is not None])


def _receipt_key(doc: Document) -> ReceiptKey | None:
    try:
        fingerprint = verify_key_fingerprint(decode_verify_key(doc.get("verify_key")))
    except InvalidInput:
        # Nobody could check a receipt against it: leave it out, and say so.
        log.warning("receipt key %r has a malformed verify key", doc["_id"])
        return None
    return ReceiptKey(
        receipt_key_id=str(doc["_id"]),
        verify_key=doc["verify_key"],
        fingerprint=fingerprint,
        endorsed_by=doc.get("endorsed_by"),
        endorsement=doc.get("endorsement"),
    )
