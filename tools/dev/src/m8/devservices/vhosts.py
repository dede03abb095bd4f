"""Throwaway RabbitMQ virtual hosts, so tests and benchmarks never share queues, and the
broker users of m8's services in them.

Each service gets a RabbitMQ user of its own holding exactly that service's rights
(`m8.messaging.permissions`), so a local system and the tests run with the broker rights
a deployment has.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from m8.devservices.manager import ServiceError, ServiceInfo
from m8.messaging.permissions import services
from m8.messaging.users import declare, grant


@dataclass(frozen=True)
class VirtualHost:
    """A virtual host, the AMQP URL that reaches it as an administrator, and one per service."""

    name: str
    url: str
    management_url: str
    auth: tuple[str, str]
    service_urls: Mapping[str, str] = field(default_factory=dict)

    def service_url(self, service: str) -> str:
        """The AMQP URL of `service`'s own user (only its own rights)."""
        return self.service_urls[service]


@contextmanager
def management(rabbitmq: ServiceInfo) -> Iterator[httpx.Client]:
    """A client of RabbitMQ's management API, as the administrator `rabbitmq.url` names."""
    parts = urlsplit(rabbitmq.url)
    auth = (unquote(parts.username or "guest"), unquote(parts.password or "guest"))
    base = f"{rabbitmq.extra['management_url']}/api"
    with httpx.Client(base_url=base, auth=auth, timeout=30) as api:
        yield api


def provision(api: httpx.Client, amqp_url: str, tag: str) -> dict[str, str]:
    """Declares m8's topology in the virtual host of `amqp_url` (as an operator's
    definitions would: a service's own user may declare only its own queues) and makes a
    user per service there, `<vhost>-<tag>-<service>`; returns each service's AMQP URL."""
    parts = urlsplit(amqp_url)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    declare(api, vhost)
    urls = {}
    for service in services():
        user, password = user_name(vhost, tag, service), secrets.token_hex(16)
        grant(api, vhost, user, password, service)
        # Hex passwords need no escaping in a URL.
        netloc = f"{quote(user, safe='')}:{password}@{parts.hostname}:{parts.port or 5672}"
        urls[service] = urlunsplit(parts._replace(netloc=netloc))
    return urls


def user_name(vhost: str, tag: str, service: str) -> str:
    """The name of `service`'s user made by `provision` (the vhost first, so that deleting
    a virtual host's users finds them all)."""
    return f"{vhost}-{tag}-{service}"


def delete_users(api: httpx.Client, prefix: str) -> None:
    """Deletes every user whose name starts with `prefix`."""
    for user in api.get("/users").json():
        if str(user["name"]).startswith(prefix):
            api.delete(f"/users/{quote(user['name'], safe='')}")


@contextmanager
def virtual_host(rabbitmq: ServiceInfo, prefix: str = "m8-tmp-") -> Iterator[VirtualHost]:
    """A new virtual host on `rabbitmq` (via its management API) with m8's topology and a
    user per service; deleted afterwards, with every user made for it."""
    parts = urlsplit(rabbitmq.url)
    auth = (unquote(parts.username or "guest"), unquote(parts.password or "guest"))
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with management(rabbitmq) as api:
        try:
            api.put(f"/vhosts/{name}").raise_for_status()
        except httpx.HTTPError as exc:
            raise ServiceError(
                f"RabbitMQ's management API at {rabbitmq.extra['management_url']} is not "
                f"usable ({exc}). Enable it: rabbitmq-plugins enable rabbitmq_management"
            ) from None
        try:
            api.put(
                f"/permissions/{name}/{quote(auth[0], safe='')}",
                json={"configure": ".*", "write": ".*", "read": ".*"},
            ).raise_for_status()
            url = urlunsplit(parts._replace(path="/" + quote(name, safe="")))
            urls = provision(api, url, "vh")
            yield VirtualHost(name, url, rabbitmq.extra["management_url"], auth, urls)
        finally:
            delete_users(api, f"{name}-")
            api.delete(f"/vhosts/{name}")
