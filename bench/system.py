"""The whole m8 system on this machine's real local servers, for a benchmark's run."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from m8.config import Settings
from m8.devservices import Services, local_services
from m8.devservices.system import System, m8ctl_login
from m8.devservices.vhosts import VirtualHost, virtual_host


@dataclass(frozen=True)
class RunningSystem:
    """The servers, the m8 processes, their virtual host, and a logged-in m8ctl profile."""

    services: Services
    system: System
    vhost: VirtualHost
    m8ctl_config: Path


@contextlib.contextmanager
def running_system(
    prefix: str, overrides: Mapping[str, str] | None = None, settings: Settings | None = None
) -> Iterator[RunningSystem]:
    """Starts (or finds, as `settings` say: by default the environment's) the servers and
    m8 on a throwaway virtual host, `overrides` in the services' environment; stops and
    removes everything at the end. ServiceError if a server cannot start."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        workdir = Path(tmp)
        services = local_services(settings or Settings(), workdir)
        try:
            with virtual_host(services["rabbitmq"], prefix="m8-bench-") as vhost:
                system = System(workdir)
                system.start(services, overrides={**(overrides or {}), "M8_AMQP_URL": vhost.url})
                try:
                    config = workdir / "m8ctl.json"
                    m8ctl_login(system, config)
                    yield RunningSystem(services, system, vhost, config)
                finally:
                    system.stop()
        finally:
            services.stop()
