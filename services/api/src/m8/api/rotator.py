"""The key rotator as the API sees it: two procedures over RPC (docs/contracts.md)."""

from __future__ import annotations

import logging

from aio_pika.exceptions import AMQPError, ChannelInvalidStateError
from pydantic import ValidationError

from m8.api.models import SignedStatementView, VerifyKeys
from m8.api.problems import BadGateway, Unavailable
from m8.crypto import MalformedStatement, SignedStatement
from m8.eventsourcing import Metadata
from m8.messaging import Broker, RpcClient
from m8.messaging.rpc import JsonObject
from m8.messaging.topology import RPC_KEYROTATOR_QUEUE

# What a call meets while RabbitMQ is down or the connection is being restored: the
# channel is closed or not yet reopened (aiormq's ChannelInvalidStateError is a
# RuntimeError), or the connection itself is gone (AMQPConnectionError is an OSError).
_BROKER_DOWN = (AMQPError, ChannelInvalidStateError, ConnectionError)

log = logging.getLogger(__name__)


class RotatorClient:
    """Calls the rotator; RpcError and RpcTimeout pass through to the problem mapping,
    a broker that is down is Unavailable (503 with Retry-After)."""

    def __init__(self, broker: Broker, timeout: float) -> None:
        self.rpc = RpcClient(broker)
        self.timeout = timeout

    async def start(self) -> None:
        await self.rpc.start()

    async def issue_upload_key(
        self, store: str | None, path: str, metadata: Metadata
    ) -> SignedStatementView:
        """A signed statement of a fresh upload key for `path` in `store` (None: default)."""
        params = {
            "store": store,
            "path": path,
            "actor": metadata.actor,
            "correlation_id": metadata.correlation_id,
        }
        result = await self._call("issue_upload_key", params)
        try:
            # Checked, not re-encoded: m8ctl verifies the signature over these very fields.
            SignedStatement.from_dict(result)
            return SignedStatementView.model_validate(result)
        except (MalformedStatement, ValidationError):
            raise BadGateway("the key rotator answered with a malformed statement") from None

    async def verify_keys(self) -> VerifyKeys:
        """The rotator's live verify keys, for m8ctl to pin."""
        result = await self._call("verify_keys", {})
        try:
            return VerifyKeys.model_validate(result)
        except ValidationError:
            raise BadGateway("the key rotator answered with malformed verify keys") from None

    async def _call(self, procedure: str, params: JsonObject) -> JsonObject:
        try:
            return await self.rpc.call(
                RPC_KEYROTATOR_QUEUE, procedure, params, timeout=self.timeout
            )
        except _BROKER_DOWN as exc:
            # Its class only: a connection error's text may name the broker's URL.
            log.warning("the broker is unavailable for an RPC call: %s", type(exc).__name__)
            raise Unavailable(
                "the message broker is unavailable, so the key rotator cannot be asked; "
                "try again shortly"
            ) from None
