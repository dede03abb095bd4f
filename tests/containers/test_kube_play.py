"""m8's Kubernetes Deployments (deploy/k8s) played by `podman kube play` on the local
servers: their commands, variables, key files, mounts and probes as the manifests have
them, a secret put with m8ctl arriving in both stores."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from m8.devservices import Services
from m8.devservices.manager import http_ok, wait_until
from m8.devservices.system import AWS_STORE, VAULT_STORE
from tests.e2e.conftest import RunningSystem
from tests.e2e.support import aws_value, put_json, vault_value
from tests.support.kube import PlayedSystem

# Builds take minutes when the base image or the dependencies must be made first.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(1200)]


@pytest.mark.parametrize(
    ("store", "read"), [(VAULT_STORE, vault_value), (AWS_STORE, aws_value)], ids=["vault", "aws"]
)
def test_secret_put_through_the_played_deployments_arrives_upstream(
    played: tuple[RunningSystem, PlayedSystem],
    store: str,
    read: Callable[[Services, str], bytes],
) -> None:
    running, _pods = played
    path = f"kube/{secrets.token_hex(4)}/password"
    value = secrets.token_urlsafe(24).encode()

    outcome = put_json(running, path, store, value)

    assert outcome["status"] == "stored", outcome
    assert read(running.services, path) == value


def test_every_probe_and_metrics_port_of_the_deployments_answers(
    played: tuple[RunningSystem, PlayedSystem],
) -> None:
    _running, pods = played

    silent = {url: what for url, what in pods.probes.items() if not _answers(url)}

    assert not silent, f"not answering 2xx: {silent}{pods.logs()}"


def _answers(url: str) -> bool:
    """Whether `url` answers 2xx within 30 s (a readiness probe may take a moment)."""
    return wait_until(lambda: http_ok(url), 30)
