"""What m8 knows about secrets: where they are and their fingerprints, never values.

A caller sees only the secrets it may write: its paths in its stores (admins: all). Any
other secret answers 404, like one that does not exist, so neither its existence nor its
fingerprint leaks: with both, a user could upload guesses to a path of its own and compare
fingerprints.

History is `GET /v1/history/{store}/{path}`, not DESIGN's `/v1/secrets/{store}/{path}/history`:
under /v1/secrets it shadowed every secret whose last segment is `history`, and answered
`.../team/history` with the history of `team`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from m8.api.auth import Principal
from m8.api.deps import Api, Caller
from m8.api.models import STORE_PATTERN, SecretHistory, SecretList, SecretView
from m8.api.problems import NotFound, responses
from m8.api.routes.params import SecretPath, StoreName
from m8.domain.paths import MAX_PATH_LENGTH

router = APIRouter(prefix="/v1", tags=["secrets"])


@router.get("/secrets", responses=responses(401, 403, 422))
async def list_secrets(
    api: Api,
    principal: Caller,
    store: Annotated[str | None, Query(pattern=STORE_PATTERN)] = None,
    prefix: Annotated[str | None, Query(max_length=MAX_PATH_LENGTH)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=512, description="next_after of a page")] = None,
) -> SecretList:
    """Secrets, optionally of one store and under a path prefix, a page at a time."""
    return await api.queries.secrets_page(
        store, prefix, limit, after, principal.path_scope(), principal.store_scope()
    )


@router.get("/secrets/{store}/{path:path}", responses=responses(401, 403, 404, 422))
async def show_secret(
    store: StoreName, path: SecretPath, api: Api, principal: Caller
) -> SecretView:
    """The secret's current fingerprint and upstream version."""
    _may_see(principal, store, path)
    secret = await api.queries.secret(store, path)
    if secret is None:
        raise _not_found(store, path)
    return secret


@router.get("/history/{store}/{path:path}", responses=responses(401, 403, 404, 422))
async def secret_history(
    store: StoreName, path: SecretPath, api: Api, principal: Caller
) -> SecretHistory:
    """Every upload to the secret: fingerprints, upstream versions, who and when."""
    _may_see(principal, store, path)
    history = await api.queries.history(store, path)
    if history is None:
        raise _not_found(store, path)
    return history


def _may_see(principal: Principal, store: str, path: str) -> None:
    # Checked before the lookup: not even the time taken tells whether it exists.
    if not principal.may_write(store, path):
        raise _not_found(store, path)


def _not_found(store: str, path: str) -> NotFound:
    return NotFound(f"there is no secret {path!r} in store {store!r}")
