"""A malicious API for tests: a reverse proxy on 127.0.0.1 in front of the real one.

It forwards every request to the running system's API and lets a test rewrite a request's
JSON body or a response's JSON per route, and records what passed, so a test can show that
m8ctl refused a forged answer and sent nothing after it. A test tool only.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

Json = Any
Rewrite = Callable[[Json], Json]
_HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "keep-alive", "host"}


@dataclass
class Passed:
    """One request the proxy forwarded, and the JSON the client finally got."""

    method: str
    path: str
    status: int
    body: Json


@dataclass
class Mitm:
    """Rewrites keyed by (method, path regex); `passed` lists what went through."""

    upstream: str
    requests: dict[tuple[str, str], Rewrite] = field(default_factory=dict)
    responses: dict[tuple[str, str], Rewrite] = field(default_factory=dict)
    passed: list[Passed] = field(default_factory=list)
    url: str = ""

    def on_request(self, method: str, route: str, rewrite: Rewrite) -> None:
        self.requests[(method, route)] = rewrite

    def on_response(self, method: str, route: str, rewrite: Rewrite) -> None:
        self.responses[(method, route)] = rewrite

    def sent(self, method: str, route: str) -> list[Passed]:
        """The requests that reached the real API on this route."""
        return [p for p in self.passed if p.method == method and re.fullmatch(route, p.path)]

    def _hook(self, hooks: dict[tuple[str, str], Rewrite], method: str, path: str) -> Rewrite:
        for (m, route), rewrite in hooks.items():
            if m == method and re.fullmatch(route, path):
                return rewrite
        return lambda body: body


@contextmanager
def mitm(upstream: str) -> Iterator[Mitm]:
    """A proxy to `upstream` on a free loopback port, for the `with` block."""
    proxy = Mitm(upstream)
    forward = httpx.Client(base_url=upstream, timeout=120)

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            path = self.path.split("?", 1)[0]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if body:
                body = _rewrite(body, proxy._hook(proxy.requests, self.command, path))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            answer = forward.request(self.command, self.path, content=body, headers=headers)
            content = answer.content
            if content and answer.headers.get("content-type", "").endswith("json"):
                content = _rewrite(content, proxy._hook(proxy.responses, self.command, path))
            shown = json.loads(content) if content.startswith((b"{", b"[")) else None
            proxy.passed.append(Passed(self.command, path, answer.status_code, shown))
            self.send_response(answer.status_code)
            for name, value in answer.headers.items():
                if name.lower() not in _HOP_BY_HOP | {"content-encoding"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_DELETE = _any

        def log_message(self, *_args: object) -> None:  # quiet test output
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        forward.close()


def _rewrite(raw: bytes, rewrite: Rewrite) -> bytes:
    try:
        data = json.loads(raw)
    except ValueError:
        return raw
    return json.dumps(rewrite(data)).encode()
