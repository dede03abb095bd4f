"""`make run`'s `m8 dev`: the whole system comes up, serves a demo, and Ctrl-C stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from m8.devservices import Services
from m8.devservices.manager import pid_alive, tool
from tests.servers import unique, virtual_host


def _wait_for_line(proc: subprocess.Popen[str], text: str, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} never appeared; output:\n{''.join(lines)}")


def test_m8_dev_runs_the_system_the_demo_and_stops_on_ctrl_c(
    services: Services, tmp_path: Path
) -> None:
    with virtual_host(services) as vhost:
        env = {
            **os.environ,
            **services.environment(),  # reuse this session's servers instead of new ones
            "M8_AMQP_URL": vhost.url,
            "M8_MONGODB_DATABASE": unique("m8_dev_"),
            "M8_STATE_DIR": str(tmp_path / "state"),
            "COLUMNS": "200",
        }
        proc = subprocess.Popen(
            [tool("m8"), "dev"], env=env, stdout=subprocess.PIPE, text=True, cwd=tmp_path
        )
        try:
            output = _wait_for_line(proc, "Press Ctrl-C to stop", timeout=180)
            assert any("m8 is up" in line for line in output)
            # The commands it prints run as printed: in a new shell (no virtualenv on its
            # PATH, none of this test's variables) and another directory.
            printed = [line.strip() for line in output if line.startswith("  ")]
            wanted = ("export M8CTL_CONFIG=", " whoami", " dev demo")
            script = "set -e\n" + "\n".join(
                line for line in printed if any(part in line for part in wanted)
            )
            demo = subprocess.run(
                ["/bin/sh", "-c", script],
                env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                cwd="/",
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert demo.returncode == 0, script + demo.stdout + demo.stderr
            assert "subject\tdev-admin" in demo.stdout  # whoami, piped: TSV
            assert "Equal fingerprints in both stores." in demo.stdout
            state = json.loads((tmp_path / "state" / "system.json").read_text())
            pids = list(state["pids"].values())
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=120) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        assert not (tmp_path / "state" / "system.json").exists()
        for pid in pids:
            assert not pid_alive(pid), f"service process {pid} outlived m8 dev"
