"""End to end: uploads through the public API at concurrency 1, 4 and 16, and their cost.

Runs the whole system locally (servers, api, keyrotator, reactors) in a throwaway
RabbitMQ virtual host and MongoDB database, uploads with the SDK as `m8ctl secret put`
does (client-side encryption, waiting for the outcome, checking its receipt), split over
vault-dev and aws-dev, and prints rates, latencies, MongoDB operations, broker messages,
CPU and RSS per process, and direct hvac and boto3 writes to the same servers as
ceilings. Figures are printed, never asserted.

    .venv/bin/python -m bench.e2e --uploads 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import boto3
import hvac
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase

from bench.eventstore import (
    STATS_LIMIT_SECONDS,
    Counts,
    Management,
    delta,
    describe_mongodb,
    opcounters,
)
from bench.system import running_system
from m8 import stores
from m8.client.outcome import await_outcome, check_receipt
from m8.client.profile import Profile
from m8.client.sdk import M8Client
from m8.client.upload import put_secret, read_value
from m8.devservices import ServiceError, Services
from m8.devservices.system import AWS_STORE, VAULT_STORE, System
from m8.devservices.vhosts import VirtualHost
from m8.eventstore.mongo import Document

STORES = (VAULT_STORE, AWS_STORE)
LEVELS = (1, 4, 16)
M8_PROCESSES = ("api", "keyrotator", "reactor-vault", "reactor-aws")
IDLE_SECONDS = 5.0  # the window in which the idle system's background traffic is measured
OUTCOME_TIMEOUT = 120.0
REQUESTED, STORED = "SecretUploadRequested", "SecretStored"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# One caller (the dev admin) makes every upload: the API's per-caller limits would
# measure themselves, not the pipeline.
LIFTED = {
    "M8_API_UPLOAD_KEYS_PER_MINUTE": "1000000",
    "M8_API_UPLOADS_PER_MINUTE": "1000000",
    "M8_API_LONG_POLLS_PER_CALLER": str(max(LEVELS)),
}
T = TypeVar("T")
# Makes, in its thread, the work for one number (and closes its client with the stack).
Worker = Callable[[contextlib.ExitStack], Callable[[int], T]]
Figures = dict[str, float]

# --- processes: CPU and RSS from /proc ---------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), if it runs."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def members(pid: int) -> list[int]:
    """The processes of the session `pid` leads (what m8.devservices spawned), else `pid`."""
    fields = _stat(pid)
    if fields is None or int(fields[3]) != pid:
        return [pid]
    numbers = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [n for n in numbers if (f := _stat(n)) is not None and int(f[3]) == pid]


@dataclass(frozen=True)
class Usage:
    """CPU seconds (user+system) and resident bytes of a process and its session."""

    cpu: float
    rss: int


def usage(pid: int) -> Usage:
    """What `pid` and the rest of its session use (children that exited not counted)."""
    stats = [f for f in map(_stat, members(pid)) if f is not None]
    cpu = sum(int(f[11]) + int(f[12]) for f in stats) / CLOCK_TICKS
    return Usage(cpu, sum(int(f[21]) for f in stats) * PAGE_BYTES)


def watched(system: System, services: Services) -> dict[str, int]:
    """The processes whose CPU is measured, by name: m8's own, the servers' we started,
    and the machine's RabbitMQ (beam.smp) if one runs."""
    pids = {**system.pids, **{info.name: info.pid for info in services if info.pid}}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "beam.smp":
                pids["rabbitmq"] = int(entry.name)
    return pids


# --- counters ----------------------------------------------------------------------------


class VhostManagement(Management):
    """The message counters of a whole virtual host (the queue is unused): the RPC request
    and reply count with the events."""

    async def counters(self, vhost: str, queue: str = "") -> Counts:
        stats = await self.message_stats(f"/vhosts/{quote(vhost, safe='')}")
        return {
            "published": int(stats.get("publish", 0)),
            "delivered": int(stats.get("deliver_get", 0)),
            "redelivered": int(stats.get("redeliver", 0)),
        }


@dataclass(frozen=True)
class Sample:
    """Counters at one moment."""

    at: float
    mongo: Counts
    usage: dict[str, Usage]


async def sample(observer: AsyncMongoClient[Document], pids: Mapping[str, int]) -> Sample:
    """MongoDB's opcounters and each process's usage, now."""
    ops = await opcounters(observer)
    return Sample(time.monotonic(), ops, {name: usage(pid) for name, pid in pids.items()})


def rates(before: Sample, after: Sample) -> tuple[dict[str, float], dict[str, float]]:
    """MongoDB operations and CPU seconds per second between two samples."""
    seconds = after.at - before.at
    ops = {op: grew / seconds for op, grew in delta(after.mongo, before.mongo).items()}
    cpu = {n: (u.cpu - before.usage[n].cpu) / seconds for n, u in after.usage.items()}
    return ops, cpu


# --- work in threads ---------------------------------------------------------------------


def in_threads(concurrency: int, count: int, worker: Worker[T]) -> tuple[list[T], float]:
    """Runs the work for n below `count` on `concurrency` threads; the results and the
    seconds they took (clients are made before the clock starts)."""
    numbers, lock, results = iter(range(count)), threading.Lock(), list[T]()
    ready = threading.Barrier(concurrency + 1)

    def thread() -> None:
        with contextlib.ExitStack() as stack:
            try:
                work = worker(stack)
            except BaseException:
                ready.abort()  # the others and the clock go on no more
                raise
            ready.wait()
            while (n := next(numbers, None)) is not None:  # range iterators are thread-safe
                result = work(n)
                with lock:
                    results.append(result)

    with ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(thread) for _ in range(concurrency)]
        with contextlib.suppress(threading.BrokenBarrierError):  # the futures say why
            ready.wait()
        started = time.perf_counter()
        for future in futures:
            future.result()
        return results, time.perf_counter() - started


@dataclass(frozen=True)
class Upload:
    """One upload as the client saw it, in wall-clock time (comparable with recorded_at)."""

    upload_id: str
    started: float
    seen: float  # the client had the settled outcome
    status: str
    verified: bool


def uploader(profile: Profile, level: int) -> Worker[Upload]:
    """The SDK's upload as `m8ctl secret put` does it, of a fresh random value each time."""

    def worker(stack: contextlib.ExitStack) -> Callable[[int], Upload]:
        client = stack.enter_context(M8Client(profile.server, profile.token))

        def upload(n: int) -> Upload:
            store, path = STORES[n % len(STORES)], f"bench/e2e/c{level}/{n}"
            started = time.time()
            with read_value(bytearray(secrets.token_bytes(32))) as value:
                sent = put_secret(client, profile, path, store, value)
            view = await_outcome(client, sent["upload_id"], OUTCOME_TIMEOUT)
            seen = time.time()
            check = check_receipt(
                client, profile, view, sent["upload_id"], store, path, sent["ciphertext_sha256"]
            )
            return Upload(sent["upload_id"], started, seen, str(view["status"]), check.verified)

        return upload

    return worker


def hvac_writer(url: str, token: str) -> Worker[object]:
    """One KV v2 write per number, straight to OpenBao."""

    def worker(stack: contextlib.ExitStack) -> Callable[[int], object]:
        client = hvac.Client(url=url, token=token)
        stack.callback(client.adapter.close)
        kv, tag = client.secrets.kv.v2, uuid.uuid4().hex[:8]
        return lambda n: kv.create_or_update_secret(
            f"bench-ceiling/{tag}/{n}", secret={"v": secrets.token_hex(16)}, mount_point="secret"
        )

    return worker


def boto3_writer(url: str) -> Worker[object]:
    """One create_secret per number, straight to moto, with the reactor's dev login."""
    dev = stores.get("aws").dev
    login = dev.reactor_environment if dev is not None else {}

    def worker(stack: contextlib.ExitStack) -> Callable[[int], object]:
        client = boto3.session.Session(
            region_name="us-east-1",
            aws_access_key_id=login.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=login.get("AWS_SECRET_ACCESS_KEY"),
        ).client("secretsmanager", endpoint_url=url)
        stack.callback(client.close)
        tag = uuid.uuid4().hex[:8]
        return lambda n: client.create_secret(
            Name=f"bench-ceiling/{tag}/{n}", SecretString=secrets.token_hex(16)
        )

    return worker


# --- one level ---------------------------------------------------------------------------


def percentile(values: list[float], p: int) -> float:
    """The p-th percentile (inclusive method)."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


async def stages(db: AsyncDatabase[Document], uploads: list[Upload]) -> Figures:
    """p50 of each stage, from the request and outcome events' recorded_at."""
    ids = [u.upload_id for u in uploads]
    query = {"type": {"$in": [REQUESTED, STORED]}, "data.upload_id": {"$in": ids}}
    found = db.events.find(query, {"type": 1, "data.upload_id": 1, "recorded_at": 1})
    at = {(d["type"], d["data"]["upload_id"]): d["recorded_at"].timestamp() async for d in found}
    times: dict[str, list[float]] = {"accepted": [], "outcome": [], "visible": []}
    for u in uploads:
        requested, stored = at.get((REQUESTED, u.upload_id)), at.get((STORED, u.upload_id))
        if requested is not None and stored is not None:
            times["accepted"].append(requested - u.started)
            times["outcome"].append(stored - requested)
            times["visible"].append(u.seen - stored)
    return {f"stage_{s}_p50_ms": 1000 * percentile(v, 50) for s, v in times.items() if v}


@dataclass
class Bench:
    """What every level works with."""

    profile: Profile
    observer: AsyncMongoClient[Document]
    db: AsyncDatabase[Document]
    broker: VhostManagement
    vhost: str
    pids: dict[str, int]
    idle: tuple[dict[str, float], dict[str, float]] = ({}, {})  # ops/s, CPU s/s
    uploads: list[Upload] = field(default_factory=list)  # of every level

    async def level(self, concurrency: int, count: int) -> Figures:
        """Uploads at one concurrency; per upload figures net of the idle background."""
        broker_before = await self.broker.counters(self.vhost)
        before = await sample(self.observer, self.pids)
        work = uploader(self.profile, concurrency)
        uploads, elapsed = await asyncio.to_thread(in_threads, concurrency, count, work)
        # Final once the broker's counters stay still: the pipeline's tail is done then.
        broker_after, settled = await self.broker.settled_counters(self.vhost, "")
        after = await sample(self.observer, self.pids)
        self.uploads += uploads
        window, n = after.at - before.at, len(uploads)
        latencies = [u.seen - u.started for u in uploads]
        figures = {"uploads_per_s": n / elapsed, "broker_counters_settled": float(settled)}
        figures |= {f"latency_p{p}_ms": 1000 * percentile(latencies, p) for p in (50, 95, 99)}
        figures |= await stages(self.db, uploads)
        idle_ops, idle_cpu = self.idle
        for op, grew in delta(after.mongo, before.mongo).items():
            figures[f"mongo_{op}_per_upload"] = (grew - idle_ops.get(op, 0) * window) / n
        for what, grew in delta(broker_after, broker_before).items():
            figures[f"broker_{what}_per_upload"] = grew / n
        for name, used in after.usage.items():
            spent = used.cpu - before.usage[name].cpu - idle_cpu.get(name, 0) * window
            figures[f"cpu_ms_per_upload_{name}"] = 1000 * spent / n
        figures["cpu_ms_per_upload_m8"] = sum(
            figures.get(f"cpu_ms_per_upload_{name}", 0) for name in M8_PROCESSES
        )
        for name in M8_PROCESSES:
            if name in after.usage:
                figures[f"rss_mb_before_{name}"] = before.usage[name].rss / 2**20
                figures[f"rss_mb_after_{name}"] = after.usage[name].rss / 2**20
        return figures


# --- the run -----------------------------------------------------------------------------


async def measure(
    services: Services, system: System, profile: Profile, vhost: VirtualHost, database: str,
    count: int,
) -> tuple[str, dict[int, Figures], Bench]:  # fmt: skip
    """Every level, then the ceilings; the MongoDB server's name, figures by level."""
    url = services["mongodb"].url
    observer: AsyncMongoClient[Document] = AsyncMongoClient(url, tz_aware=True)
    broker = VhostManagement(vhost.management_url, vhost.auth)
    try:
        pids = watched(system, services)
        bench = Bench(profile, observer, observer[database], broker, vhost.name, pids)
        # Warm up: the rotator's keys for both stores issued, the profile's key lists fresh.
        await asyncio.to_thread(in_threads, 1, len(STORES), uploader(profile, 0))
        idle_start = await sample(observer, pids)
        await asyncio.sleep(IDLE_SECONDS)
        bench.idle = rates(idle_start, await sample(observer, pids))
        table = {level: await bench.level(level, count) for level in LEVELS}
        bao = services["openbao"]
        writers = {
            "hvac": hvac_writer(bao.url, bao.extra.get("token", "")),
            "boto3": boto3_writer(services["aws"].url),
        }
        for level, figures in table.items():
            for name, writer in writers.items():
                _, seconds = await asyncio.to_thread(in_threads, level, count, writer)
                figures[f"ceiling_{name}_per_s"] = count / seconds
            lowest = min(figures[f"ceiling_{name}_per_s"] for name in writers)
            figures["pipeline_over_lowest_ceiling"] = figures["uploads_per_s"] / lowest
        return await describe_mongodb(observer, url), table, bench
    finally:
        await broker.close()
        await observer.close()


NOTES = """\
uploads_per_s: uploads / seconds from the first request until the last outcome was seen.
latency: from the client's first request (upload key) until it saw the settled outcome.
stages, from the events' recorded_at: accepted = client start -> SecretUploadRequested
  (upload key, encryption, submit); outcome = request -> SecretStored recorded (relay,
  broker, reactor, upstream write); visible = SecretStored -> the client saw it (long-poll).
mongo_*: the server's opcounters (whole server) per upload, net of the idle background.
broker_*: the management API's counters of the bench's virtual host, per upload.
cpu_ms_per_upload_*: utime+stime from /proc of each process and its session, net of the
  idle background; rabbitmq is the machine's beam.smp, shared with whoever else uses it.
ceiling_hvac: direct KV v2 writes to the same OpenBao; ceiling_boto3: direct create_secret
  to the same moto; one write per upload, as many threads as the level.
MongoDB and RabbitMQ ceilings are not measured here (they would take long):
  `python -m bench.eventstore` gives the MongoDB server's raw insert rate.
The API's per-caller limits are lifted for the run (one caller makes every upload).
Figures are printed, never asserted."""


def format_report(mongodb: str, table: dict[int, Figures], bench: Bench, count: int) -> str:
    """The table, the background, the notes and a last line of name=value pairs."""
    names = list(dict.fromkeys(name for figures in table.values() for name in figures))
    lines = [
        "m8 end-to-end benchmark",
        f"  uploads      {count} per level, alternately to {' and '.join(STORES)}",
        f"  mongodb      {mongodb}",
        "",
        f"{'figure':<40}" + "".join(f"{'c=' + str(c):>11}" for c in table),
    ]
    for name in names:
        row = "".join(f"{table[c].get(name, float('nan')):>11.2f}" for c in table)
        lines.append(f"{name:<40}{row}")
    idle_ops, idle_cpu = bench.idle
    ops = ", ".join(f"{op}={rate:.1f}" for op, rate in idle_ops.items()) or "not reported"
    lines.append(f"idle background, mongo ops/s: {ops}")
    cpu = ", ".join(f"{name}={1000 * rate:.1f}" for name, rate in idle_cpu.items())
    lines.append(f"idle background, cpu ms/s: {cpu}")
    outcomes = ", ".join(sorted({u.status for u in bench.uploads}))
    unverified = sum(not u.verified for u in bench.uploads)
    lines.append(f"outcomes seen: {outcomes}; receipts that did not verify: {unverified}")
    if not all(figures["broker_counters_settled"] for figures in table.values()):
        lines.append(f"note: broker counters still moved after {STATS_LIMIT_SECONDS:.0f} s")
    lines.append(NOTES)
    lines.append(" ".join(f"{n}_c{c}={v:.2f}" for c, fs in table.items() for n, v in fs.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Starts the servers and m8, measures, prints; cleans up in any case."""
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=60, help="uploads per concurrency level")
    args = parser.parse_args(argv)
    if args.uploads < max(LEVELS):
        parser.error(f"--uploads must be at least {max(LEVELS)}")
    database = f"m8_bench_{uuid.uuid4().hex[:12]}"
    overrides = {**LIFTED, "M8_MONGODB_DATABASE": database}
    try:
        with running_system("m8-bench-e2e-", overrides) as running:
            services = running.services
            try:
                profile = Profile.load(running.m8ctl_config)
                run = measure(
                    services, running.system, profile, running.vhost, database, args.uploads
                )
                mongodb, table, bench = asyncio.run(run)
            finally:
                with MongoClient[Document](services["mongodb"].url) as mongo:
                    mongo.drop_database(database)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_report(mongodb, table, bench, args.uploads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
