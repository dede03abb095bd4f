"""m8ctl's HTTP transport (m8.client.http) against a real local HTTP server: one kept-alive
connection, a dropped one made again, no redirects followed, proxies from the environment,
timeouts, TLS verified, and an unreachable server said plainly."""

from __future__ import annotations

import base64
import json
import os
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
from m8.client.http import Connection, Request, Response, TransportError
from m8.client.sdk import M8Client


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's proxy settings stay out of these tests (each sets its own)."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


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


def test_a_kept_connection_the_server_closed_while_idle_is_made_again() -> None:
    with server(closing_after(json_answer(200, {"n": 1})), json_answer(200, {"n": 2})) as (
        url,
        seen,
    ):
        connection = Connection(url)
        assert json.loads(connection(Request("GET", "/a", {})).body) == {"n": 1}
        assert json.loads(connection(Request("GET", "/b", {})).body) == {"n": 2}

    assert [target for _, target, _, _ in seen.requests] == ["/a", "/b"]
    assert len(set(seen.ports)) == 2


def test_a_get_the_server_hung_up_on_a_kept_connection_is_sent_once_more() -> None:
    answers = (json_answer(200, {"n": 1}), hanging_up, json_answer(200, {"n": 2}))
    with server(*answers) as (url, seen):
        connection = Connection(url)
        connection(Request("GET", "/a", {}))
        assert json.loads(connection(Request("GET", "/b", {})).body) == {"n": 2}

    assert [target for _, target, _, _ in seen.requests] == ["/a", "/b", "/b"]


def test_a_post_the_server_received_then_hung_up_on_is_not_sent_again() -> None:
    with server(json_answer(200, {"n": 1}), hanging_up) as (url, seen):
        connection = Connection(url)
        connection(Request("GET", "/a", {}))
        with pytest.raises(TransportError):
            connection(Request("POST", "/v1/stores", {}, b"{}"))

    assert [target for _, target, _, _ in seen.requests] == ["/a", "/v1/stores"]


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
    with pytest.raises(ClientError, match="not an http:// or https:// URL; check it") as raised:
        M8Client("ftp://user:hunter2@m8.example", "tok")
    assert "hunter2" not in str(raised.value)


def test_a_redirect_is_not_followed_and_the_token_goes_nowhere_else() -> None:
    with server(json_answer(200, {})) as (elsewhere, seen_elsewhere):
        redirect = json_answer(302, {}, Location=f"{elsewhere}/v1/me")
        with (
            server(redirect) as (url, seen),
            M8Client(url, "tok") as client,
            pytest.raises(ApiError) as raised,
        ):
            client.me()

    assert raised.value.status == 302
    assert len(seen.requests) == 1
    assert seen_elsewhere.requests == []


@pytest.mark.parametrize("token", ["secret-token\nsecond-line", "sécret-token", "a token", ""])
def test_a_token_no_bearer_token_can_be_is_refused_without_quoting_it(token: str) -> None:
    with pytest.raises(ClientError) as raised:
        M8Client("http://127.0.0.1:9", token)
    assert "check the token" in str(raised.value)
    assert not token or token not in str(raised.value)


def test_a_long_poll_waits_longer_than_the_servers_wait() -> None:
    asked: list[Request] = []

    def record(request: Request) -> Response:
        asked.append(request)
        return Response(200, "OK", b'{"status": "stored"}')

    with M8Client("http://m8", "tok", transport=record) as client:
        client.upload("u-1", wait=20)

    [request] = asked
    assert request.target == "/v1/uploads/u-1?wait=20"
    assert request.timeout == 50.0


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
        monkeypatch.setenv("HTTP_PROXY", "http://192.0.2.1:9")  # nothing answers there
        monkeypatch.setenv("NO_PROXY", "m8.internal")
        connection = Connection(url.replace("127.0.0.1", "m8.internal"))
        assert connection._proxy is None
        assert json.loads(Connection(url)(Request("GET", "/v1/me", {})).body) == {"via": "direct"}

    assert [target for _, target, _, _ in seen.requests] == ["/v1/me"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_this_machine_is_never_reached_through_a_proxy(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://192.0.2.1:9")  # a token in clear would leave
    assert Connection(f"http://{host}:8080")._proxy is None


def test_a_proxy_that_is_not_http_is_refused_without_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "https://user:hunter2@proxy.example:3128")
    with pytest.raises(ClientError, match="HTTPS_PROXY") as raised:
        M8Client("https://m8.example", "tok")
    assert "hunter2" not in str(raised.value)


@contextmanager
def tls_server(tmp_path: Path, named: str = "127.0.0.1") -> Iterator[tuple[str, Path]]:
    """A local HTTPS server (on 127.0.0.1) with a self-signed certificate for the address
    `named`, and that certificate's file."""
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
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip_address(named))]), False)
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


def test_an_https_server_whose_certificate_names_another_host_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tls_server(tmp_path, named="127.0.0.2") as (url, cert_file):
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # trusted, for another host
        with pytest.raises(TransportError, match="SSLCertVerificationError"):
            Connection(url)(Request("GET", "/v1/me", {}))
