"""HTTP/1.1 to m8's API with the standard library's `http.client`.

One connection, kept alive across the requests of a command; TLS verified against the
system's certificate authorities (OpenSSL's defaults, so `SSL_CERT_FILE` and
`SSL_CERT_DIR` are honoured); a proxy from `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`;
redirects never followed (the bearer token goes to the configured server only).

m8ctl is a process per command, so what it loads before its first request is most of
what it costs: httpx, its CA bundle and the command-line tool it imports took about half
of `m8ctl secret put` (docs/performance.md).
"""

from __future__ import annotations

import base64
import http.client
import os
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
    """The server could not be reached, or the exchange broke off."""


class Connection:
    """Requests to one server over one kept-alive connection (made again when dropped),
    one at a time: threads that share it wait for each other (give each its own client to
    upload in parallel)."""

    def __init__(self, server: str) -> None:
        url = urlsplit(server)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"{server!r} is not an http:// or https:// URL")
        self.tls = url.scheme == "https"
        self.host = url.hostname
        self.port = url.port or (443 if self.tls else 80)
        self.base_path = url.path.rstrip("/")
        self._proxy = _proxy_for(url.scheme, self.host)
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self._lock:
            return self._send(request)

    def _send(self, request: Request) -> Response:
        reused = self._connection is not None
        try:
            return self._exchange(request)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.close()
            if not reused:
                raise TransportError("the server closed the connection") from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise TransportError(type(exc).__name__) from exc
        # The server had closed the kept-alive connection (its idle timeout): once more on
        # a new one. What m8's client sends is safe to send twice: an upload by its id is
        # answered as the first time, and a second key request issues a key that expires.
        try:
            return self._exchange(request)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise TransportError(type(exc).__name__) from exc

    def close(self) -> None:
        """Closes the connection (the next request makes a new one)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _exchange(self, request: Request) -> Response:
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
        if not self.tls:
            return http.client.HTTPConnection(host, port, timeout=timeout)
        connection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=ssl.create_default_context()
        )
        if proxy is not None:
            connection.set_tunnel(self.host, self.port, headers=proxy.headers)
        return connection


@dataclass(frozen=True)
class _Proxy:
    host: str
    port: int
    headers: dict[str, str]


def _proxy_for(scheme: str, host: str) -> _Proxy | None:
    """The proxy the environment names for `scheme`, unless NO_PROXY exempts `host`."""
    if not any(name.lower() in (f"{scheme}_proxy", "all_proxy") for name in os.environ):
        return None  # the usual case: no need to load urllib.request
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    address = proxies.get(scheme) or proxies.get("all")
    if not address or urllib.request.proxy_bypass(host):
        return None
    url = urlsplit(address if "://" in address else f"http://{address}")
    if url.scheme != "http" or not url.hostname:
        raise ValueError(f"the {scheme} proxy {address!r} is not an http:// URL")
    headers = {}
    if url.username is not None:
        credentials = f"{unquote(url.username)}:{unquote(url.password or '')}"
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    return _Proxy(url.hostname, url.port or 80, headers)
