"""Driving m8ctl as a person would, and reading the upstream stores directly."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import boto3
import hvac

from m8.devservices import Services
from m8.devservices.manager import tool
from tests.e2e.conftest import RunningSystem

PREFIX = "m8/"  # the dev stores' path prefix and name prefix


def m8ctl(
    running: RunningSystem,
    *args: str,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs m8ctl with the dev admin's profile; the value, if any, on standard input."""
    result = subprocess.run(
        [tool("m8ctl"), *args],
        input=stdin if stdin is not None else b"",
        env=env or running.m8ctl_env(),
        capture_output=True,
        timeout=180,
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


def put_json(running: RunningSystem, path: str, store: str, value: bytes) -> dict[str, Any]:
    """`m8ctl secret put --json` with the value on stdin; the outcome it printed."""
    done = m8ctl(running, "secret", "put", path, "--store", store, "--json", stdin=value)
    assert done.returncode == 0, done.stderr
    outcome: dict[str, Any] = json.loads(done.stdout)
    return outcome


def vault_value(services: Services, path: str) -> bytes:
    """The current value at `path` of the dev Vault store, read straight from OpenBao."""
    info = services["openbao"]
    client = hvac.Client(url=info.url, token=info.extra["token"])
    read = client.secrets.kv.v2.read_secret_version(
        PREFIX + path, mount_point="secret", raise_on_deleted_version=True
    )
    return str(read["data"]["data"]["value"]).encode()


def aws_value(services: Services, path: str) -> bytes:
    """The current value of the dev AWS store's secret, read straight from moto."""
    client = boto3.client(
        "secretsmanager",
        endpoint_url=services["aws"].url,
        region_name="us-east-1",
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    )
    return client.get_secret_value(SecretId=PREFIX + path)["SecretString"].encode()
