"""The caller as the API sees it: for `m8ctl whoami`, and for shell completion."""

from __future__ import annotations

from typing import Any, cast

from fastapi import APIRouter

from m8.api.auth import ANY
from m8.api.deps import Api, Caller
from m8.api.models import MeView
from m8.api.problems import responses
from m8.domain import CATALOG_ID, StoreCatalog

router = APIRouter(prefix="/v1", tags=["caller"])


@router.get("/me", responses=responses(401, 403))
async def me(api: Api, principal: Caller) -> MeView:
    """Your subject and roles, the stores and the path prefixes you may upload to."""
    # The catalog aggregate, as GET /v1/stores reads it: small, and always current.
    catalog = await api.runtime.repository.load(StoreCatalog, CATALOG_ID)
    active = [name for name, store in sorted(catalog.stores.items()) if store.active]
    granted = principal.store_scope()
    paths = principal.path_scope()
    return MeView(
        subject=principal.subject,
        roles=cast(Any, sorted(principal.roles)),  # a Principal's roles are among ROLES
        stores=[name for name in active if granted is None or name in granted],
        prefixes=[ANY] if paths is None else sorted(paths),
    )
