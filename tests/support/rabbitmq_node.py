"""A RabbitMQ node of a test's own, for chaos tests that stop and restart a broker.

The machine's RabbitMQ serves every other test: no test stops it. The node is
m8.devservices.rabbitmq_node's, without plugins; a node that cannot start fails the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from m8.devservices import ServiceError
from m8.devservices import rabbitmq_node as own_node
from m8.devservices.rabbitmq_node import RabbitNode

__all__ = ["RabbitNode", "rabbitmq_node"]


@contextmanager
def rabbitmq_node() -> Iterator[RabbitNode]:
    """Starts a node of its own and yields it; stops it and deletes its data afterwards."""
    with ExitStack() as stack:
        try:
            node = stack.enter_context(own_node.rabbitmq_node())
        except ServiceError as error:
            pytest.fail(str(error))
        yield node
