"""The whole m8 system as processes for the chaos run, each of which the run may hurt.

Servers: a RabbitMQ node of the run's own (bench/chaos_node.py), a SecantusDB on
persistent storage (`--storage-path DIR`, reopened intact across restarts), and an
OpenBao and a moto of their own (in memory: they are paused, never restarted). m8: the
API, the key rotator and two reactor processes per store type, the reactors reaching the
broker through a proxy whose link the run cuts (bench/chaos_proxy.py). Each process logs
to `<workdir>/logs/<name>.log`, appended across restarts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from bench.chaos_node import RabbitNode
from m8.config import Settings
from m8.devservices import ServiceError, ServiceInfo, Services
from m8.devservices.manager import (
    free_port,
    http_ok,
    log_tail,
    mongodb_healthy,
    start_store_server,
    stop_process,
    store_servers,
    tool,
    wait_until,
)
from m8.devservices.system import DevKeys, System, dev_types, m8ctl_login
from m8.devservices.vhosts import VirtualHost, virtual_host

READY_TIMEOUT = 120.0
REACTORS_PER_TYPE = 2
OWN_VARIABLES = ("M8_", "VAULT_", "BAO_", "AWS_")


@dataclass
class Process:
    """One process of the run: how to start it again, and how to tell it is ready."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    ready: Callable[[Process], bool]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def spawn(self) -> None:
        """Starts it in a session of its own (a kill reaches whatever it forked)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.log.parent.parent,
                env=self.env,
                start_new_session=True,
            )
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Waits until it is ready; ServiceError (with its log's tail) if it dies or lags."""
        if not wait_until(lambda: not self.alive() or self.ready(self), timeout) or not (
            self.alive() and self.ready(self)
        ):
            raise ServiceError(f"{self.name} is not ready; its log:{log_tail(str(self.log))}")

    def signal_group(self, sig: signal.Signals) -> None:
        os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL to its whole session, and waits until it is gone."""
        if self.alive():
            self.signal_group(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def terminate(self) -> None:
        """SIGTERM, then SIGKILL after a grace period."""
        if self.proc is not None:
            stop_process(self.proc.pid, timeout=20)
            self.proc.wait(timeout=30)

    def started_lines(self) -> int:
        try:
            return self.log.read_text(errors="replace").count('"service started"')
        except OSError:
            return 0


def _logged_start(process: Process) -> bool:
    # The log is appended across restarts: one "service started" per start.
    return process.started_lines() >= process.starts


def _http_ready(url: str) -> Callable[[Process], bool]:
    return lambda _process: http_ok(url)


def _mongodb_ready(url: str) -> Callable[[Process], bool]:
    return lambda _process: mongodb_healthy(url)


@dataclass
class ChaosSystem:
    """The servers and m8's processes of one chaos run."""

    workdir: Path
    node: RabbitNode
    reactor_amqp_port: int  # where reactors reach the broker: the cuttable proxy
    overrides: dict[str, str] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    services: Services | None = None
    vhost: VirtualHost | None = None
    api_url: str = ""
    mongodb_url: str = ""
    m8ctl_config: Path | None = None
    _contexts: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def start(self) -> None:
        """Starts the servers and m8, registers the dev stores, logs m8ctl in."""
        services = Services(self.workdir)
        self.services = services
        services.infos["rabbitmq"] = self.node.info
        services.infos["mongodb"] = self._start_mongodb()
        # Servers of our own even if the shell points elsewhere: the run pauses them.
        settings = Settings().model_copy(
            update={"vault_addr": None, "vault_token": None, "aws_endpoint_url": None}
        )
        for name, dev in store_servers().items():
            services.infos[name] = start_store_server(dev, settings, self.workdir)
        self.vhost = self._contexts.enter_context(virtual_host(self.node.info, prefix="m8-chaos-"))
        self._start_m8(services, self.vhost)

    def _start_mongodb(self) -> ServiceInfo:
        port = free_port()
        url = f"mongodb://127.0.0.1:{port}/"
        argv = [
            tool("secantusd-py"),
            "--host", "127.0.0.1", "--port", str(port),
            "--storage-path", str(self.workdir / "mongodb-data"), "--log-level", "WARNING",
        ]  # fmt: skip
        process = Process(
            "mongodb", argv, dict(os.environ), self.logs / "mongodb.log", _mongodb_ready(url)
        )
        process.spawn()
        self.processes["mongodb"] = process
        process.wait_ready()
        self.mongodb_url = url
        return ServiceInfo("mongodb", url, managed=False, pid=process.pid, log=str(process.log))

    def _start_m8(self, services: Services, vhost: VirtualHost) -> None:
        keys = DevKeys(self.workdir / "keys")
        keys.ensure()
        system = System(self.workdir)
        environments = system.environments(services, keys)
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        m8 = tool("m8")
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("M8_", "VAULT_", "BAO_", "AWS_"))
        }
        specs: list[tuple[str, list[str], dict[str, str], Callable[[Process], bool]]] = [
            (
                "api",
                [m8, "api", "--port", str(port)],
                {**environments["api"], "M8_AMQP_URL": vhost.service_url("api")},
                _http_ready(f"{self.api_url}/readyz"),
            ),
            (
                "keyrotator",
                [m8, "keyrotator"],
                {**environments["keyrotator"], "M8_AMQP_URL": vhost.service_url("keyrotator")},
                _logged_start,
            ),
        ]
        for store_type in dev_types():
            service = f"reactor-{store_type.name}"
            amqp = _via_port(vhost.service_url(service), self.reactor_amqp_port)
            for n in range(1, REACTORS_PER_TYPE + 1):
                metrics = free_port()
                env = {
                    **environments[service],
                    "M8_AMQP_URL": amqp,
                    "M8_REACTOR_METRICS_PORT": str(metrics),
                }
                ready = _http_ready(f"http://127.0.0.1:{metrics}/metrics")
                specs.append((f"{service}-{n}", [m8, "reactor", store_type.name], env, ready))
        for name, argv, env, ready in specs:
            # Overrides first, but each service keeps its own broker user.
            full = {**base, **env, **self.overrides, "M8_AMQP_URL": env["M8_AMQP_URL"]}
            process = Process(name, argv, full, self.logs / f"{name}.log", ready)
            self.processes[name] = process
            process.spawn()
        for name, _argv, _env, _ready in specs:
            self.processes[name].wait_ready()
        system.api_url = self.api_url
        try:
            system.register_stores(services)
        except httpx.HTTPError as exc:
            raise ServiceError(f"could not register the dev stores: {exc}") from None
        self.m8ctl_config = self.workdir / "m8ctl.json"
        m8ctl_login(system, self.m8ctl_config)

    # --- faults ------------------------------------------------------------------------

    def kill_and_restart(self, name: str) -> None:
        """SIGKILL, start again at once, wait until it is ready."""
        process = self.processes[name]
        process.kill()
        process.spawn()
        process.wait_ready()

    def restart_mongodb(self) -> None:
        """Stops the MongoDB server (SIGTERM) and starts it on the same storage and port."""
        process = self.processes["mongodb"]
        process.terminate()
        process.spawn()
        process.wait_ready()

    def pause(self, server: str) -> None:
        """SIGSTOP to an upstream server: it keeps its memory and port, answers nothing."""
        os.killpg(self._server_pid(server), signal.SIGSTOP)

    def resume(self, server: str) -> None:
        os.killpg(self._server_pid(server), signal.SIGCONT)

    def _server_pid(self, server: str) -> int:
        pid = self.upstream(server).pid
        assert pid is not None  # started here, never found
        return pid

    def upstream(self, server: str) -> ServiceInfo:
        assert self.services is not None
        return self.services[server]

    def stop(self) -> None:
        """Stops every process of the run and removes its virtual host."""
        for process in reversed(self.processes.values()):
            if process.proc is not None:
                process.terminate()
        if self.services is not None:
            for server in store_servers():
                if server in self.services.infos:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        self.resume(server)  # a paused server cannot stop
            self.services.stop()  # the upstream servers: the only ones it manages
        self._contexts.close()  # the virtual host and its users


def _via_port(url: str, port: int) -> str:
    """`url` with its port replaced (the reactors' broker URL through the proxy)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return urlunsplit(parts._replace(netloc=netloc))
