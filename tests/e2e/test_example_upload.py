"""examples/upload.py: a Python program uploads a secret with the SDK, on the whole system."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.e2e.conftest import RunningSystem
from tests.e2e.support import vault_value
from tests.servers import unique

EXAMPLE = Path(__file__).parents[2] / "examples" / "upload.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("m8_example_upload", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_program_uploads_a_value_with_the_sdk_and_it_is_stored_upstream(
    system: RunningSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("M8CTL_CONFIG", str(system.m8ctl_config))
    path = f"{unique('examples/')}/password"
    value = b"from a program \xe2\x9c\x93"
    outcome = _example().upload(path, value)
    assert outcome["status"] == "stored"
    assert outcome["fingerprint"].startswith("fp1:")
    assert vault_value(system.services, path) == value


def test_the_example_run_as_a_program_exits_0_once_stored(system: RunningSystem) -> None:
    path = f"{unique('examples/')}/generated"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), path],
        env=system.m8ctl_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    status, version, fingerprint = done.stdout.split()
    assert (status, version) == ("stored", "1")
    assert fingerprint.startswith("fp1:")
    assert len(vault_value(system.services, path)) == 43  # token_urlsafe(32)
