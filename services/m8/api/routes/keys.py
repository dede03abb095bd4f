"""Upload keys and the rotator's verify keys, both answered by the key rotator over RPC."""

from __future__ import annotations

from fastapi import APIRouter

from m8.api.deps import Api, Caller, metadata_of
from m8.api.models import SignedStatementView, UploadKeyRequest, VerifyKeys
from m8.api.problems import responses

router = APIRouter(prefix="/v1", tags=["keys"])


@router.get("/keys/rotator", responses=responses(401, 403, 502, 503))
async def rotator_keys(api: Api, _: Caller) -> VerifyKeys:
    """The rotator's live verify keys: pin them, and check every upload key against them."""
    return await api.rotator.verify_keys()


@router.post(
    "/upload-keys",
    status_code=201,
    responses=responses(400, 401, 403, 404, 409, 413, 422, 502, 503),
)
async def issue_upload_key(
    body: UploadKeyRequest, api: Api, principal: Caller
) -> SignedStatementView:
    """A one-time upload key for `path`, signed by the rotator; verify it before use."""
    principal.require_write(body.path)
    return await api.rotator.issue_upload_key(body.store, body.path, metadata_of(principal))
