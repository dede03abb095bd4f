"""Uploads: send an encrypted value, then follow it until it is stored (or not)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from m8.api.deps import Api, ApiContext, Caller, metadata_of
from m8.api.handlers import UploadCommand
from m8.api.models import UUID_PATTERN, UploadAccepted, UploadIn, UploadView
from m8.api.problems import NotFound, responses
from m8.domain import UploadKey
from m8.domain.errors import UnknownUploadKey

router = APIRouter(prefix="/v1", tags=["uploads"])


@router.post(
    "/secrets",
    status_code=202,
    responses=responses(400, 401, 403, 404, 409, 413, 415, 422, 429, 503),
)
async def upload_secret(body: UploadIn, api: Api, principal: Caller) -> UploadAccepted:
    """Accepts an encrypted upload; the same request again gives the same answer."""
    api.limits.uploads.take(principal.subject)
    # Rights are checked on the store the upload goes to, which is then named explicitly.
    store = body.store or await _store_of_key(api, body.key_id)
    principal.require_write(store, body.path)
    command = UploadCommand(
        upload_id=body.upload_id,
        key_id=body.key_id,
        client_public_key=body.client_public_key,
        nonce=body.nonce,
        ciphertext=body.ciphertext,
        store=store,
        path=body.path,
        requested_by=principal.subject,
    )
    await api.commands.request_upload(command, metadata_of(principal))
    return UploadAccepted(upload_id=body.upload_id, status_url=f"/v1/uploads/{body.upload_id}")


async def _store_of_key(api: ApiContext, key_id: str) -> str:
    """The store an upload key was issued for: where an upload naming no store goes."""
    key = await api.runtime.repository.load(UploadKey, key_id)
    if key.issued is None:
        raise UnknownUploadKey(
            f"there is no upload key {key_id!r}; ask for one with POST /v1/upload-keys"
        )
    return key.issued.store


@router.get("/uploads/{upload_id}", responses=responses(401, 403, 404, 422, 429))
async def upload_status(
    upload_id: Annotated[str, Path(pattern=UUID_PATTERN)],
    api: Api,
    principal: Caller,
    wait: Annotated[
        float,
        Query(
            ge=0,
            description="seconds to wait for the outcome; the server waits at most "
            "M8_API_MAX_WAIT_SECONDS",
        ),
    ] = 0,
) -> UploadView:
    """Where the upload stands: pending, stored, rejected, failed or expired.

    A pending upload's answer also says its stage (accepted, queued, waiting, writing),
    for display: a client at a terminal may ask with a short `wait` to follow it.
    """
    # Only to callers who may write its path there (admins: all), like the secret itself.
    wait = min(wait, api.settings.api_max_wait_seconds)
    if wait > 0:
        # A waiting request holds a connection and polls the database: a few per caller.
        with api.limits.long_polls.hold(principal.subject):
            view = await api.queries.upload(upload_id, principal.may_write, wait)
    else:
        view = await api.queries.upload(upload_id, principal.may_write)
    if view is None:
        raise NotFound(f"there is no upload {upload_id}")
    return view
