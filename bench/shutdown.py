"""How long each m8 service takes to stop on SIGTERM, with uploads in flight.

Each run starts the whole system as processes on the machine's real local servers
(`bench.system.running_system`: the API, the key rotator, a vault reactor and an aws
reactor, each on its own broker user in a throwaway virtual host), keeps uploads going
through the public API as `m8ctl secret put` makes them (`bench.e2e.uploader`), then sends
SIGTERM to one service after another (the others still running), or to all at once with
`--together`, and times each until its process is gone. It prints the median and the
slowest stop of each service over the runs (the target is 10 s, what orchestrators wait
before they kill). Figures are printed, never asserted.

    .venv/bin/python -m bench.shutdown --runs 3 --in-flight 8
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bench.e2e import LIFTED, M8_PROCESSES, uploader
from bench.system import running_system
from m8.client.profile import Profile
from m8.devservices import ServiceError
from m8.devservices.manager import pid_alive, wait_until

# Reactors first, the API last: each stops while what feeds it still runs, and the API,
# stopped last, still holds long-polls for outcomes no reactor will record any more.
ORDER = ("reactor-vault", "reactor-aws", "keyrotator", "api")
assert set(ORDER) == set(M8_PROCESSES)
TARGET_SECONDS = 10.0
GIVE_UP_SECONDS = 30.0  # then SIGKILL, and the stop counts as this long
POLL_SECONDS = 0.005
BUSY_TIMEOUT = 120.0


@dataclass
class Uploads:
    """Uploads kept going on threads until `stop` is set; counts what they met."""

    stop: threading.Event
    begun: int = 0
    settled: int = 0
    failed: int = 0
    settled_before: int = 0  # when the first SIGTERM was sent
    in_flight_then: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()

    def count(self, what: str) -> None:
        with self.lock:
            setattr(self, what, getattr(self, what) + 1)

    def note_sigterm(self) -> None:
        """Notes how many uploads had settled, and how many were under way."""
        with self.lock:
            self.settled_before = self.settled
            self.in_flight_then = self.begun - self.settled - self.failed


@contextlib.contextmanager
def uploads_in_flight(profile: Profile, threads: int, prefix: str) -> Iterator[Uploads]:
    """`threads` uploaders, each beginning its next upload as soon as one ends; errors (a
    service stopping) are counted, not raised."""
    uploads = Uploads(threading.Event())
    numbers = iter(range(sys.maxsize))  # range iterators are thread-safe

    def thread() -> None:
        with contextlib.ExitStack() as stack:
            work = uploader(profile, prefix)(stack)
            while not uploads.stop.is_set():
                uploads.count("begun")
                try:
                    work(next(numbers))
                    uploads.count("settled")
                except Exception:  # the service it needed is stopping, or gone
                    uploads.count("failed")
                    uploads.stop.wait(0.1)

    with ThreadPoolExecutor(max(threads, 1)) as pool:
        futures = [pool.submit(thread) for _ in range(threads)]
        try:
            yield uploads
        finally:
            uploads.stop.set()
            for future in futures:
                future.result()


def sigterm_and_time(pids: Mapping[str, int]) -> dict[str, float]:
    """Sends SIGTERM to each process group at once; seconds until each process is gone
    (GIVE_UP_SECONDS, after a SIGKILL, for one that lingers)."""
    for name, pid in pids.items():
        if not pid_alive(pid):  # a stop time of a process already gone would mean nothing
            raise ServiceError(f"{name} exited before it was sent SIGTERM")
    started = time.perf_counter()
    for pid in pids.values():
        os.killpg(pid, signal.SIGTERM)
    stopped: dict[str, float] = {}
    while len(stopped) < len(pids):
        now = time.perf_counter()
        for name, pid in pids.items():
            if name in stopped:
                continue
            if not pid_alive(pid):
                stopped[name] = now - started
            elif now - started > GIVE_UP_SECONDS:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                _wait_gone(pid)
                stopped[name] = GIVE_UP_SECONDS
        time.sleep(POLL_SECONDS)
    return stopped


def _wait_gone(pid: int) -> None:
    wait_until(lambda: not pid_alive(pid), 10)


def one_run(number: int, in_flight: int, together: bool) -> tuple[dict[str, float], Uploads]:
    """Starts the system, keeps uploads going, stops every service; their stop times."""
    with running_system("m8-bench-shutdown-", overrides=LIFTED) as running:
        pids = dict(running.system.pids)
        profile = Profile.load(running.m8ctl_config)
        with uploads_in_flight(profile, in_flight, f"bench/shutdown/{number}") as uploads:
            # Stopped while busy: some uploads have gone all the way, others are under way.
            if in_flight and not wait_until(
                lambda: uploads.settled >= in_flight and uploads.begun > uploads.settled,
                BUSY_TIMEOUT,
            ):
                raise ServiceError("no upload settled: the system does not work")
            uploads.note_sigterm()
            if together:
                times = sigterm_and_time(pids)
            else:
                times = {}
                for name in ORDER:
                    times |= sigterm_and_time({name: pids[name]})
            # Gone already: the system's own stop must not signal a reused pid.
            running.system.pids.clear()
    return times, uploads


def format_table(runs: list[dict[str, float]]) -> str:
    """Median and slowest stop of each service, and how many runs passed the target."""
    lines = [f"{'service':<15}{'median s':>10}{'max s':>10}  within {TARGET_SECONDS:g} s"]
    for name in ORDER:
        times = [run[name] for run in runs]
        within = sum(t <= TARGET_SECONDS for t in times)
        lines.append(
            f"{name:<15}{statistics.median(times):>10.2f}{max(times):>10.2f}  {within}/{len(times)}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.shutdown", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="systems started and stopped")
    parser.add_argument(
        "--in-flight", type=int, default=8, help="uploads kept going while stopping (0: none)"
    )
    parser.add_argument(
        "--together", action="store_true", help="SIGTERM every service at once, not in turn"
    )
    args = parser.parse_args(argv)
    runs: list[dict[str, float]] = []
    try:
        for number in range(args.runs):
            times, uploads = one_run(number, args.in_flight, args.together)
            runs.append(times)
            figures = "  ".join(f"{name}={times[name]:.2f}s" for name in ORDER)
            print(
                f"run {number + 1}: {figures}  (uploads settled before: "
                f"{uploads.settled_before}, under way at the first SIGTERM: "
                f"{uploads.in_flight_then})",
                flush=True,
            )
    except ServiceError as exc:
        print(f"bench.shutdown: {exc}", file=sys.stderr)
        return 2
    how = "all at once" if args.together else f"in turn ({', '.join(ORDER)})"
    print(f"\nSIGTERM {how}, {args.in_flight} uploads in flight, {args.runs} runs:")
    print(format_table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
