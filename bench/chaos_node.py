"""A RabbitMQ node of the chaos run's own, which the run may restart.

The machine's RabbitMQ (127.0.0.1:5672) serves everyone else: the chaos run never stops
it. The node is m8.devservices.rabbitmq_node's, with the management plugin, which m8's
topology and per-service users are made with (bench/ imports nothing of tests/).
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from m8.devservices import rabbitmq_node as own_node
from m8.devservices.rabbitmq_node import RabbitNode

__all__ = ["RabbitNode", "rabbitmq_node"]


def rabbitmq_node() -> AbstractContextManager[RabbitNode]:
    """Starts a node of its own with the management plugin and yields it once AMQP and the
    management API answer; stops it and deletes its data afterwards."""
    return own_node.rabbitmq_node(management=True)
