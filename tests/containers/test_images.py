"""A secret put through m8's own images: API, key rotator and a reactor per store as
containers (podman, host network) on the local servers, m8ctl on the host."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from m8.devservices import Services
from m8.devservices.system import AWS_STORE, VAULT_STORE
from tests.e2e.conftest import RunningSystem
from tests.e2e.support import aws_value, put_json, vault_value

# Builds take minutes when the base image or the dependencies must be made first.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(1200)]


@pytest.mark.parametrize(
    ("store", "read"), [(VAULT_STORE, vault_value), (AWS_STORE, aws_value)], ids=["vault", "aws"]
)
def test_secret_put_through_the_images_arrives_upstream(
    containers: RunningSystem, store: str, read: Callable[[Services, str], bytes]
) -> None:
    path = f"containers/{secrets.token_hex(4)}/password"
    value = secrets.token_urlsafe(24).encode()

    outcome = put_json(containers, path, store, value)

    assert outcome["status"] == "stored", outcome
    assert read(containers.services, path) == value
