"""Throwaway RabbitMQ virtual hosts, so tests and benchmarks never share queues."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from m8.devservices.manager import ServiceError, ServiceInfo


@dataclass(frozen=True)
class VirtualHost:
    """A virtual host and the AMQP URL that reaches it."""

    name: str
    url: str
    management_url: str
    auth: tuple[str, str]


@contextmanager
def virtual_host(rabbitmq: ServiceInfo, prefix: str = "m8-tmp-") -> Iterator[VirtualHost]:
    """A new virtual host on `rabbitmq` (via its management API), deleted afterwards."""
    parts = urlsplit(rabbitmq.url)
    auth = (parts.username or "guest", parts.password or "guest")
    management = rabbitmq.extra["management_url"]
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with httpx.Client(base_url=f"{management}/api", auth=auth, timeout=30) as api:
        try:
            api.put(f"/vhosts/{name}").raise_for_status()
        except httpx.HTTPError as exc:
            raise ServiceError(
                f"RabbitMQ's management API at {management} is not usable ({exc}). "
                "Enable it: rabbitmq-plugins enable rabbitmq_management"
            ) from None
        api.put(
            f"/permissions/{name}/{quote(auth[0], safe='')}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        ).raise_for_status()
        url = urlunsplit(parts._replace(path="/" + quote(name, safe="")))
        try:
            yield VirtualHost(name, url, management, auth)
        finally:
            api.delete(f"/vhosts/{name}")
