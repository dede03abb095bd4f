"""Sets up m8's virtual host, topology and per-service users through RabbitMQ's
management API, with the rights of `m8.messaging.permissions`.

`m8 dev` and the tests do this for every run; an operator runs it once (and again after
an upgrade), e.g. as Compose's `rabbitmq-users` step:

    M8_RABBITMQ_MANAGEMENT_URL=http://rabbitmq:15672 M8_RABBITMQ_ADMIN_USER=... \\
    M8_RABBITMQ_ADMIN_PASSWORD=... M8_RABBITMQ_API_PASSWORD=... (one per service) \\
    python -m m8.messaging.users

Passwords come from the environment only, never from arguments.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from urllib.parse import quote

import httpx

from m8.messaging.permissions import permissions, services, topology


def grant(api: httpx.Client, vhost: str, user: str, password: str, service: str) -> None:
    """Creates (or updates) `user` with `service`'s rights in `vhost`."""
    rights = permissions(service)
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


def main() -> int:
    """`python -m m8.messaging.users`: applies the users and topology from the environment."""
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


if __name__ == "__main__":
    sys.exit(main())
