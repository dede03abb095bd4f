"""Chaos at scale: uploads while a fault schedule runs, then the books against upstream.

Starts the whole system as processes (the API, the key rotator, two reactor processes
per store type) on servers of the run's own: a RabbitMQ node (never the machine's), a
SecantusDB on persistent storage, an OpenBao and a moto (bench/chaos_system.py). Uploads
N values through the public API as `m8ctl secret put` does (client-side encryption),
every third to one of a few hot paths so that uploads to one path race, while a schedule
of faults runs in rounds: SIGKILL and restart of the API, the key rotator and each
reactor process; the broker node restarted and its connections force-closed; OpenBao
and moto paused (SIGSTOP) for 20 s each; the MongoDB server restarted; the link between
the reactors and the broker cut for 10 s (a proxy of the run's own). Then it waits until
every upload settles and checks the books (bench/chaos_books.py).

    .venv/bin/python -m bench.chaos --uploads 300

Exit status 1 if anything was lost, duplicated upstream, stuck or out of order; 2 if a
fault could not be applied or the system could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pymongo import AsyncMongoClient

from bench.chaos_books import Books, Upstreams, audit, wait_settled
from bench.chaos_node import RabbitNode, rabbitmq_node
from bench.chaos_proxy import CuttableProxy
from bench.chaos_system import ChaosSystem
from bench.chaos_uploads import BURST, Sent, new_value, target, upload
from m8.client.profile import Profile
from m8.client.sdk import M8Client
from m8.devservices import ServiceError
from m8.eventstore.mongo import Document

PAUSE_SECONDS = 20.0  # OpenBao and moto unreachable
CUT_SECONDS = 10.0  # the reactors' link to the broker
GAP_SECONDS = 4.0  # between the steps of a round: uploads flow between faults
# One caller (the dev admin) makes every upload: the API's per-caller limits would
# refuse the run's own retries.
LIFTED = {
    "M8_API_UPLOAD_KEYS_PER_MINUTE": "1000000",
    "M8_API_UPLOADS_PER_MINUTE": "1000000",
    "M8_API_LONG_POLLS_PER_CALLER": "64",
}


@dataclass(frozen=True)
class Fault:
    """One fault of a step: its kind, what it hits, and when in the step it begins."""

    kind: str
    target: str = ""
    offset: float = 0.0


# One round; the faults of a step run together, the steps one after the other.
ROUND: tuple[tuple[Fault, ...], ...] = (
    (Fault("kill", "reactor-vault-1"), Fault("broker_close_connections", offset=2.0)),
    (Fault("kill", "api"),),
    (
        Fault("pause", "openbao"),
        Fault("kill", "reactor-aws-1", offset=3.0),
        Fault("kill", "keyrotator", offset=8.0),
    ),
    (Fault("broker_restart"),),
    (
        Fault("pause", "aws"),
        Fault("kill", "reactor-vault-2", offset=3.0),
        Fault("mongodb_restart", offset=6.0),
    ),
    (Fault("network_cut"),),
    (Fault("kill", "reactor-aws-2"),),
)


@dataclass
class Applied:
    """A fault as it happened: wall-clock start and end (recovered), and any error."""

    fault: Fault
    started: float
    ended: float
    error: str | None = None

    @property
    def name(self) -> str:
        return f"{self.fault.kind}_{self.fault.target}" if self.fault.target else self.fault.kind


@dataclass
class Chaos:
    """What the schedule hurts."""

    system: ChaosSystem
    node: RabbitNode
    proxy: CuttableProxy
    applied: list[Applied] = field(default_factory=list)

    def action(self, fault: Fault) -> Callable[[], Awaitable[None]]:
        system, target = self.system, fault.target
        actions: dict[str, Callable[[], Awaitable[None]]] = {
            "kill": lambda: asyncio.to_thread(system.kill_and_restart, target),
            "broker_close_connections": lambda: asyncio.to_thread(
                self.node.close_all_connections, "m8 chaos run"
            ),
            "broker_restart": lambda: asyncio.to_thread(self.node.restart),
            "pause": lambda: self._pause(target),
            "mongodb_restart": lambda: asyncio.to_thread(system.restart_mongodb),
            "network_cut": lambda: self.proxy.cut(CUT_SECONDS),
        }
        return actions[fault.kind]

    async def _pause(self, server: str) -> None:
        await asyncio.to_thread(self.system.pause, server)
        try:
            await asyncio.sleep(PAUSE_SECONDS)  # the scheduled outage
        finally:
            await asyncio.to_thread(self.system.resume, server)

    async def apply(self, fault: Fault) -> None:
        await asyncio.sleep(fault.offset)
        started = time.time()
        error = None
        try:
            await self.action(fault)()
        except Exception as exc:  # a fault that could not be applied is reported, not fatal
            error = f"{type(exc).__name__}: {exc}"[:300]
        self.applied.append(Applied(fault, started, time.time(), error))

    async def rounds(self, uploads_done: asyncio.Event, minimum: int, repeat: bool) -> None:
        """Runs rounds of the schedule: at least `minimum`, more while uploads go on if
        `repeat`. Each step begins after a gap in which uploads flow undisturbed."""
        count = 0
        while count < minimum or (repeat and not uploads_done.is_set()):
            for step in ROUND:
                await asyncio.sleep(GAP_SECONDS)
                await asyncio.gather(*(self.apply(fault) for fault in step))
            count += 1


async def run_uploads(
    profile: Profile, count: int, rate: float, concurrency: int, prefix: str
) -> list[Sent]:
    """`count` uploads, begun at most `rate` a second on `concurrency` threads."""
    local = threading.local()
    clients: list[M8Client] = []
    lock = threading.Lock()

    def one(sent: Sent) -> Sent:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = M8Client(profile.server, profile.token)
            with lock:
                clients.append(client)
        return upload(client, profile, sent)

    loop = asyncio.get_running_loop()
    begun = time.monotonic()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="upload") as pool:
        futures = []
        for n in range(count):
            if (wait := begun + n // BURST * BURST / rate - time.monotonic()) > 0:
                await asyncio.sleep(wait)  # pacing: the uploads span the schedule
            sent = Sent(n, target(n, count, prefix), new_value())
            futures.append(loop.run_in_executor(pool, one, sent))
        results = list(await asyncio.gather(*futures))
    for client in clients:
        client.close()
    return results


@dataclass
class Report:
    uploads: int
    sent: list[Sent]
    books: Books
    applied: list[Applied]
    drain_seconds: float
    runtime_seconds: float
    upload_seconds: float
    workdir: Path

    @property
    def bad(self) -> bool:
        b = self.books
        return bool(b.lost or b.duplicated or b.stuck or b.out_of_order)

    @property
    def fault_errors(self) -> list[Applied]:
        return [a for a in self.applied if a.error]


async def chaos_run(args: argparse.Namespace, workdir: Path) -> Report:
    """Starts everything, runs uploads and faults, waits, audits; stops everything."""
    began = time.monotonic()
    with rabbitmq_node() as node:
        proxy = CuttableProxy("127.0.0.1", node.port)
        await proxy.start()
        system = ChaosSystem(workdir, node, proxy.port, overrides=dict(LIFTED))
        mongo: AsyncMongoClient[Document] | None = None
        try:
            await asyncio.to_thread(system.start)
            assert system.m8ctl_config is not None
            profile = Profile.load(system.m8ctl_config)
            chaos = Chaos(system, node, proxy)
            done = asyncio.Event()
            rate = args.rate or args.uploads / args.spread
            uploads_began = time.monotonic()
            uploads = asyncio.create_task(
                run_uploads(profile, args.uploads, rate, args.concurrency, args.prefix)
            )
            uploads.add_done_callback(lambda _task: done.set())
            schedule = asyncio.create_task(chaos.rounds(done, args.rounds, args.repeat))
            sent = await uploads
            upload_seconds = time.monotonic() - uploads_began
            await schedule
            last_fault = max((a.ended for a in chaos.applied), default=time.time())
            mongo = AsyncMongoClient(system.mongodb_url, tz_aware=True)
            ids = [s.upload_id for s in sent if s.outcome == "accepted" and s.upload_id]
            settled = await wait_settled(mongo["m8"], ids, args.drain_timeout)
            openbao, aws = system.upstream("openbao"), system.upstream("aws")
            upstream = Upstreams(openbao.url, openbao.extra.get("token", ""), aws.url)
            try:
                books = await asyncio.to_thread(audit, sent, settled, upstream)
            finally:
                upstream.close()
            drain = max(0.0, (books.last_outcome_at or last_fault) - last_fault)
            return Report(
                args.uploads, sent, books, chaos.applied, drain,
                time.monotonic() - began, upload_seconds, workdir,
            )  # fmt: skip
        finally:
            if mongo is not None:
                await mongo.close()
            await asyncio.to_thread(system.stop)
            await proxy.close()


def fault_counts(applied: list[Applied]) -> Counter[str]:
    return Counter(a.name for a in applied if a.error is None)


def format_report(report: Report) -> str:
    b = report.books
    counts = fault_counts(report.applied)
    statuses = ", ".join(f"{s}={n}" for s, n in sorted(b.statuses.items())) or "none"
    client = ", ".join(f"{s}={n}" for s, n in sorted(b.client.items()))
    lines = [
        "m8 chaos run",
        f"  uploads          {report.uploads} to {b.paths} paths ({client})",
        f"  uploading took   {report.upload_seconds:.1f} s; runtime {report.runtime_seconds:.1f} s",
        f"  faults           {sum(counts.values())}: "
        + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())),
        f"  outcomes         {statuses}",
        f"  lost             {len(b.lost)}",
        f"  duplicated       {b.duplicated_versions} upstream versions beyond the stored uploads",
        f"  stuck            {len(b.stuck)}",
        f"  out of order     {len(b.out_of_order)}",
        f"  failed           {len(b.failed)} (an outage outlasted the retries: dead-lettered)",
        f"  drain            {report.drain_seconds:.1f} s after the last fault",
    ]
    if b.pruned:
        lines.append(f"  not checked      {b.pruned} stored versions upstream no longer keeps")
    for applied in sorted(report.applied, key=lambda a: a.started):
        began, ended = (
            time.strftime("%H:%M:%S", time.gmtime(t)) for t in (applied.started, applied.ended)
        )
        lines.append(f"  fault {began}-{ended} UTC {applied.name}: {applied.error or 'done'}")
    for name, entries in (
        ("lost", b.lost), ("duplicated", b.duplicated), ("stuck", b.stuck),
        ("out of order", b.out_of_order), ("failed", b.failed),
    ):  # fmt: skip
        for entry in entries[:20]:
            lines.append(f"  {name}: {entry}")
    if report.bad or report.fault_errors:
        lines.append(f"  logs kept in {report.workdir / 'logs'}")
    figures = {
        "uploads": report.uploads,
        "accepted": b.client.get("accepted", 0),
        "faults": sum(counts.values()),
        **{f"faults_{k}": v for k, v in sorted(counts.items())},
        **{f"status_{k}": v for k, v in sorted(b.statuses.items())},
        "lost": len(b.lost),
        "duplicated": b.duplicated_versions,
        "stuck": len(b.stuck),
        "out_of_order": len(b.out_of_order),
        "failed": len(b.failed),
        "pruned": b.pruned,
        "fault_errors": len(report.fault_errors),
    }
    last = " ".join(f"{k}={v}" for k, v in figures.items())
    last += f" drain_s={report.drain_seconds:.1f} runtime_s={report.runtime_seconds:.1f}"
    lines.append(last)
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    p.add_argument("--uploads", type=int, default=300, help="how many uploads (default 300)")
    p.add_argument(
        "--spread", type=float, default=110.0,
        help="seconds over which the uploads begin, about one round of faults (default 110)",
    )  # fmt: skip
    p.add_argument(
        "--rate", type=float, default=0.0, help="uploads begun per second (overrides --spread)"
    )
    p.add_argument("--concurrency", type=int, default=8, help="uploading threads (default 8)")
    p.add_argument("--rounds", type=int, default=1, help="rounds of faults at least (default 1)")
    p.add_argument("--repeat", action="store_true", help="more rounds for as long as uploads go on")
    p.add_argument(
        "--drain-timeout", type=float, default=300.0,
        help="seconds to wait for every upload to settle after the last one (default 300)",
    )  # fmt: skip
    p.add_argument("--prefix", default="chaos", help="path prefix of the uploads")
    p.add_argument("--workdir", type=Path, help="keep logs and data here (default: a temp dir)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs the chaos run and prints its report; see the module's docstring for the exit."""
    args = parser().parse_args(argv)
    if args.uploads < 1:
        parser().error("--uploads must be at least 1")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="m8-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        report = asyncio.run(chaos_run(args, workdir))
    except ServiceError as exc:
        print(f"error: {exc}\n  logs in {workdir / 'logs'}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.workdir is None and not report.bad and not report.fault_errors:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
    if report.bad:
        return 1
    return 2 if report.fault_errors else 0


if __name__ == "__main__":
    sys.exit(main())
