"""The whole system as containers of m8's own images, on the local servers.

What m8.devservices.system.System does with processes, with the service images instead:
the same keys, tokens, credentials and RabbitMQ users, each service given only its own
files (read-only, owned by the images' user) and its variables by name, never by value
on podman's command line. The containers share the host's network, so they reach the
local servers on 127.0.0.1 and the API listens there.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from m8.devservices import ServiceError, Services
from m8.devservices.images import image, limits, podman
from m8.devservices.manager import free_port, http_ok, wait_until
from m8.devservices.system import DevKeys, System, dev_types
from m8.devservices.vhosts import management, provision

M8_UID = 10001  # the images' user (Dockerfile: M8_UID), who must own the key files
SECRETS_DIR = "/run/secrets"


@dataclass
class ContainerSystem:
    """Running containers of the four services, and the System that describes them."""

    system: System
    prefix: str
    containers: list[str] = field(default_factory=list)

    def running(self) -> bool:
        """Whether every container still runs."""
        return all(_inspect(name, "{{.State.Running}}") == "true" for name in self.containers)

    def logs(self, lines: int = 20) -> str:
        """The end of each container's output, for a failure message."""
        return container_logs(self.containers, lines)

    def stop(self) -> None:
        """Stops the containers (SIGTERM, SIGKILL after the grace period) and removes them."""
        for name in self.containers:
            subprocess.run([*podman(), "stop", "-t", "20", name], capture_output=True, check=False)
            subprocess.run([*podman(), "rm", "-f", name], capture_output=True, check=False)
        self.containers.clear()


def container_logs(names: list[str], lines: int = 20) -> str:
    """The status and the end of the output of each named container, for a failure message."""
    parts = []
    for name in names:
        done = subprocess.run(
            [*podman(), "logs", "--tail", str(lines), name],
            capture_output=True,
            text=True,
            check=False,
        )
        status = _inspect(name, "{{.State.Status}} (exit {{.State.ExitCode}})")
        output = "\n  ".join((done.stdout + done.stderr).strip().splitlines())
        parts.append(f"\n{name}: {status}\n  {output}")
    return "".join(parts)


def _inspect(name: str, template: str) -> str:
    done = subprocess.run(
        [*podman(), "inspect", "--format", template, name],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def _with_mounts(env: dict[str, str], workdir: Path, own: Path) -> tuple[dict[str, str], list[str]]:
    """`env` with each file of `workdir` it names replaced by a read-only mount of a copy
    under `own` (0600, owned by the images' user); the podman options of those mounts."""
    files = sorted(
        {p for p in workdir.rglob("*") if p.is_file() for v in env.values() if str(p) in v}
    )
    own.mkdir(parents=True, exist_ok=True)
    options: list[str] = []
    mapped = dict(env)
    for path in files:
        copy = own / path.name
        shutil.copyfile(path, copy)
        os.chmod(copy, 0o600)
        os.chown(copy, M8_UID, M8_UID)
        inside = f"{SECRETS_DIR}/{path.name}"
        options += ["-v", f"{copy}:{inside}:ro"]
        mapped = {k: v.replace(str(path), inside) for k, v in mapped.items()}
    return mapped, options


def service_environments(
    services: Services, workdir: Path, overrides: dict[str, str]
) -> tuple[System, dict[str, dict[str, str]]]:
    """The System of a run in `workdir` (its keys, token file and reactors' credentials
    written there) and each service's variables: its own files, a RabbitMQ user of its own
    in the virtual host of `overrides["M8_AMQP_URL"]`, and `overrides`."""
    system = System(workdir)
    keys = DevKeys(workdir / "keys")
    keys.ensure()
    own = system.environments(services, keys)
    try:
        with management(services["rabbitmq"]) as api:
            amqp_urls = provision(api, overrides["M8_AMQP_URL"], secrets.token_hex(3))
    except httpx.HTTPError as exc:
        raise ServiceError(f"could not make the services' RabbitMQ users: {exc}") from None
    return system, {
        name: {**env, **overrides, "M8_AMQP_URL": amqp_urls[name]} for name, env in own.items()
    }


def start(services: Services, workdir: Path, overrides: dict[str, str]) -> ContainerSystem:
    """Starts api, keyrotator and a reactor per store type as containers, waits until the
    API is ready and registers the dev stores; a ServiceError with their logs otherwise."""
    system, environments = service_environments(services, workdir, overrides)
    port = free_port()
    system.api_url = f"http://127.0.0.1:{port}"
    commands = {
        "api": (image("api"), ["api", "--port", str(port)]),
        "keyrotator": (image("keyrotator"), ["keyrotator"]),
        **{f"reactor-{t.name}": (image("reactors"), ["reactor", t.name]) for t in dev_types()},
    }
    running = ContainerSystem(system, f"m8-test-{secrets.token_hex(4)}")
    try:
        for name, (tag, argv) in commands.items():
            env = {
                **environments[name],
                # Host network: only this machine reaches the API (the image's default
                # is every interface).
                "M8_API_HOST": "127.0.0.1",
            }
            env, mounts = _with_mounts(env, workdir, workdir / "mounts" / name)
            container = f"{running.prefix}-{name}"
            # As deploy/compose.yaml runs them: read-only, no capabilities, /tmp in memory.
            # Variables by name only: their values (URLs with passwords) are in podman's
            # environment, never its arguments.
            argv_podman = [
                *podman(), "run", "--detach", "--name", container, "--network=host",
                *limits(), "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges", *mounts,
                *(option for variable in env for option in ("--env", variable)),
                tag, *argv,
            ]  # fmt: skip
            done = subprocess.run(
                argv_podman,
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise ServiceError(f"podman could not start {name}: {done.stderr.strip()}")
            running.containers.append(container)

        def ready() -> bool:
            return not running.running() or http_ok(f"{system.api_url}/readyz")

        if not (wait_until(ready, 120) and running.running()):
            raise ServiceError(f"m8's containers did not come up:{running.logs()}")
        system.register_stores(services)
    except (ServiceError, httpx.HTTPError) as exc:
        logs = running.logs()
        running.stop()
        raise ServiceError(f"{exc}{logs if isinstance(exc, httpx.HTTPError) else ''}") from None
    return running
