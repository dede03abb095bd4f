"""The store catalog (ADR-3 #APID1): list for everyone, changes for admins."""

from __future__ import annotations

from fastapi import APIRouter

from m8.api.deps import Admin, Api, Caller, metadata_of
from m8.api.models import StoreIn, StoreList, StoreView
from m8.api.problems import responses
from m8.api.routes.params import StoreName
from m8.domain import CATALOG_ID, StoreCatalog

router = APIRouter(prefix="/v1/stores", tags=["stores"])
_CHANGE = responses(401, 403, 404, 409, 422)


def _view(catalog: StoreCatalog, name: str) -> StoreView:
    store = catalog.get(name)
    return StoreView(
        name=store.name,
        type=store.store_type,
        active=store.active,
        default=catalog.default == name,
        config=store.config,
    )


@router.get("", responses=responses(401, 403))
async def list_stores(api: Api, principal: Caller) -> StoreList:
    """The stores uploads may target (admins also see inactive ones) and the default."""
    # Every active store, also those the caller may not write in: a user needs the names
    # (and which is the default) to ask for rights and to read refusals; a store's entry
    # holds no credential. Rights are enforced where a store is written or read.
    # The catalog aggregate itself, not a read model: it is small and always current.
    catalog = await api.runtime.repository.load(StoreCatalog, CATALOG_ID)
    views = [_view(catalog, name) for name in sorted(catalog.stores)]
    if not principal.is_admin:
        views = [view for view in views if view.active]
    return StoreList(stores=views, default=catalog.default)


@router.post("", status_code=201, responses=responses(400, 401, 403, 409, 413, 415, 422))
async def register_store(body: StoreIn, api: Api, principal: Admin) -> StoreView:
    """Registers a store; the first one becomes the default. No credentials here."""
    config = body.model_dump(exclude={"type", "name"})
    catalog = await api.commands.change_catalog(
        lambda c: c.register(body.name, body.type, config), metadata_of(principal)
    )
    return _view(catalog, body.name)


@router.post("/{name}/activate", responses=_CHANGE)
async def activate_store(name: StoreName, api: Api, principal: Admin) -> StoreView:
    """Lets uploads target the store again."""
    catalog = await api.commands.change_catalog(lambda c: c.activate(name), metadata_of(principal))
    return _view(catalog, name)


@router.post("/{name}/deactivate", responses=_CHANGE)
async def deactivate_store(name: StoreName, api: Api, principal: Admin) -> StoreView:
    """Refuses new uploads to the store (make another the default first if it is it)."""
    catalog = await api.commands.change_catalog(
        lambda c: c.deactivate(name), metadata_of(principal)
    )
    return _view(catalog, name)


@router.post("/{name}/default", responses=_CHANGE)
async def make_default(name: StoreName, api: Api, principal: Admin) -> StoreView:
    """Makes the store (which must be active) the default for uploads that name none."""
    catalog = await api.commands.change_catalog(
        lambda c: c.set_default(name), metadata_of(principal)
    )
    return _view(catalog, name)
