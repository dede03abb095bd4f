"""The key rotator as the API sees it: two procedures over RPC (docs/contracts.md)."""

from __future__ import annotations

from pydantic import ValidationError

from m8.api.models import SignedStatementView, VerifyKeys
from m8.api.problems import BadGateway
from m8.crypto import MalformedStatement, SignedStatement
from m8.eventsourcing import Metadata
from m8.messaging import Broker, RpcClient
from m8.messaging.topology import RPC_KEYROTATOR_QUEUE


class RotatorClient:
    """Calls the rotator; RpcError and RpcTimeout pass through to the problem mapping."""

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
        result = await self.rpc.call(
            RPC_KEYROTATOR_QUEUE,
            "issue_upload_key",
            params,
            timeout=self.timeout,
        )
        try:
            # Checked, not re-encoded: m8ctl verifies the signature over these very fields.
            SignedStatement.from_dict(result)
            return SignedStatementView.model_validate(result)
        except (MalformedStatement, ValidationError):
            raise BadGateway("the key rotator answered with a malformed statement") from None

    async def verify_keys(self) -> VerifyKeys:
        """The rotator's live verify keys, for m8ctl to pin."""
        result = await self.rpc.call(RPC_KEYROTATOR_QUEUE, "verify_keys", {}, timeout=self.timeout)
        try:
            return VerifyKeys.model_validate(result)
        except ValidationError:
            raise BadGateway("the key rotator answered with malformed verify keys") from None
