"""RabbitMQ messaging: topology, confirmed publishing, consumers and RPC (aio-pika)."""

from m8.messaging.broker import Broker
from m8.messaging.consumer import EventConsumer, Handler, Inbox
from m8.messaging.errors import NotNow, PoisonMessage, TransientError
from m8.messaging.rpc import RpcClient, RpcError, RpcServer, RpcTimeout
from m8.messaging.topology import QueueSpec

__all__ = [
    "Broker",
    "EventConsumer",
    "Handler",
    "Inbox",
    "NotNow",
    "PoisonMessage",
    "QueueSpec",
    "RpcClient",
    "RpcError",
    "RpcServer",
    "RpcTimeout",
    "TransientError",
]
