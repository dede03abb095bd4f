"""Each distribution installs on its own, with what it needs and nothing of the others.

The client must run with no server library in its environment, and a service's install
(what its image holds: see the Dockerfile) offers that service's `m8` commands only.
Each test installs with uv from uv.lock into a fresh virtual environment, as the
Dockerfile does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).with_name("uv")
SERVER_LIBRARIES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "pymongo",
    "bson",
    "aio_pika",
    "hvac",
    "boto3",
)
SERVICES = ("m8.api", "m8.keyrotator", "m8.reactors")
TOOLING = ("m8.devservices", "openbao", "moto", "secantus")


def install(package: str, where: Path) -> Path:
    """Installs `package` (no dev tools, not editable) into a new environment; its bin/."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["UV_PROJECT_ENVIRONMENT"] = str(where / "venv")
    subprocess.run(
        [UV, "sync", "--frozen", "--no-dev", "--no-editable", "--quiet", "--package", package],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=600,
    )
    return where / "venv" / "bin"


def run(command: list[str | Path]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def importable(bin_dir: Path, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` the environment's Python can import."""
    code = (
        "import importlib.util, sys\n"
        "def found(name):\n"
        "    try:\n"
        "        return importlib.util.find_spec(name) is not None\n"
        "    except ModuleNotFoundError:\n"
        "        return False\n"
        "print(' '.join(m for m in sys.argv[1:] if found(m)))"
    )
    return run([bin_dir / "python", "-c", code, *modules]).split()


def commands(bin_dir: Path) -> list[str]:
    code = (
        "from importlib.metadata import entry_points\n"
        "print(' '.join(sorted(e.name for e in entry_points(group='m8.commands'))))"
    )
    return run([bin_dir / "python", "-c", code]).split()


def test_the_client_alone_runs_m8ctl_without_any_server_library(tmp_path: Path) -> None:
    bin_dir = install("m8-client", tmp_path)

    assert "secret" in run([bin_dir / "m8ctl", "--help"])
    assert "Usage: m8ctl secret put" in run([bin_dir / "m8ctl", "secret", "put", "--help"])
    added = run([bin_dir / "m8ctl", "stores", "add", "vault", "--help"])
    assert "--address" in added
    assert "completion" not in added
    assert importable(bin_dir, ("m8.crypto", "m8.client", "nacl", "httpx")) == [
        "m8.crypto",
        "m8.client",
        "nacl",
    ]  # m8ctl speaks HTTP through the standard library
    assert importable(bin_dir, SERVER_LIBRARIES + SERVICES + TOOLING) == []
    assert importable(bin_dir, ("m8.eventstore", "m8.messaging", "m8.runtime")) == []


@pytest.mark.parametrize(
    ("package", "own_commands", "own_module", "absent"),
    [
        ("m8-api", ["admin", "api"], "m8.api", ("hvac", "boto3", "m8.keyrotator", "m8.reactors")),
        (
            "m8-keyrotator",
            ["keyrotator", "keys"],
            "m8.keyrotator",
            ("fastapi", "uvicorn", "hvac", "boto3", "m8.api", "m8.reactors"),
        ),
        (
            "m8-reactors",
            ["reactor"],
            "m8.reactors",
            ("fastapi", "uvicorn", "m8.api", "m8.keyrotator"),
        ),
    ],
    ids=["api", "keyrotator", "reactors"],
)
def test_a_service_installs_with_its_own_commands_and_dependencies_only(
    tmp_path: Path,
    package: str,
    own_commands: list[str],
    own_module: str,
    absent: tuple[str, ...],
) -> None:
    bin_dir = install(package, tmp_path)

    assert commands(bin_dir) == own_commands
    for command in own_commands:
        assert "Usage" in run([bin_dir / "m8", command, "--help"])
    assert importable(bin_dir, (own_module,)) == [own_module]
    assert importable(bin_dir, absent + TOOLING + ("m8.client",)) == []
