"""Sets up m8's virtual host, topology and per-service users through RabbitMQ's
management API, with the rights of `m8.messaging.permissions`.

`m8 dev` and the tests do this for every run; an operator runs it once (and again after
an upgrade), e.g. as Compose's `rabbitmq-users` step:

    M8_RABBITMQ_MANAGEMENT_URL=http://rabbitmq:15672 M8_RABBITMQ_ADMIN_USER=... \\
    M8_RABBITMQ_ADMIN_PASSWORD=... M8_RABBITMQ_API_PASSWORD=... (one per service) \\
    python -m m8.messaging.users

A consumer outside m8 (docs/consumers.md) gets a queue, `consumer.<name>`, and a user of its
own, `m8-consumer-<name>`, that may bind that queue to m8's events and read it, and may
declare and publish nothing:

    M8_RABBITMQ_MANAGEMENT_URL=... M8_RABBITMQ_ADMIN_USER=... M8_RABBITMQ_ADMIN_PASSWORD=... \\
    M8_RABBITMQ_CONSUMER_PASSWORD=... python -m m8.messaging.users consumer NAME

Passwords come from the environment only, never from arguments.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from urllib.parse import quote

import httpx

from m8.messaging.permissions import (
    Permissions,
    consumer_permissions,
    consumer_queue,
    consumer_queue_arguments,
    permissions,
    services,
    topology,
)


def grant(api: httpx.Client, vhost: str, user: str, password: str, service: str) -> None:
    """Creates (or updates) `user` with `service`'s rights in `vhost`."""
    grant_rights(api, vhost, user, password, permissions(service))


def grant_consumer(api: httpx.Client, vhost: str, user: str, password: str, name: str) -> None:
    """Makes consumer `name`'s queue `consumer.<name>` and creates (or updates) `user` with
    the consumer's rights: it binds that queue to `m8.events` and reads it, and may
    declare and publish nothing (docs/consumers.md)."""
    queue = consumer_queue(name)
    api.put(
        f"/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}",
        json={"durable": True, "auto_delete": False, "arguments": consumer_queue_arguments()},
    ).raise_for_status()
    grant_rights(api, vhost, user, password, consumer_permissions(name))


def grant_rights(
    api: httpx.Client, vhost: str, user: str, password: str, rights: Permissions
) -> None:
    """Creates (or updates) `user` with `rights` in `vhost`."""
    api.put(
        f"/users/{quote(user, safe='')}", json={"password": password, "tags": ""}
    ).raise_for_status()
    path = f"{quote(vhost, safe='')}/{quote(user, safe='')}"
    api.put(
        f"/permissions/{path}",
        json={"configure": rights.configure, "write": rights.write, "read": rights.read},
    ).raise_for_status()
    for exchange, write in rights.topics():
        api.put(
            f"/topic-permissions/{path}",
            json={"exchange": exchange, "write": write, "read": rights.topic_read},
        ).raise_for_status()


def declare(api: httpx.Client, vhost: str) -> None:
    """Declares m8's exchanges, queues and bindings in `vhost` (idempotent): a service's
    own user may declare only its own queues, and every queue must exist before the first
    event for it is published."""
    api.post(f"/definitions/{quote(vhost, safe='')}", json=topology(vhost)).raise_for_status()


def apply(api: httpx.Client, vhost: str, users: Mapping[str, tuple[str, str]]) -> None:
    """Makes `vhost` with m8's topology and, per service, its user: `users` maps a service
    to (user name, password)."""
    api.put(f"/vhosts/{quote(vhost, safe='')}").raise_for_status()
    declare(api, vhost)
    for service, (user, password) in users.items():
        grant(api, vhost, user, password, service)


def password_variable(service: str) -> str:
    """The environment variable of `service`'s password (`M8_RABBITMQ_REACTOR_VAULT_PASSWORD`)."""
    return f"M8_RABBITMQ_{service.upper().replace('-', '_')}_PASSWORD"


def main(argv: list[str] | None = None) -> int:
    """`python -m m8.messaging.users`: applies the users and topology from the environment;
    `... consumer NAME`: makes (or updates) consumer NAME's queue and user only."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        if len(args) != 2 or args[0] != "consumer":
            print("usage: python -m m8.messaging.users [consumer NAME]", file=sys.stderr)
            return 2
        return _consumer(args[1])
    missing = [
        name
        for name in (
            "M8_RABBITMQ_MANAGEMENT_URL",
            "M8_RABBITMQ_ADMIN_USER",
            "M8_RABBITMQ_ADMIN_PASSWORD",
            *(password_variable(s) for s in services()),
        )
        if not os.environ.get(name)
    ]
    if missing:
        print(f"set {', '.join(missing)}", file=sys.stderr)
        return 2
    vhost = os.environ.get("M8_RABBITMQ_VHOST", "m8")
    prefix = os.environ.get("M8_RABBITMQ_USER_PREFIX", "m8-")
    auth = (os.environ["M8_RABBITMQ_ADMIN_USER"], os.environ["M8_RABBITMQ_ADMIN_PASSWORD"])
    base = os.environ["M8_RABBITMQ_MANAGEMENT_URL"].rstrip("/") + "/api"
    users = {s: (f"{prefix}{s}", os.environ[password_variable(s)]) for s in services()}
    try:
        with httpx.Client(base_url=base, auth=auth, timeout=30) as api:
            apply(api, vhost, users)
    except httpx.HTTPError as exc:
        print(f"RabbitMQ's management API refused or failed: {exc}", file=sys.stderr)
        return 1
    print(f"vhost {vhost}: topology declared, users {', '.join(u for u, _ in users.values())}")
    return 0


def _consumer(name: str) -> int:
    names = (
        "M8_RABBITMQ_MANAGEMENT_URL",
        "M8_RABBITMQ_ADMIN_USER",
        "M8_RABBITMQ_ADMIN_PASSWORD",
        "M8_RABBITMQ_CONSUMER_PASSWORD",
    )
    if missing := [n for n in names if not os.environ.get(n)]:
        print(f"set {', '.join(missing)}", file=sys.stderr)
        return 2
    vhost = os.environ.get("M8_RABBITMQ_VHOST", "m8")
    user = f"{os.environ.get('M8_RABBITMQ_USER_PREFIX', 'm8-')}consumer-{name}"
    auth = (os.environ["M8_RABBITMQ_ADMIN_USER"], os.environ["M8_RABBITMQ_ADMIN_PASSWORD"])
    base = os.environ["M8_RABBITMQ_MANAGEMENT_URL"].rstrip("/") + "/api"
    try:
        consumer_queue(name)  # checks the name before anything is made
        with httpx.Client(base_url=base, auth=auth, timeout=30) as api:
            grant_consumer(api, vhost, user, os.environ["M8_RABBITMQ_CONSUMER_PASSWORD"], name)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:
        print(f"RabbitMQ's management API refused or failed: {exc}", file=sys.stderr)
        return 1
    print(f"vhost {vhost}: consumer user {user}, queue {consumer_queue(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
