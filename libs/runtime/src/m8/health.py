"""The operations port of a service without an HTTP API of its own (the reactors, the key
rotator): `/metrics` for Prometheus, `/healthz` and `/readyz` for the kubelet, on one port.
The API answers /healthz and /readyz itself (m8.api.routes.health).

The listener runs in threads of its own, as prometheus_client's does: a scrape answers
even while the event loop is busy. The probes, though, ask the event loop: /healthz
fails when the loop does not answer within LIVENESS_TIMEOUT (a loop blocked by a stuck
handler is a process to restart), and /readyz runs its checks on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from functools import partial
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from m8.eventstore.mongo import Document
from m8.eventstore.outbox import BacklogCollector
from m8.runtime import ConfigurationError, Runtime

log = logging.getLogger(__name__)

T = TypeVar("T")

# A kubelet probe waits 3 s (the manifests' timeoutSeconds): each answer comes sooner.
LIVENESS_TIMEOUT = 2.0
CHECK_TIMEOUT = 2.0
# Shorter than a check's bound, so that a MongoDB that does not answer is remembered as such.
PING_TIMEOUT = 1.5
# At most one MongoDB ping per this many seconds, however many probes ask.
PING_INTERVAL = 5.0

# How often the listener thread looks for a stop: a stopping service waits this long at
# most for its port to close, within its 10 s to go.
STOP_POLL = 0.2

PROBLEM_TYPE = "application/problem+json"

# None: the check passes; otherwise why it fails, for a person (never a secret, never
# a driver's message, which may quote a document).
Check = Callable[[], Awaitable[str | None]]


class MongoPing:
    """Whether MongoDB answers `ping`, asked at most once per `interval` and waited for
    `timeout` at most: probes must not load the database, nor hang on it."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        interval: float = PING_INTERVAL,
        timeout: float = PING_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self._lock = asyncio.Lock()
        self._answer: str | None = None
        self._asked_at: float | None = None

    async def check(self) -> str | None:
        """None if MongoDB answered the last ping (at most `interval` ago), else why not."""
        # Probes that arrive during a ping share its answer.
        async with self._lock:
            now = self.clock()
            if self._asked_at is None or now - self._asked_at >= self.interval:
                self._answer = await self._ping()
                self._asked_at = self.clock()
            return self._answer

    async def _ping(self) -> str | None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.db.command("ping")
        except TimeoutError:
            return f"MongoDB does not answer within {self.timeout:g}s"
        except PyMongoError as exc:
            return f"MongoDB does not answer ({type(exc).__name__})"
        return None


def runtime_checks(runtime: Runtime) -> dict[str, Check]:
    """What /readyz checks of a service: MongoDB answers, the broker connection is open,
    its consumers started, and its background loops (the outbox relay's among them) run."""
    return {
        "mongodb": MongoPing(runtime.db).check,
        "broker": partial(_broker, runtime),
        "consumers": partial(_consumers, runtime),
        "loops": partial(_loops, runtime),
    }


async def _broker(runtime: Runtime) -> str | None:
    # A robust connection clears `connected` while it reconnects; its consumers come back
    # with it.
    return None if runtime.broker.connection.connected.is_set() else "RabbitMQ connection down"


async def _consumers(runtime: Runtime) -> str | None:
    return None if runtime.workers else "no consumer started"


async def _loops(runtime: Runtime) -> str | None:
    ended = sorted(task.get_name() for task in runtime.tasks if task.done())
    return f"ended: {', '.join(ended)}" if ended else None


class HealthApp:
    """The WSGI application of the operations port; anything but its three paths is 404."""

    def __init__(
        self,
        registry: CollectorRegistry,
        checks: Mapping[str, Check],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.metrics = make_wsgi_app(registry)
        self.checks = dict(checks)
        self.loop = loop
        self._was_ready: bool | None = None
        self._noting = threading.Lock()  # probes are answered in threads of their own

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        headers = [("Cache-Control", "no-store")]
        if path == "/metrics":
            answer: Iterable[bytes] = self.metrics(environ, start_response)
            return answer
        if path not in ("/healthz", "/readyz"):
            status, body = _problem(
                HTTPStatus.NOT_FOUND, "this port serves /metrics, /healthz and /readyz only"
            )
        elif method not in ("GET", "HEAD"):
            status, body = _problem(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} answers GET only")
            headers.append(("Allow", "GET, HEAD"))
        elif path == "/healthz":
            status, body = self.liveness()
        else:
            status, body = self.readiness()
        media_type = "application/json" if status == HTTPStatus.OK else PROBLEM_TYPE
        content = json.dumps(body, separators=(",", ":")).encode()
        headers += [("Content-Type", media_type), ("Content-Length", str(len(content)))]
        start_response(f"{status.value} {status.phrase}", headers)
        return [b"" if method == "HEAD" else content]

    def liveness(self) -> tuple[HTTPStatus, dict[str, Any]]:
        """200 if the event loop runs a step within LIVENESS_TIMEOUT."""
        try:
            self._on_loop(asyncio.sleep(0), LIVENESS_TIMEOUT)
        except (TimeoutError, RuntimeError):
            detail = f"the event loop did not answer within {LIVENESS_TIMEOUT:g}s"
            return _problem(HTTPStatus.SERVICE_UNAVAILABLE, detail)
        return HTTPStatus.OK, {"status": "ok"}

    def readiness(self) -> tuple[HTTPStatus, dict[str, Any]]:
        """200 if every check passes, else 503 saying which failed and why."""
        try:
            results = self._on_loop(self._run_checks(), CHECK_TIMEOUT + 0.5)
        except (TimeoutError, RuntimeError):
            results = dict.fromkeys(self.checks, "the event loop did not answer")
        failed = {name: why for name, why in results.items() if why is not None}
        self._note(failed)
        checks = {name: results[name] or "ok" for name in sorted(results)}
        if not failed:
            return HTTPStatus.OK, {"status": "ready", "checks": checks}
        detail = "not ready: " + "; ".join(f"{name}: {why}" for name, why in sorted(failed.items()))
        status, problem = _problem(HTTPStatus.SERVICE_UNAVAILABLE, detail)
        return status, {**problem, "checks": checks}

    async def _run_checks(self) -> dict[str, str | None]:
        names = list(self.checks)
        results = await asyncio.gather(*(self._run(self.checks[name]) for name in names))
        return dict(zip(names, results, strict=True))

    @staticmethod
    async def _run(check: Check) -> str | None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                return await check()
        except TimeoutError:
            return f"no answer within {CHECK_TIMEOUT:g}s"
        except Exception as exc:
            return f"the check failed ({type(exc).__name__})"

    def _on_loop(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Runs `coro` on the service's event loop from this server thread."""
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:  # the loop is closed: the process is on its way out
            coro.close()
            raise
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def _note(self, failed: Mapping[str, str]) -> None:
        """Logs the changes between ready and not ready (not every probe)."""
        ready = not failed
        with self._noting:
            if ready == self._was_ready:
                return
            self._was_ready = ready
        if ready:
            log.info("ready")
        else:
            log.warning("not ready", extra={"failed_checks": dict(failed)})


# The codes of the API's problems (m8.api.problems) for the same statuses.
_CODES = {
    HTTPStatus.NOT_FOUND: "not_found",
    HTTPStatus.METHOD_NOT_ALLOWED: "method_not_allowed",
    HTTPStatus.SERVICE_UNAVAILABLE: "unavailable",
}


def _problem(status: HTTPStatus, detail: str) -> tuple[HTTPStatus, dict[str, Any]]:
    code = _CODES[status]
    return status, {
        "type": f"urn:m8:problem:{code}",
        "title": status.phrase,
        "status": status.value,
        "detail": detail,
    }


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per request: probes come every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    # Request threads are not waited for at close: one may wait for a probe's answer.
    daemon_threads = True


class HealthServer:
    """The operations port: a listener thread (and one per request) serving a HealthApp."""

    def __init__(self, app: HealthApp, host: str, port: int) -> None:
        # IPv4 or IPv6, whichever `host` is (prometheus_client chooses the same way).
        try:
            family, *_, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            server_class = type("_Server", (_ThreadingServer,), {"address_family": family})
            self._server: WSGIServer = make_server(
                str(address[0]), port, app, server_class, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {host}:{port} for /metrics, /healthz and /readyz: "
                f"{exc.strerror or exc}"
            ) from None
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(STOP_POLL,), name="m8-health", daemon=True
        )

    def start(self) -> None:
        """Starts answering."""
        self._thread.start()

    def stop(self) -> None:
        """Stops listening (waits for the listener thread, not for requests in progress)."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def register_process_metrics(registry: CollectorRegistry) -> None:
    """Adds what describes the process (process_*, python_*) to the registry it serves:
    here, not with the service's metrics, as a process serves one registry. Once."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


def outbox_lag() -> BacklogCollector:
    """The lag of the process's outbox relays, by service, for a service's registry:
    m8_outbox_unpublished_events and m8_outbox_oldest_unpublished_age_seconds."""
    return BacklogCollector(
        Gauge(
            "m8_outbox_unpublished_events",
            "Events a service stored that its outbox backstop found unpublished "
            "10 s after they were made, at its last pass (counted up to 200).",
            ["service"],
            registry=None,
        ),
        Gauge(
            "m8_outbox_oldest_unpublished_age_seconds",
            "Relay lag: the age of the oldest of those events (0: none).",
            ["service"],
            registry=None,
        ),
    )


@contextlib.asynccontextmanager
async def serve_health(
    runtime: Runtime, registry: CollectorRegistry, host: str, port: int
) -> AsyncIterator[HealthServer | None]:
    """Serves `registry` (with the process's metrics added) and the probes of `runtime` on
    `host`:`port` for the block's duration; port 0 serves nothing (and yields None).

    Stopped before the runtime closes: a stopping service is not ready, and says so by
    not answering.
    """
    if not port:
        yield None
        return
    register_process_metrics(registry)
    app = HealthApp(registry, runtime_checks(runtime), asyncio.get_running_loop())
    server = HealthServer(app, host, port)
    server.start()
    log.info("serving /metrics, /healthz and /readyz", extra={"host": host, "port": server.port})
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)
