"""Fixtures for real servers: every test that asks gets names of its own.

The servers start once per session (see m8.devservices) and stop when it ends; a test
gets its own RabbitMQ virtual host, MongoDB database, KV path prefix and AWS name
prefix, so tests run in any order and twice in a row. A missing server fails the run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from m8.config import Settings
from m8.devservices import ServiceError, Services, local_services
from m8.devservices.vhosts import VirtualHost
from m8.devservices.vhosts import virtual_host as make_virtual_host

# moto accepts any credentials; boto3 insists that some exist.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def unique(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """RabbitMQ, MongoDB, OpenBao and the AWS endpoint, started once for the session."""
    running = local_services(Settings(), tmp_path_factory.mktemp("m8"))
    yield running
    running.stop()


Broker = VirtualHost


@contextmanager
def virtual_host(services: Services) -> Iterator[Broker]:
    """A fresh virtual host on the real RabbitMQ, deleted afterwards; fails the test if the
    management API is missing."""
    try:
        with make_virtual_host(services["rabbitmq"], prefix="m8-test-") as vhost:
            yield vhost
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def broker(services: Services) -> Iterator[Broker]:
    """A virtual host of this test's own."""
    with virtual_host(services) as vhost:
        yield vhost


@pytest.fixture
async def mongo(services: Services) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    """A client of the real MongoDB-wire server, closed after the test."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        services["mongodb"].url, tz_aware=True
    )
    yield client
    await client.close()


@pytest.fixture
async def mongo_db_name(mongo: AsyncMongoClient[dict[str, Any]]) -> AsyncIterator[str]:
    """A database of this test's own, dropped after it."""
    name = unique("m8_test_")
    yield name
    await mongo.drop_database(name)


@dataclass(frozen=True)
class Vault:
    """The OpenBao server and a KV path prefix of one test's own."""

    addr: str
    token: str
    mount: str
    prefix: str


@pytest.fixture
def vault(services: Services) -> Vault:
    """OpenBao (or the Vault at VAULT_ADDR) with KV v2 at secret/."""
    info = services["openbao"]
    return Vault(info.url, info.extra["token"], "secret", unique("m8-test-") + "/")


@dataclass(frozen=True)
class Aws:
    """The Secrets Manager endpoint and a secret-name prefix of one test's own."""

    endpoint_url: str
    region: str
    prefix: str


@pytest.fixture
def aws(services: Services) -> Aws:
    """moto's server (or the endpoint at AWS_ENDPOINT_URL)."""
    return Aws(services["aws"].url, "us-east-1", unique("m8-test-") + "/")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A directory for key files and other state of one test."""
    return tmp_path
