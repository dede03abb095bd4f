"""A RabbitMQ node of the chaos run's own, which the run may restart.

The machine's RabbitMQ (127.0.0.1:5672) serves everyone else: the chaos run never stops
it. This starts `rabbitmq-server` as another node (its own name, AMQP, management and
distribution ports, data and log directories, only the management plugin, which m8's
topology and per-service users are made with), as tests/support/rabbitmq_node.py does
for the chaos tests (bench/ imports nothing of tests/). Debian's wrapper runs the server
as the `rabbitmq` user when started by root, so the node's directory is handed to it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from m8.devservices import ServiceError, ServiceInfo
from m8.devservices.manager import free_port, tcp_open

START_TIMEOUT = 120.0
CTL_TIMEOUT = 120.0


@dataclass(frozen=True)
class RabbitNode:
    """A running node: its Erlang name, AMQP URL (default virtual host) and management URL."""

    name: str
    url: str
    port: int
    management_url: str

    @property
    def info(self) -> ServiceInfo:
        """As m8.devservices describes a RabbitMQ (not managed: this module stops it)."""
        return ServiceInfo(
            "rabbitmq", self.url, managed=False, extra={"management_url": self.management_url}
        )

    def ctl(self, *args: str) -> None:
        """`rabbitmqctl --node <this node> ARGS`, never the machine's node."""
        subprocess.run(
            ["rabbitmqctl", "--node", self.name, *args],
            check=True,
            capture_output=True,
            timeout=CTL_TIMEOUT,
        )

    def close_all_connections(self, reason: str) -> None:
        """Closes every client connection of this node (every virtual host)."""
        self.ctl("close_all_connections", reason)

    def restart(self) -> None:
        """Stops the broker application and starts it again: every connection drops,
        durable queues and their messages stay; returns once it accepts AMQP again."""
        self.ctl("stop_app")
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.ctl("start_app")
                break
            except subprocess.CalledProcessError:
                # The old listener may still hold the port for a moment.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.wait_ready()

    def wait_ready(self) -> None:
        """Waits until AMQP and the management API answer; ServiceError past the deadline."""
        deadline = time.monotonic() + START_TIMEOUT
        while not (tcp_open("127.0.0.1", self.port) and self._management_ok()):
            if time.monotonic() > deadline:
                raise ServiceError(f"RabbitMQ node {self.name} is not ready")
            time.sleep(0.5)

    def _management_ok(self) -> bool:
        try:
            answer = httpx.get(
                f"{self.management_url}/api/overview", auth=("guest", "guest"), timeout=2.0
            )
        except httpx.HTTPError:
            return False
        return answer.is_success


@contextmanager
def rabbitmq_node() -> Iterator[RabbitNode]:
    """Starts a node of its own and yields it; stops it and deletes its data afterwards."""
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        raise ServiceError("rabbitmq-server is not installed: apt-get install rabbitmq-server")
    directory = Path(tempfile.mkdtemp(prefix="m8-chaos-rabbit-"))
    port, management_port, dist_port = free_port(), free_port(), free_port()
    node = RabbitNode(
        f"m8-chaos-{uuid.uuid4().hex[:8]}@localhost",
        f"amqp://guest:guest@127.0.0.1:{port}/",
        port,
        f"http://127.0.0.1:{management_port}",
    )
    (directory / "rabbitmq.conf").write_text(
        f"listeners.tcp.local = 127.0.0.1:{port}\n"
        "loopback_users.guest = true\n"
        f"management.tcp.port = {management_port}\n"
        "management.tcp.ip = 127.0.0.1\n"
    )
    (directory / "enabled_plugins").write_text("[rabbitmq_management].\n")
    _hand_to_rabbitmq(directory)
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": node.name,
        "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
        "RABBITMQ_LOG_BASE": str(directory / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
    }
    subprocess.run(["rabbitmq-server", "-detached"], env=env, cwd=directory, check=True, timeout=60)
    try:
        try:
            node.wait_ready()
        except ServiceError:
            logs = "".join(p.read_text() for p in (directory / "log").glob("*.log"))
            raise ServiceError(
                f"the chaos run's RabbitMQ node did not start:\n{logs[-3000:]}"
            ) from None
        yield node
    finally:
        subprocess.run(
            ["rabbitmqctl", "--node", node.name, "stop"],
            capture_output=True,
            timeout=CTL_TIMEOUT,
            check=False,
        )
        shutil.rmtree(directory, ignore_errors=True)


def _hand_to_rabbitmq(directory: Path) -> None:
    # Started by root, Debian's rabbitmq-server runs as the rabbitmq user.
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam("rabbitmq")
    for path in (directory, *directory.iterdir()):
        os.chown(path, user.pw_uid, user.pw_gid)
