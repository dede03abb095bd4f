"""Starts the servers m8 needs on free loopback ports and waits until each is ready.

Each server is either *managed* (we started it and stop it) or *external* (an
environment variable points at a real one, or it is the machine's RabbitMQ).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from pymongo import MongoClient
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from m8 import stores
from m8.config import Settings
from m8.crypto.keyfiles import write_private_file
from m8.stores import DevServer

STATE_FILE = "services.json"


class ServiceError(RuntimeError):
    """A server could not be reached or started; the message says what to do."""


@dataclass
class ServiceInfo:
    """How to reach one running server, and whether we own its process."""

    name: str
    url: str
    managed: bool
    pid: int | None = None
    log: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tcp_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    """Polls `check` until it is true or `timeout` seconds pass; returns the last answer."""
    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(0.1),
        retry=retry_if_result(lambda ok: not ok),
        retry_error_callback=lambda _state: False,
    )
    result: bool = retrying(check)
    return result


def tool(name: str) -> str:
    """Path of a console script installed beside this interpreter, or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ServiceError(
            f"`{name}` is not installed. Install the dev extras: pip install -e '.[dev]'"
        )
    return found


def log_tail(path: str | None, lines: int = 15) -> str:
    """The last lines of a log file, indented for an error message."""
    if not path or not os.path.exists(path):
        return ""
    text = Path(path).read_text(errors="replace").splitlines()[-lines:]
    return "\n  " + "\n  ".join(text)


def spawn(
    name: str,
    argv: list[str],
    workdir: Path,
    env: dict[str, str] | None = None,
    inherit: Callable[[str], bool] = lambda _name: True,
) -> tuple[subprocess.Popen[bytes], str]:
    """Starts `argv` in a session of its own, logging to `workdir/logs/<name>.log`, with
    the variables of this process that `inherit` accepts, plus `env`."""
    log = workdir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        # A session of its own, so that stopping it also stops whatever it forked.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env={**{k: v for k, v in os.environ.items() if inherit(k)}, **(env or {})},
            start_new_session=True,
        )
    return proc, str(log)


def _ready_or_fail(
    info: ServiceInfo, proc: subprocess.Popen[bytes], check: Callable[[], bool], timeout: float
) -> ServiceInfo:
    def alive_and_ready() -> bool:
        if proc.poll() is not None:
            return True  # stop polling: it died
        return check()

    wait_until(alive_and_ready, timeout)
    if proc.poll() is not None or not check():
        stop_process(proc.pid)
        raise ServiceError(
            f"{info.name} did not become ready within {timeout:.0f}s at {info.url}."
            f" Its log ({info.log}):{log_tail(info.log)}"
        )
    return info


def stop_process(pid: int, timeout: float = 10.0) -> None:
    """Stops a process group we started: SIGTERM, then SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            return
        if wait_until(lambda: not pid_alive(pid), timeout):
            return


def pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs (a child of ours that exited counts as gone)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass  # not our child (started by an earlier `up`): fall back to a signal probe
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- health checks -----------------------------------------------------------------


def mongodb_healthy(uri: str) -> bool:
    """Whether a MongoDB-wire server answers ping at `uri`."""
    try:
        client: MongoClient[dict[str, Any]]
        with MongoClient(uri, serverSelectionTimeoutMS=500, connectTimeoutMS=500) as client:
            client.admin.command("ping")
        return True
    except Exception:
        return False


def http_ok(url: str) -> bool:
    """Whether `url` answers a GET with a 2xx status."""
    try:
        return httpx.get(url, timeout=1.0).is_success
    except httpx.HTTPError:
        return False


def openbao_healthy(addr: str) -> bool:
    """Whether OpenBao/Vault is initialised, unsealed and active."""
    return http_ok(f"{addr}/v1/sys/health")


def _store_server_healthy(dev: DevServer, info: ServiceInfo) -> bool:
    return http_ok(info.url + dev.ready) if info.managed or dev.ready_elsewhere else True


def rabbitmq_healthy(url: str) -> bool:
    """Whether the AMQP port of `url` accepts connections."""
    parts = urlsplit(url)
    return tcp_open(parts.hostname or "127.0.0.1", parts.port or 5672)


# --- the four servers --------------------------------------------------------------


def start_mongodb(settings: Settings, workdir: Path) -> ServiceInfo:
    """The MongoDB at M8_MONGODB_URI, or a SecantusDB server of our own, in memory.

    In memory like the dev OpenBao and moto beside it: an event store that outlived them
    would describe secrets and store addresses that no longer exist.
    """
    if settings.mongodb_uri:
        if not mongodb_healthy(settings.mongodb_uri):
            raise ServiceError("M8_MONGODB_URI is set but no MongoDB answers there.")
        return ServiceInfo("mongodb", settings.mongodb_uri, managed=False)
    port = free_port()
    argv = [
        tool("secantusd-py"),
        "--host", "127.0.0.1", "--port", str(port),
        "--storage-path", ":memory:", "--cache-size", settings.dev_mongodb_cache,
        "--log-level", "WARNING",
    ]  # fmt: skip
    proc, log = spawn("mongodb", argv, workdir)
    uri = f"mongodb://127.0.0.1:{port}/"
    info = ServiceInfo("mongodb", uri, managed=True, pid=proc.pid, log=log)
    return _ready_or_fail(info, proc, lambda: mongodb_healthy(uri), timeout=60)


def start_store_server(dev: DevServer, settings: Settings, workdir: Path) -> ServiceInfo:
    """The server at the type's address variable (VAULT_ADDR), or a local one of our own."""
    address = settings.upstream_variable(dev.address_variable)
    extra = {}
    if dev.login_variable:
        extra["token"] = settings.upstream_variable(dev.login_variable) or ""
    if address:
        if dev.ready_elsewhere and not http_ok(address + dev.ready):
            raise ServiceError(f"{dev.address_variable}={address} does not answer as healthy.")
        return ServiceInfo(dev.server, address, managed=False, extra=extra)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [tool(dev.command[0]), *(part.format(port=port) for part in dev.command[1:])]
    env = {}
    if dev.login_variable:
        extra["token"] = "dev-" + secrets.token_urlsafe(16)
        # By environment, never on the command line where `ps` shows it.
        env = {variable: extra["token"] for variable in dev.login_environment}
    proc, log = spawn(dev.server, argv, workdir, env)
    info = ServiceInfo(dev.server, url, managed=True, pid=proc.pid, log=log, extra=extra)
    return _ready_or_fail(info, proc, lambda: http_ok(url + dev.ready), timeout=60)


def start_openbao(settings: Settings, workdir: Path) -> ServiceInfo:
    """The Vault at VAULT_ADDR, or an OpenBao dev server of our own with KV v2 at secret/."""
    dev = stores.get("vault").dev
    assert dev is not None  # the vault type has its dev server
    return start_store_server(dev, settings, workdir)


def store_servers() -> dict[str, DevServer]:
    """The local server of each store type that has one, by the server's name."""
    return {t.dev.server: t.dev for t in stores.all_types() if t.dev is not None}


def start_rabbitmq(settings: Settings, workdir: Path) -> ServiceInfo:
    """The RabbitMQ at M8_AMQP_URL; if none answers and one is installed, start it."""
    url = settings.amqp_url
    extra = {"management_url": settings.amqp_management_url}
    if rabbitmq_healthy(url):
        return ServiceInfo("rabbitmq", url, managed=False, extra=extra)
    server = shutil.which("rabbitmq-server")
    if server is None:
        raise ServiceError(
            f"No RabbitMQ answers at {url} and rabbitmq-server is not installed. "
            "Install it (apt-get install rabbitmq-server) or point M8_AMQP_URL at one."
        )
    log = str(workdir / "logs" / "rabbitmq.log")
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        subprocess.run([server, "-detached"], stdout=out, stderr=subprocess.STDOUT, check=False)
    if not wait_until(lambda: rabbitmq_healthy(url), 90):
        raise ServiceError(f"Started rabbitmq-server, but {url} still refuses connections.")
    # The broker is the machine's service: it stays up after `down`, like any other.
    return ServiceInfo("rabbitmq", url, managed=False, log=log, extra={**extra, "started": "1"})


# --- the set -----------------------------------------------------------------------


@dataclass
class Services:
    """The servers, as a dict-like set with a state file for `up`/`down`."""

    workdir: Path
    infos: dict[str, ServiceInfo] = field(default_factory=dict)

    def __getitem__(self, name: str) -> ServiceInfo:
        return self.infos[name]

    def __iter__(self) -> Iterator[ServiceInfo]:
        return iter(self.infos.values())

    def start(self, settings: Settings) -> Services:
        """Starts (or finds) every server; on any failure stops what it started."""
        try:
            self.infos["rabbitmq"] = start_rabbitmq(settings, self.workdir)
            self.infos["mongodb"] = start_mongodb(settings, self.workdir)
            for name, dev in store_servers().items():
                self.infos[name] = start_store_server(dev, settings, self.workdir)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops every server we own."""
        for info in self.infos.values():
            if info.managed and info.pid:
                stop_process(info.pid)
        self.infos.clear()

    def health(self) -> dict[str, bool]:
        """Each server's readiness, checked now."""
        checks: dict[str, Callable[[ServiceInfo], bool]] = {
            "rabbitmq": lambda i: rabbitmq_healthy(i.url),
            "mongodb": lambda i: mongodb_healthy(i.url),
        }
        for name, dev in store_servers().items():
            checks[name] = functools.partial(_store_server_healthy, dev)
        return {info.name: checks[info.name](info) for info in self}

    def environment(self) -> dict[str, str]:
        """Environment variables that point m8 (and its tools) at these servers."""
        env = {"M8_AMQP_URL": self["rabbitmq"].url, "M8_MONGODB_URI": self["mongodb"].url}
        for name, dev in store_servers().items():
            env[dev.address_variable] = self[name].url
            if dev.login_variable and (token := self[name].extra.get("token")):
                env[dev.login_variable] = token
        return env

    def save(self) -> None:
        """Writes the state file that `status` and `down` read (0600: it holds a token)."""
        state = {n: asdict(i) for n, i in self.infos.items()}
        write_private_file(self.workdir / STATE_FILE, json.dumps(state, indent=2), overwrite=True)

    @classmethod
    def load(cls, workdir: Path) -> Services:
        """The set recorded by an earlier `up` (empty if there is none)."""
        path = workdir / STATE_FILE
        services = cls(workdir)
        if path.exists():
            for name, raw in json.loads(path.read_text()).items():
                services.infos[name] = ServiceInfo(**raw)
        return services

    def forget(self) -> None:
        """Removes the state file."""
        (self.workdir / STATE_FILE).unlink(missing_ok=True)


def local_services(settings: Settings, workdir: Path) -> Services:
    """Starts the servers m8 needs: as containers if asked and Docker is there, else local."""
    workdir.mkdir(parents=True, exist_ok=True)
    if settings.services == "containers":
        from m8.devservices.containers import container_services

        return container_services(workdir)
    return Services(workdir).start(settings)
