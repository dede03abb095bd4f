"""m8ctl's HTTP transport (m8.client.http) against a real local HTTP server: one kept-alive
connection, a dropped one made again, no redirects followed, proxies from the environment,
timeouts, TLS verified, and an unreachable server said plainly."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from m8.client.errors import ApiError, ClientError, Unreachable
from m8.client.http import Connection, Request, TransportError
from m8.client.sdk import M8Client


@dataclass
class Seen:
    """What the server was asked: (method, target, headers, body), and from which client
    ports (one per TCP connection)."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)


Answer = Callable[[BaseHTTPRequestHandler], None]


def json_answer(status: int, body: object, **headers: str) -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        content = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(content)))
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.end_headers()
        handler.wfile.write(content)

    return answer


@contextmanager
def server(*answers: Answer, tls: ssl.SSLContext | None = None) -> Iterator[tuple[str, Seen]]:
    """A local HTTP/1.1 server (HTTPS with `tls`) giving `answers` in turn (the last one
    again after), and what it saw."""
    seen = Seen()
    queue = list(answers)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: object) -> None:
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            seen.requests.append((self.command, self.path, dict(self.headers.items()), body))
            seen.ports.append(self.client_address[1])
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
            answer(self)

        do_GET = do_POST = _any  # http.server's names

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def closing_after(answer: Answer) -> Answer:
    """Answers, then closes the connection without saying so (an idle timeout)."""

    def close(handler: BaseHTTPRequestHandler) -> None:
        answer(handler)
        handler.wfile.flush()
        handler.close_connection = True

    return close


def hanging_up(handler: BaseHTTPRequestHandler) -> None:
    """Closes the connection without any answer."""
    handler.close_connection = True


def test_requests_share_one_kept_alive_connection_below_the_servers_path() -> None:
    with server(json_answer(200, {"ok": True})) as (url, seen):
        connection = Connection(url + "/m8/")
        for n in range(3):
            request = Request("POST", f"/v1/x?n={n}", {"Authorization": "Bearer t"}, b"{}")
            assert json.loads(connection(request).body) == {"ok": True}
        connection.close()

    assert [target for _, target, _, _ in seen.requests] == [f"/m8/v1/x?n={n}" for n in range(3)]
    assert len(set(seen.ports)) == 1
    assert all(headers["Authorization"] == "Bearer t" for _, _, headers, _ in seen.requests)
    assert all(body == b"{}" for *_, body in seen.requests)


def test_a_connection_the_server_dropped_is_made_again_once() -> None:
    with server(closing_after(json_answer(200, {"n": 1})), json_answer(200, {"n": 2})) as (
        url,
        seen,
    ):
        connection = Connection(url)
        assert json.loads(connection(Request("GET", "/a", {})).body) == {"n": 1}
        assert json.loads(connection(Request("GET", "/b", {})).body) == {"n": 2}

    assert [target for _, target, _, _ in seen.requests] == ["/a", "/b"]
    assert len(set(seen.ports)) == 2


def test_a_hang_up_on_a_new_connection_is_not_sent_again() -> None:
    with server(hanging_up) as (url, seen), pytest.raises(TransportError):
        Connection(url)(Request("POST", "/v1/secrets", {}, b"{}"))

    assert len(seen.requests) == 1


def test_an_unreachable_server_is_a_clear_client_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, never listening: refused
        with (
            M8Client(f"http://127.0.0.1:{port}", "tok") as client,
            pytest.raises(Unreachable, match=r"cannot reach the m8 API .* check the URL"),
        ):
            client.me()


def test_a_server_url_that_is_not_http_is_a_clear_client_error() -> None:
    with pytest.raises(ClientError, match="not an http:// or https:// URL; check the server URL"):
        M8Client("ftp://m8.example", "tok")


def test_a_redirect_is_not_followed_and_the_token_goes_nowhere_else() -> None:
    redirect = json_answer(302, {}, Location="http://elsewhere.example/v1/me")
    with (
        server(redirect) as (url, seen),
        M8Client(url, "tok") as client,
        pytest.raises(ApiError) as raised,
    ):
        client.me()

    assert raised.value.status == 302
    assert len(seen.requests) == 1


def test_problem_details_and_retry_after_reach_the_error() -> None:
    problem = {"type": "urn:m8:problem:rate_limited", "title": "Too Many", "detail": "slow down"}
    with (
        server(json_answer(429, problem, Retry_After="7")) as (url, _seen),
        M8Client(url, "tok") as client,
        pytest.raises(ApiError) as raised,
    ):
        client.me()

    assert (raised.value.status, raised.value.code, raised.value.retry_after) == (
        429,
        "rate_limited",
        7.0,
    )


def test_a_server_slower_than_the_timeout_is_unreachable() -> None:
    released = threading.Event()

    def slow(handler: BaseHTTPRequestHandler) -> None:
        released.wait(60)
        json_answer(200, {})(handler)

    with server(slow) as (url, _seen):
        try:
            with pytest.raises(TransportError):
                Connection(url)(Request("GET", "/v1/me", {}, timeout=0.2))
        finally:
            released.set()


def test_a_proxy_from_the_environment_gets_the_absolute_url_and_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with server(json_answer(200, {"via": "proxy"})) as (proxy_url, seen):
        proxy = proxy_url.replace("http://", "http://user:p%40ss@")
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        connection = Connection("http://m8.example:8080/base")
        assert json.loads(connection(Request("GET", "/v1/me", {})).body) == {"via": "proxy"}

    [(_, target, headers, _)] = seen.requests
    assert target == "http://m8.example:8080/base/v1/me"
    assert headers["Proxy-Authorization"] == "Basic " + base64.b64encode(b"user:p@ss").decode()


def test_no_proxy_exempts_a_host(monkeypatch: pytest.MonkeyPatch) -> None:
    with server(json_answer(200, {"via": "direct"})) as (url, seen):
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert json.loads(Connection(url)(Request("GET", "/v1/me", {})).body) == {"via": "direct"}

    assert [target for _, target, _, _ in seen.requests] == ["/v1/me"]


@contextmanager
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTPS server with a self-signed certificate for 127.0.0.1, and that
    certificate's file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "m8 test")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    with server(json_answer(200, {"over": "tls"}), tls=context) as (url, _seen):
        yield url, cert_file


def test_an_https_server_is_verified_against_the_systems_authorities(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tls_server(tmp_path) as (url, cert_file):
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        with pytest.raises(TransportError, match="SSLCertVerificationError"):
            Connection(url)(Request("GET", "/v1/me", {}))

        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
        assert json.loads(Connection(url)(Request("GET", "/v1/me", {})).body) == {"over": "tls"}
