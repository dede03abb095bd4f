"""m8ctl stays a light client: each command loads what it needs, and no server-side library.

`secret put` is checked as a script runs it: the real command in a subprocess, its
standard streams pipes, against a stand-in API on 127.0.0.1 that signs the upload key and
the outcome's receipt as the real one does; `-X importtime` names every module it loaded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from nacl.public import PrivateKey

from m8.client.profile import PinnedKey, Profile
from m8.crypto import (
    OutcomeReceipt,
    ReceiptSigningKey,
    RotatorSigningKey,
    UploadKeyStatement,
    encode_verify_key,
    format_utc,
    sign_receipt,
    sign_statement,
    verify_key_fingerprint,
)

SERVER_SIDE = ("fastapi", "pymongo", "boto3", "hvac", "aio_pika", "uvicorn")
# What `secret put` does without: httpx (the standard library's http.client does: httpx
# and its CA bundle took about half of a put), the store types (pydantic models), rich
# (into a pipe, nothing is printed through it), its tables (the listing commands), its
# spinner (drawn on a terminal only) and emoji codes (m8ctl prints none).
NOT_ON_PUT = (
    *SERVER_SIDE,
    "httpx",
    "m8.stores",
    "pydantic",
    "rich.console",
    "rich.table",
    "rich.status",
    "rich.live",
    "rich.spinner",
    "rich._emoji_codes",
)
# An m8-client install has no click (typer<0.29 carries its own); the workspace has it
# (uvicorn needs it). The put runs as in the former.
LATER = timedelta(days=7)
AS_INSTALLED = "import sys; sys.modules['click'] = None; from m8.client.m8ctl import app; app()"


def test_m8ctl_never_imports_server_side_libraries() -> None:
    probe = (
        "import sys, m8.client.m8ctl, m8.client.upload, m8.client.sdk, m8.client.outcome; "
        f"print(','.join(m for m in {SERVER_SIDE!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_m8ctl_help_does_not_load_the_http_client_nacl_or_the_store_types() -> None:
    probe = (
        "import sys, m8.client.m8ctl; "
        "print(','.join(m for m in "
        "('m8.client.http', 'nacl', 'm8.stores', 'pydantic', 'rich.table') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


class StandInApi(ThreadingHTTPServer):
    """The three routes of one put, answered as the real API and a reactor would."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), StandInHandler)
        self.rotator = RotatorSigningKey.generate("sig-1")
        self.receipt_key = ReceiptSigningKey.generate("rk-1")
        self.uploads: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, int]] = []  # route, client port (one per connection)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def upload_key(self, body: dict[str, Any]) -> dict[str, Any]:
        statement = UploadKeyStatement(
            key_id="k-1",
            public_key=bytes(PrivateKey.generate().public_key),
            store_id=body["store"],
            path=body["path"],
            expires_at=datetime.now(UTC) + timedelta(minutes=15),
            kek_id="kek-1",
        )
        return sign_statement(statement, self.rotator).to_dict()

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        sent = hashlib.sha256(base64.b64decode(body["ciphertext"])).hexdigest()
        outcome = OutcomeReceipt(
            body["upload_id"], body["store"], body["path"], "stored", "1", "fp1:abc", sent
        )
        signature = base64.b64encode(sign_receipt(outcome, self.receipt_key)).decode()
        self.uploads[body["upload_id"]] = {
            **outcome.to_dict(),
            "receipt": {"receipt_key_id": "rk-1", "signature": signature},
        }
        return {"upload_id": body["upload_id"], "status": "pending"}


class StandInHandler(BaseHTTPRequestHandler):
    server: StandInApi
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/v1/upload-keys":
            self._answer(201, self.server.upload_key(body))
        else:
            self._answer(202, self.server.submit(body))

    def do_GET(self) -> None:
        upload_id = re.sub(r"^/v1/uploads/|\?.*$", "", self.path)
        self._answer(200, self.server.uploads[upload_id])

    def _answer(self, status: int, document: dict[str, Any]) -> None:
        route = re.sub(r"/v1/uploads/.*", "/v1/uploads", self.path)
        self.server.requests.append((f"{self.command} {route}", self.client_address[1]))
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: object) -> None:  # quiet test output
        pass


@pytest.fixture
def api() -> Iterator[StandInApi]:
    server = StandInApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def logged_in(api: StandInApi, path: Path) -> Path:
    """A profile that pins the stand-in's rotator and receipt keys, its key lists just read."""
    now = datetime.now(UTC)
    profile = Profile(api.url, "tok", store="vault-a", keys_checked_at=format_utc(now))
    rotator, receipts = api.rotator.verify_key, api.receipt_key.verify_key
    profile.rotator_keys.pinned["sig-1"] = PinnedKey(
        encode_verify_key(rotator), verify_key_fingerprint(rotator), format_utc(now + LATER)
    )
    profile.receipt_keys.pinned["rk-1"] = PinnedKey(
        encode_verify_key(receipts), verify_key_fingerprint(receipts)
    )
    return profile.save(path)


def put(api: StandInApi, tmp_path: Path, *python_options: str) -> subprocess.CompletedProcess[str]:
    """`m8ctl secret put team/db` as a script runs it, logged in to the stand-in."""
    env = {**os.environ, "M8CTL_CONFIG": str(logged_in(api, tmp_path / "m8ctl.json"))}
    done = subprocess.run(
        [sys.executable, *python_options, "-c", AS_INSTALLED, "secret", "put", "team/db"],
        input="hunter2",
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    header, row = done.stdout.splitlines()  # piped: TSV
    outcome = dict(zip(header.split("\t"), row.split("\t"), strict=True))
    assert (outcome["status"], outcome["receipt_verified"]) == ("stored", "true")
    return done


def test_secret_put_loads_no_store_types_tables_spinner_or_server_library(
    api: StandInApi, tmp_path: Path
) -> None:
    done = put(api, tmp_path, "-X", "importtime")
    loaded = set(re.findall(r"^import time:.*\|\s*(\S+)$", done.stderr, re.MULTILINE))
    assert {"m8.client.http", "nacl.signing", "m8.client.outcome"} <= loaded  # it saw the put
    assert sorted(loaded.intersection(NOT_ON_PUT)) == []


def test_secret_put_asks_three_things_over_one_connection_while_the_pins_are_fresh(
    api: StandInApi, tmp_path: Path
) -> None:
    put(api, tmp_path)
    asked = [request for request, _ in api.requests]
    assert asked == ["POST /v1/upload-keys", "POST /v1/secrets", "GET /v1/uploads"]
    assert len({port for _, port in api.requests}) == 1
