"""What route functions get injected: the wired services and the authenticated caller."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from m8.api.auth import Authenticator, Principal
from m8.api.handlers import Commands
from m8.api.metrics import ApiMetrics
from m8.api.queries import Queries
from m8.api.rotator import RotatorClient
from m8.api.settings import ApiSettings
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


def context(request: Request) -> ApiContext:
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
