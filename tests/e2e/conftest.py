"""The whole system as processes (api, keyrotator, two reactors) on the real servers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from m8.devservices import Services
from m8.devservices.system import System, m8ctl_login
from tests.servers import unique, virtual_host


@dataclass(frozen=True)
class RunningSystem:
    """A started system and an m8ctl profile logged in to it as the dev admin."""

    system: System
    services: Services
    m8ctl_config: Path
    database: str

    def m8ctl_env(self) -> dict[str, str]:
        return {**os.environ, "M8CTL_CONFIG": str(self.m8ctl_config)}


@pytest.fixture(scope="module")
def system(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    """One system per test module, in a virtual host and database of its own."""
    workdir = tmp_path_factory.mktemp("system")
    database = unique("m8_e2e_")
    with virtual_host(services) as vhost:
        running = System(workdir)
        overrides = {"M8_MONGODB_DATABASE": database, "M8_AMQP_URL": vhost.url}
        running.start(services, overrides=overrides)
        try:
            config = workdir / "m8ctl.json"
            m8ctl_login(running, config)
            yield RunningSystem(running, services, config, database)
        finally:
            running.stop()
