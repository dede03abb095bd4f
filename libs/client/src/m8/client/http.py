"""HTTP/1.1 to m8's API with the standard library's `http.client`.

One connection, kept alive across the requests of a command; TLS verified against the
system's certificate authorities (OpenSSL's defaults, so `SSL_CERT_FILE` and
`SSL_CERT_DIR` are honoured), host name included; a plain-HTTP proxy from `HTTPS_PROXY`
(https servers), `HTTP_PROXY` (http servers) or `ALL_PROXY`, unless `NO_PROXY` exempts the
server, and never for this machine; redirects never followed (the bearer token goes to
the configured server only).

m8ctl is a process per command, so what it loads before its first request is much of
what it costs: without httpx (its import, its CA bundle, its own command line), a
`secret put` loads 148 modules fewer (docs/performance.md).
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import os
import select
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class Request:
    """What the client sends: `target` is the path and query below the server's URL."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes | None = None
    timeout: float = 30.0


@dataclass(frozen=True)
class Response:
    """What came back; `headers` with lower-case names."""

    status: int
    reason: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


# What M8Client sends its requests through: a Connection, or a stand-in in tests.
Transport = Callable[[Request], Response]


class TransportError(Exception):
    """The server could not be reached, or the exchange broke off. The message names what
    failed, never what was sent."""


class ConnectionSettingError(ValueError):
    """The server URL, a proxy or the machine's CA certificates do not allow a connection;
    the message says what to change."""


# The other side closed the connection (an idle kept-alive one, most often).
_DROPPED = (ConnectionError, http.client.RemoteDisconnected, ssl.SSLEOFError)
# Any failure to exchange (a header http.client refuses included: ValueError).
_FAILED = (OSError, http.client.HTTPException, ValueError, UnicodeError)


class Connection:
    """Requests to one server over one kept-alive connection (made again when dropped),
    one at a time: threads that share it wait for each other."""

    def __init__(self, server: str) -> None:
        url = urlsplit(server)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConnectionSettingError(  # unquoted: a URL may hold credentials
                "the server URL is not an http:// or https:// URL; check it (`m8ctl login`)"
            )
        self.tls = url.scheme == "https"
        self.host = url.hostname
        self.port = url.port or (443 if self.tls else 80)
        self.base_path = url.path.rstrip("/")
        self._proxy = _proxy_for(url.scheme, self.host)
        self._context = _verifying_context() if self.tls else None
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self._lock:
            return self._send(request)

    def close(self) -> None:
        """Closes the connection (the next request makes a new one)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _send(self, request: Request) -> Response:
        if self._connection is not None and _closed_by_peer(self._connection):
            self.close()
        reused = self._connection is not None
        sent = False
        try:
            connection = self._request(request)
            sent = True
            return self._response(connection)
        except _DROPPED as exc:
            self.close()
            # Closed under us after the check above: once more on a new connection if
            # the request never left, or if it may be repeated (a GET reads only).
            if not (reused and (not sent or request.method == "GET")):
                raise TransportError(_failure(exc)) from None
        except _FAILED as exc:
            self.close()
            # A header http.client refuses (a token with a line break) would be quoted
            # in the error: its type only.
            raise TransportError(_failure(exc)) from None
        try:
            return self._response(self._request(request))
        except _FAILED as exc:
            self.close()
            raise TransportError(_failure(exc)) from None

    def _request(self, request: Request) -> http.client.HTTPConnection:
        """Sends `request` whole, on the kept connection or a new one, which it returns."""
        connection = self._connection or self._connect(request.timeout)
        self._connection = connection
        connection.timeout = request.timeout
        if connection.sock is not None:
            connection.sock.settimeout(request.timeout)
        target = self.base_path + request.target
        headers = dict(request.headers)
        if self._proxy is not None and not self.tls:
            # A plain-HTTP proxy takes the absolute URL and its own credentials.
            host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
            target = f"http://{host}:{self.port}{target}"
            headers.update(self._proxy.headers)
        connection.request(request.method, target, body=request.body, headers=headers)
        return connection

    def _response(self, connection: http.client.HTTPConnection) -> Response:
        answer = connection.getresponse()
        body = answer.read()
        response = Response(
            answer.status,
            answer.reason,
            body,
            {name.lower(): value for name, value in answer.getheaders()},
        )
        if answer.will_close:
            self.close()
        return response

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        proxy = self._proxy
        host, port = (proxy.host, proxy.port) if proxy is not None else (self.host, self.port)
        if self._context is None:
            return http.client.HTTPConnection(host, port, timeout=timeout)
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._context)
        if proxy is not None:
            connection.set_tunnel(self.host, self.port, headers=proxy.headers)
        return connection


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """Whether the idle connection was closed by the other side (readable with nothing
    asked for: its end, or bytes nobody asked for), as urllib3 checks before reuse."""
    sock = connection.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _failure(exc: BaseException) -> str:
    """What failed, for a person: the error's type, and the system's words for it."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else None
    if isinstance(exc, ssl.SSLError) and exc.reason:
        reason = exc.reason
    return f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__


def _verifying_context() -> ssl.SSLContext:
    """A TLS context that checks the server's certificate and host name against the
    system's certificate authorities, or ConnectionSettingError if there are none."""
    context = ssl.create_default_context()
    # A directory of them is read when a certificate is checked; a file is read now.
    has_directory = ssl.get_default_verify_paths().capath is not None
    if not context.cert_store_stats()["x509_ca"] and not has_directory:
        raise ConnectionSettingError(
            "this machine has no CA certificates to check the m8 API's certificate with; "
            "install them (the ca-certificates package, or Install Certificates.command on "
            "macOS) or name a file of them in SSL_CERT_FILE"
        )
    return context


@dataclass(frozen=True)
class _Proxy:
    host: str
    port: int
    headers: dict[str, str]


def _proxy_for(scheme: str, host: str) -> _Proxy | None:
    """The proxy the environment names for `scheme`, unless NO_PROXY exempts `host` or
    it is this machine (a token sent in clear to a proxy would leave it)."""
    if not any(name.lower() in (f"{scheme}_proxy", "all_proxy") for name in os.environ):
        return None  # the usual case: no need to load urllib.request
    if _loopback(host):
        return None
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    address = proxies.get(scheme) or proxies.get("all")
    if not address or urllib.request.proxy_bypass(host):
        return None
    url = urlsplit(address if "://" in address else f"http://{address}")
    if url.scheme != "http" or not url.hostname:
        # The address may hold credentials: name the variable only.
        raise ConnectionSettingError(
            f"{scheme.upper()}_PROXY (or ALL_PROXY) must be an http:// proxy URL"
        )
    headers = {}
    if url.username is not None:
        credentials = f"{unquote(url.username)}:{unquote(url.password or '')}"
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    return _Proxy(url.hostname, url.port or 80, headers)


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
