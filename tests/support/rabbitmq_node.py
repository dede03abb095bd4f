"""A RabbitMQ node of a test's own, for chaos tests that stop and restart a broker.

The machine's RabbitMQ serves every other test: no test stops it. This starts
`rabbitmq-server` as another node (its own name, AMQP port, distribution port, data and
log directories, no plugins) and stops it when the test is done. Debian's wrapper runs the
server as the `rabbitmq` user when started by root, so the node's directory is handed to
that user.
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

import pytest

from m8.devservices.manager import free_port, tcp_open

START_TIMEOUT = 120.0


@dataclass(frozen=True)
class RabbitNode:
    """A running node: its Erlang name and the AMQP URL of its default virtual host."""

    name: str
    url: str
    port: int

    def ctl(self, *args: str) -> None:
        """`rabbitmqctl --node <this node> ARGS`, never the machine's node."""
        subprocess.run(
            ["rabbitmqctl", "--node", self.name, *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def stop_app(self) -> None:
        """Stops the broker application: every connection drops, the node stays."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        """Starts it again, once the old listener has let go of the port."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.ctl("start_app")
                return
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


@contextmanager
def rabbitmq_node() -> Iterator[RabbitNode]:
    """Starts a node of its own and yields it; stops it and deletes its data afterwards."""
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmq-server is not installed: apt-get install rabbitmq-server")
    directory = Path(tempfile.mkdtemp(prefix="m8-rabbit-"))
    port, dist_port = free_port(), free_port()
    node = RabbitNode(
        f"m8-chaos-{uuid.uuid4().hex[:8]}@localhost", f"amqp://guest:guest@127.0.0.1:{port}/", port
    )
    (directory / "rabbitmq.conf").write_text(
        f"listeners.tcp.local = 127.0.0.1:{port}\nloopback_users.guest = true\n"
    )
    (directory / "enabled_plugins").write_text("[].\n")
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
        deadline = time.monotonic() + START_TIMEOUT
        while not tcp_open("127.0.0.1", port):
            if time.monotonic() > deadline:
                logs = "".join(p.read_text() for p in (directory / "log").glob("*.log"))
                pytest.fail(f"the test's own RabbitMQ node did not start:\n{logs[-3000:]}")
            time.sleep(0.5)
        yield node
    finally:
        subprocess.run(
            ["rabbitmqctl", "--node", node.name, "stop"],
            capture_output=True,
            timeout=120,
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
