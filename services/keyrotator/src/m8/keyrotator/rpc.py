"""The rotator's RPC procedures on `m8.rpc.keyrotator` (docs/contracts.md).

Requests are checked here, at the edge; every refusal is an RpcError whose code the caller
can branch on and whose detail a person can act on. No reply carries private material.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from m8.domain import DomainError
from m8.eventsourcing import EventStoreUnavailable, Metadata
from m8.keyrotator.service import KeyRotator
from m8.messaging import RpcError
from m8.messaging.rpc import JsonObject, Procedure

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class IssueUploadKeyRequest(BaseModel):
    """`issue_upload_key`: `store` null means the default store."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    store: str | None = None
    path: str
    actor: str = Field(min_length=1, max_length=256)
    # Optional: lets the API tie the UploadKeyIssued event to the user's request.
    correlation_id: str | None = Field(default=None, min_length=1, max_length=128)


class VerifyKeysRequest(BaseModel):
    """`verify_keys` takes no parameters."""

    model_config = ConfigDict(extra="forbid")


class RotatorRpc:
    """Translates RPC requests into handler calls and errors into RpcError codes."""

    def __init__(self, rotator: KeyRotator) -> None:
        self.rotator = rotator

    def procedures(self) -> dict[str, Procedure]:
        """What RpcServer serves, each answer counted in the rotator's metrics."""
        served = {"issue_upload_key": self.issue_upload_key, "verify_keys": self.verify_keys}
        return {name: self._counted(name, procedure) for name, procedure in served.items()}

    async def issue_upload_key(self, params: JsonObject) -> JsonObject:
        """A signed statement of a new upload key: SignedStatement.to_dict()."""
        request = _parse(IssueUploadKeyRequest, params)
        metadata = Metadata(request.actor, request.correlation_id or uuid.uuid4().hex)
        with _refusals():
            signed = await self.rotator.issue(request.store, request.path, metadata)
        return signed.to_dict()

    async def verify_keys(self, params: JsonObject) -> JsonObject:
        """The published rotator verify keys, oldest first, and the withdrawn ones."""
        _parse(VerifyKeysRequest, params)
        with _refusals():
            published = await self.rotator.signing.published()
        return published.to_dict()

    def _counted(self, name: str, procedure: Procedure) -> Procedure:
        requests = self.rotator.metrics.rpc_requests

        async def counted(params: JsonObject) -> JsonObject:
            try:
                reply = await procedure(params)
            except RpcError as exc:
                requests.labels(name, exc.code).inc()
                raise
            except Exception:
                requests.labels(name, "internal").inc()  # what RpcServer answers then
                raise
            requests.labels(name, "ok").inc()
            return reply

        return counted


def _parse(model: type[M], params: JsonObject) -> M:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        # Field names and rules only: pydantic's own text would quote the input.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'params'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise RpcError("bad_request", f"malformed request: {problems}") from None


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except DomainError as exc:
        raise RpcError(exc.code, exc.detail) from None
    except EventStoreUnavailable as exc:
        log.warning("database unavailable: %s", exc)
        raise RpcError(
            "unavailable", "the key rotator cannot reach its database; try again shortly"
        ) from None
