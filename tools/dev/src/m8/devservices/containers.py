"""The same servers from testcontainers, for machines with a Docker engine.

Chosen with ``M8_SERVICES=containers``. The local processes of `manager` stay the
default: a machine without Docker must be able to run everything.
"""

from __future__ import annotations

import atexit
import secrets
from pathlib import Path
from typing import Any

from m8.devservices.manager import ServiceError, ServiceInfo, Services

RABBITMQ_IMAGE = "rabbitmq:3.13-management"
MONGODB_IMAGE = "mongo:7"
OPENBAO_IMAGE = "openbao/openbao:2.1.0"
LOCALSTACK_IMAGE = "localstack/localstack:3.8"


def container_services(workdir: Path) -> Services:
    """Starts RabbitMQ, a MongoDB replica set, OpenBao and LocalStack as containers."""
    try:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ServiceError("M8_SERVICES=containers needs testcontainers installed") from exc

    started: list[Any] = []

    def run(container: Any, log_line: str) -> Any:
        try:
            container.start()
        except Exception as exc:
            raise ServiceError(
                f"M8_SERVICES=containers but Docker could not start {container.image}: {exc}"
            ) from exc
        started.append(container)
        wait_for_logs(container, log_line, timeout=120)
        return container

    def stop_all() -> None:
        for container in reversed(started):
            container.stop()

    atexit.register(stop_all)
    services = Services(workdir)
    rabbit = run(
        DockerContainer(RABBITMQ_IMAGE).with_exposed_ports(5672, 15672), "Server startup complete"
    )
    host = rabbit.get_container_host_ip()
    services.infos["rabbitmq"] = ServiceInfo(
        "rabbitmq",
        f"amqp://guest:guest@{host}:{rabbit.get_exposed_port(5672)}/",
        managed=False,
        extra={"management_url": f"http://{host}:{rabbit.get_exposed_port(15672)}"},
    )
    # Transactions and change streams need a replica set, even a one-node one.
    mongo = run(
        DockerContainer(MONGODB_IMAGE)
        .with_exposed_ports(27017)
        .with_command("--replSet rs0 --bind_ip_all"),
        "Waiting for connections",
    )
    mongo.exec("mongosh --quiet --eval 'rs.initiate()'")
    services.infos["mongodb"] = ServiceInfo(
        "mongodb",
        f"mongodb://{host}:{mongo.get_exposed_port(27017)}/?directConnection=true",
        managed=False,
    )
    token = "m8-dev-" + secrets.token_urlsafe(16)
    bao = run(
        DockerContainer(OPENBAO_IMAGE)
        .with_exposed_ports(8200)
        .with_env("BAO_DEV_ROOT_TOKEN_ID", token)
        .with_env("BAO_DEV_LISTEN_ADDRESS", "0.0.0.0:8200"),
        "Development mode should NOT be used",
    )
    services.infos["openbao"] = ServiceInfo(
        "openbao",
        f"http://{host}:{bao.get_exposed_port(8200)}",
        managed=False,
        extra={"token": token},
    )
    localstack = run(
        DockerContainer(LOCALSTACK_IMAGE)
        .with_exposed_ports(4566)
        .with_env("SERVICES", "secretsmanager"),
        "Ready.",
    )
    services.infos["aws"] = ServiceInfo(
        "aws", f"http://{host}:{localstack.get_exposed_port(4566)}", managed=False
    )
    return services
