"""What route functions get injected: the wired services and the authenticated caller."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from m8.api.auth import Authenticator, Principal
from m8.api.handlers import Commands
from m8.api.limits import Limits
from m8.api.metrics import ApiMetrics
from m8.api.queries import Queries
from m8.api.rotator import RotatorClient
from m8.api.settings import ApiSettings
from m8.domain import CATALOG_ID, StoreCatalog
from m8.domain.errors import NoDefaultStore
from m8.eventsourcing import Metadata
from m8.runtime import Runtime


@dataclass
class ApiContext:
    """Everything the routes use, built once by the app's lifespan."""

    settings: ApiSettings
    runtime: Runtime
    authenticator: Authenticator
    rotator: RotatorClient
    commands: Commands
    queries: Queries
    metrics: ApiMetrics
    limits: Limits

    async def store_or_default(self, store: str | None) -> str:
        """`store`, or the default store now (NoDefaultStore if there is none).

        Rights are checked on a store by name, so a request that names none is checked, and
        then carried out, on the store the catalog resolves it to.
        """
        if store is not None:
            return store
        catalog = await self.runtime.repository.load(StoreCatalog, CATALOG_ID)
        if catalog.default is None:
            raise NoDefaultStore("no store is registered yet; an admin must add one")
        return catalog.default


# Async on purpose: FastAPI runs a plain `def` dependency in a worker thread, a thread
# hop on every request for what is one attribute read.
async def context(request: Request) -> ApiContext:
    api: ApiContext = request.app.state.api
    return api


# Documents the scheme in OpenAPI; the Authenticator decides, with problem responses.
_bearer = HTTPBearer(auto_error=False, description="a token from the token file, or an OIDC JWT")


async def caller(
    request: Request,
    api: Annotated[ApiContext, Depends(context)],
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The authenticated caller, who must hold a role (401 / 403 otherwise)."""
    principal = await api.authenticator.authenticate(request.headers.get("authorization"))
    principal.require_role("admin", "user")
    return principal


async def admin(principal: Annotated[Principal, Depends(caller)]) -> Principal:
    """The caller, who must be an admin."""
    principal.require_role("admin")
    return principal


def metadata_of(principal: Principal) -> Metadata:
    """Metadata for events a request causes: who, and a fresh correlation id."""
    return Metadata(actor=principal.subject, correlation_id=uuid.uuid4().hex)


Api = Annotated[ApiContext, Depends(context)]
Caller = Annotated[Principal, Depends(caller)]
Admin = Annotated[Principal, Depends(admin)]
