"""`m8ctl secret put` against `bao kv put` writing the same value to the same OpenBao.

Runs the whole system locally (servers, api, keyrotator, reactors), then alternates the
two commands, each timed from start to exit (m8ctl waits for the upload to be stored),
and prints the medians and their ratio. Figures are printed, never asserted.

    .venv/bin/python -m bench.cli --runs 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid

from bench.system import running_system
from m8.devservices import ServiceError
from m8.devservices.manager import tool
from m8.devservices.system import VAULT_STORE


def timed(argv: list[str], stdin: bytes, env: dict[str, str]) -> float:
    """Seconds from start to exit of one command, which must succeed."""
    started = time.perf_counter()
    done = subprocess.run(argv, input=stdin, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {done.stderr.decode(errors='replace')[-500:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    """Starts m8, runs both commands alternately, prints the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each command (>= 10)")
    args = parser.parse_args(argv)
    value = b"bench-" + uuid.uuid4().hex.encode()  # the same bytes for both commands
    try:
        with running_system("m8-bench-cli-") as running:
            # m8ctl as installed for users: compiled once (an install compiles its byte
            # code; this checkout is editable, and may be told not to write any).
            m8ctl_env = {
                **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
                "M8CTL_CONFIG": str(running.m8ctl_config),
            }
            bao_env = {**os.environ, **running.services.environment()}
            m8ctl_times: list[float] = []
            bao_times: list[float] = []
            for run in range(args.runs):
                path = f"bench/cli/{run}"
                m8ctl = [tool("m8ctl"), "secret", "put", path, "--store", VAULT_STORE]
                bao = [tool("bao"), "kv", "put", "-mount=secret", f"bao/{path}", "value=-"]
                m8ctl_times.append(timed(m8ctl, value, m8ctl_env))
                bao_times.append(timed(bao, value, bao_env))
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    m8ctl_median, bao_median = statistics.median(m8ctl_times), statistics.median(bao_times)
    print(f"m8ctl secret put vs bao kv put, same value, same OpenBao, {args.runs} runs each")
    print(f"  m8ctl secret put (until stored)  median {m8ctl_median * 1000:8.1f} ms")
    print(f"  bao kv put                       median {bao_median * 1000:8.1f} ms")
    print(f"  ratio m8ctl / bao                       {m8ctl_median / bao_median:8.2f}")
    print("Figures are printed, never asserted.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
