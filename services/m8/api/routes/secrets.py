"""What m8 knows about secrets: where they are and their fingerprints, never values."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from m8.api.deps import Api, Caller
from m8.api.models import STORE_PATTERN, SecretHistory, SecretList, SecretView
from m8.api.problems import NotFound, responses

router = APIRouter(prefix="/v1/secrets", tags=["secrets"])
StoreName = Annotated[str, Path(pattern=STORE_PATTERN)]
SecretPath = Annotated[str, Path(max_length=1024)]


@router.get("", responses=responses(401, 403, 422))
async def list_secrets(
    api: Api,
    _: Caller,
    store: Annotated[str | None, Query(pattern=STORE_PATTERN)] = None,
    prefix: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=512, description="next_after of a page")] = None,
) -> SecretList:
    """Secrets, optionally of one store and under a path prefix, a page at a time."""
    return await api.queries.secrets_page(store, prefix, limit, after)


# Declared before the secret itself: `{path:path}` would otherwise swallow "/history".
@router.get("/{store}/{path:path}/history", responses=responses(401, 403, 404, 422))
async def secret_history(store: StoreName, path: SecretPath, api: Api, _: Caller) -> SecretHistory:
    """Every upload to the secret: fingerprints, upstream versions, who and when."""
    history = await api.queries.history(store, path)
    if history is None:
        raise NotFound(f"there is no secret {path!r} in store {store!r}")
    return history


@router.get("/{store}/{path:path}", responses=responses(401, 403, 404, 422))
async def show_secret(store: StoreName, path: SecretPath, api: Api, _: Caller) -> SecretView:
    """The secret's current fingerprint and upstream version."""
    secret = await api.queries.secret(store, path)
    if secret is None:
        raise NotFound(f"there is no secret {path!r} in store {store!r}")
    return secret
