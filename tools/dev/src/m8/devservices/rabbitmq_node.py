"""A RabbitMQ node of a caller's own, for those that stop and restart a broker.

The machine's RabbitMQ (127.0.0.1:5672) serves everyone else: nobody stops it. This starts
`rabbitmq-server` as another node (its own name, AMQP and distribution ports, data and log
directories; with `management=True` also the management plugin on a port of its own, which
m8's topology and per-service users are made with, and no other plugin) and stops it
afterwards. The chaos tests (tests/support/rabbitmq_node.py) and the chaos run
(bench/chaos_node.py) use it. Debian's wrapper runs the server as the `rabbitmq` user when
started by root, so the node's directory is handed to that user.
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

from m8.devservices.manager import ServiceError, ServiceInfo, free_port, tcp_open

START_TIMEOUT = 120.0
CTL_TIMEOUT = 120.0


@dataclass(frozen=True)
class RabbitNode:
    """A running node: its Erlang name, the AMQP URL of its default virtual host, and the
    management URL when the node has the plugin."""

    name: str
    url: str
    port: int
    management_url: str | None = None

    @property
    def info(self) -> ServiceInfo:
        """As m8.devservices describes a RabbitMQ (not managed: rabbitmq_node stops it)."""
        extra = {} if self.management_url is None else {"management_url": self.management_url}
        return ServiceInfo("rabbitmq", self.url, managed=False, extra=extra)

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

    def stop_app(self) -> None:
        """Stops the broker application: every connection drops, the node stays."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        """Starts the broker application again; returns once the node is ready."""
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

    def restart(self) -> None:
        """Stops the broker application and starts it again: every connection drops,
        durable queues and their messages stay; returns once the node is ready."""
        self.stop_app()
        self.start_app()

    def wait_ready(self) -> None:
        """Waits until AMQP (and the management API, if any) answers; ServiceError past
        the deadline."""
        deadline = time.monotonic() + START_TIMEOUT
        while not (tcp_open("127.0.0.1", self.port) and self._management_ok()):
            if time.monotonic() > deadline:
                raise ServiceError(f"RabbitMQ node {self.name} is not ready")
            time.sleep(0.5)

    def _management_ok(self) -> bool:
        if self.management_url is None:
            return True
        try:
            answer = httpx.get(
                f"{self.management_url}/api/overview", auth=("guest", "guest"), timeout=2.0
            )
        except httpx.HTTPError:
            return False
        return answer.is_success


@contextmanager
def rabbitmq_node(*, management: bool = False) -> Iterator[RabbitNode]:
    """Starts a node of its own (with the management plugin if `management`) and yields it
    once ready; stops it and deletes its data afterwards. ServiceError if it cannot start."""
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        raise ServiceError("rabbitmq-server is not installed: apt-get install rabbitmq-server")
    directory = Path(tempfile.mkdtemp(prefix="m8-rabbit-"))
    port, dist_port = free_port(), free_port()
    config = f"listeners.tcp.local = 127.0.0.1:{port}\nloopback_users.guest = true\n"
    management_url = None
    if management:
        management_port = free_port()
        management_url = f"http://127.0.0.1:{management_port}"
        config += f"management.tcp.port = {management_port}\nmanagement.tcp.ip = 127.0.0.1\n"
    node = RabbitNode(
        f"m8-own-{uuid.uuid4().hex[:8]}@localhost",
        f"amqp://guest:guest@127.0.0.1:{port}/",
        port,
        management_url,
    )
    (directory / "rabbitmq.conf").write_text(config)
    plugins = "[rabbitmq_management]" if management else "[]"
    (directory / "enabled_plugins").write_text(f"{plugins}.\n")
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
    try:
        subprocess.run(
            ["rabbitmq-server", "-detached"], env=env, cwd=directory, check=True, timeout=60
        )
        try:
            node.wait_ready()
        except ServiceError:
            logs = "".join(p.read_text() for p in (directory / "log").glob("*.log"))
            raise ServiceError(
                f"RabbitMQ node {node.name} did not start:\n{logs[-3000:]}"
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
