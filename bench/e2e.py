"""End to end: uploads through the public API at concurrency 1, 4 and 16, and their cost.

Runs the whole system locally (servers, api, keyrotator, reactors) in a throwaway
RabbitMQ virtual host and MongoDB database, uploads with the SDK as `m8ctl secret put`
does (client-side encryption, waiting for the outcome, checking its receipt), split over
vault-dev and aws-dev, and prints rates, latencies, MongoDB operations, broker messages,
CPU and RSS per process, the time of each stage, and as ceilings direct hvac and boto3
writes to the same servers and the raw rates of MongoDB and RabbitMQ divided by what an
upload needs of them. Figures are printed, never asserted.

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
import httpx
import hvac
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase

from bench.ceilings import mongodb_ops_per_s, rabbitmq_publishes_per_s
from bench.eventstore import (
    STATS_LIMIT_SECONDS,
    Counts,
    Management,
    delta,
    describe_mongodb,
    opcounters,
)
from bench.metrics import Totals, histogram, listening_ports, scrape
from bench.system import running_system
from m8 import stores
from m8.client.outcome import await_outcome, check_receipt
from m8.client.profile import Profile
from m8.client.sdk import M8Client
from m8.client.upload import put_secret, read_value
from m8.devservices import ServiceError, Services
from m8.devservices.manager import free_port
from m8.devservices.system import AWS_STORE, VAULT_STORE, System
from m8.devservices.vhosts import VirtualHost
from m8.eventstore.mongo import Document

STORES = (VAULT_STORE, AWS_STORE)
LEVELS = (1, 4, 16)
M8_PROCESSES = ("api", "keyrotator", "reactor-vault", "reactor-aws")
IDLE_SECONDS = 5.0  # the window in which the idle system's background traffic is measured
OUTCOME_TIMEOUT = 120.0
REQUESTED, STORED = "SecretUploadRequested", "SecretStored"
ISSUED, DESTROYED = "UploadKeyIssued", "UploadKeyDestroyed"
# Each stage from one moment to the next: the client's clock or an event's recorded_at.
STAGES = {
    "key_issued": ("start", ISSUED),
    "accepted": (ISSUED, REQUESTED),
    "outcome": (REQUESTED, STORED),
    "visible": (STORED, "seen"),
    "key_destroyed": (STORED, DESTROYED),
}
CEILING_SECONDS = 3.0  # how long each of MongoDB's and RabbitMQ's raw rates is measured
# MongoDB's opcounters that an upload's work shows in (commands are sessions and the like).
MONGO_OPS = ("insert", "update", "delete", "query")
# The API's requests of an upload, and the reactors' upstream write (their histograms).
API_SECONDS = "m8_api_request_duration_seconds"
API_ROUTES = {"issue": "/v1/upload-keys", "submit": "/v1/secrets"}
UPSTREAM_SECONDS = "m8_reactor_upstream_write_seconds"
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


def uploader(profile: Profile, prefix: str) -> Worker[Upload]:
    """The SDK's upload as `m8ctl secret put` does it, of a fresh random value each time,
    to `<prefix>/<n>`."""

    def worker(stack: contextlib.ExitStack) -> Callable[[int], Upload]:
        client = stack.enter_context(M8Client(profile.server, profile.token))

        def upload(n: int) -> Upload:
            store, path = STORES[n % len(STORES)], f"{prefix}/{n}"
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


async def stages(db: AsyncDatabase[Document], uploads: list[Upload]) -> dict[str, list[float]]:
    """Each stage's seconds, per upload, from its events' recorded_at and the client's clock
    (the same machine's)."""
    ids = [u.upload_id for u in uploads]
    fields = {"type": 1, "data.upload_id": 1, "data.key_id": 1, "recorded_at": 1}
    at: dict[tuple[str, str], float] = {}
    keys: dict[str, str] = {}  # key id by upload id
    outcomes = {"type": {"$in": [REQUESTED, STORED]}, "data.upload_id": {"$in": ids}}
    async for d in db.events.find(outcomes, fields):
        at[d["type"], d["data"]["upload_id"]] = d["recorded_at"].timestamp()
        if d["type"] == REQUESTED:
            keys[d["data"]["upload_id"]] = d["data"]["key_id"]
    upload_keys = {
        "aggregate_type": "upload_key",
        "aggregate_id": {"$in": list(keys.values())},
        "type": {"$in": [ISSUED, DESTROYED]},
    }
    async for d in db.events.find(upload_keys, fields):
        at[d["type"], d["data"]["key_id"]] = d["recorded_at"].timestamp()
    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for u in uploads:
        key = keys.get(u.upload_id, "")
        moments: dict[str, float | None] = {
            "start": u.started,
            ISSUED: at.get((ISSUED, key)),
            REQUESTED: at.get((REQUESTED, u.upload_id)),
            STORED: at.get((STORED, u.upload_id)),  # none if it was not stored
            "seen": u.seen,
            DESTROYED: at.get((DESTROYED, key)),
        }
        for stage, (begins, ends) in STAGES.items():
            if (begun := moments[begins]) is not None and (ended := moments[ends]) is not None:
                times[stage].append(ended - begun)
    return times


def stage_figures(
    times: dict[str, list[float]], api: dict[str, Totals], upstream: Totals
) -> Figures:
    """p50 of each stage; the mean of the API's requests and of the upstream writes, and
    what the outcome took besides the upstream write (relay, broker, reactor), on average."""
    figures = {f"stage_{s}_p50_ms": 1000 * percentile(v, 50) for s, v in times.items() if v}
    for route, totals in api.items():
        if (mean := totals.mean()) is not None:
            figures[f"stage_api_{route}_mean_ms"] = 1000 * mean
    if (write := upstream.mean()) is not None:
        figures["stage_upstream_write_mean_ms"] = 1000 * write
        if outcome := times.get("outcome"):
            figures["stage_relay_broker_reactor_mean_ms"] = 1000 * (
                statistics.fmean(outcome) - write
            )
    return figures


@dataclass
class Bench:
    """What every level works with."""

    profile: Profile
    observer: AsyncMongoClient[Document]
    db: AsyncDatabase[Document]
    broker: VhostManagement
    vhost: str
    pids: dict[str, int]
    http: httpx.AsyncClient
    api_metrics: set[int]  # the API's metrics port
    reactor_metrics: set[int] = field(default_factory=set)  # what they listen on, if anything
    idle: tuple[dict[str, float], dict[str, float]] = ({}, {})  # ops/s, CPU s/s
    uploads: list[Upload] = field(default_factory=list)  # of every level

    async def histograms(self) -> tuple[dict[str, Totals], Totals]:
        """The API's request times by stage and the reactors' upstream write times, so far."""
        api = await scrape(self.http, self.api_metrics)
        reactors = await scrape(self.http, self.reactor_metrics)
        requests = {
            stage: histogram(api, API_SECONDS, {"method": "POST", "route": route})
            for stage, route in API_ROUTES.items()
        }
        return requests, histogram(reactors, UPSTREAM_SECONDS, {"result": "ok"})

    async def level(self, concurrency: int, count: int) -> Figures:
        """Uploads at one concurrency; per upload figures net of the idle background."""
        broker_before = await self.broker.counters(self.vhost)
        api_before, upstream_before = await self.histograms()
        before = await sample(self.observer, self.pids)
        work = uploader(self.profile, f"bench/e2e/c{concurrency}")
        uploads, elapsed = await asyncio.to_thread(in_threads, concurrency, count, work)
        # Final once the broker's counters stay still: the pipeline's tail is done then.
        broker_after, settled = await self.broker.settled_counters(self.vhost, "")
        after = await sample(self.observer, self.pids)
        api_after, upstream_after = await self.histograms()
        self.uploads += uploads
        window, n = after.at - before.at, len(uploads)
        latencies = [u.seen - u.started for u in uploads]
        figures = {"uploads_per_s": n / elapsed, "broker_counters_settled": float(settled)}
        figures |= {f"latency_p{p}_ms": 1000 * percentile(latencies, p) for p in (50, 95, 99)}
        figures |= stage_figures(
            await stages(self.db, uploads),
            {stage: api_after[stage] - api_before[stage] for stage in API_ROUTES},
            upstream_after - upstream_before,
        )
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


async def ceilings(
    bench: Bench, services: Services, vhost: VirtualHost, figures: Figures, level: int, count: int
) -> None:
    """Each ceiling at one level's concurrency, as uploads/s, and the pipeline's share of
    the lowest. MongoDB's and RabbitMQ's raw rates are divided by the operations and
    publishes that the level's uploads needed each."""
    bao = services["openbao"]
    writers = {
        "hvac": hvac_writer(bao.url, bao.extra.get("token", "")),
        "boto3": boto3_writer(services["aws"].url),
    }
    for name, writer in writers.items():
        _, seconds = await asyncio.to_thread(in_threads, level, count, writer)
        figures[f"ceiling_{name}_per_s"] = count / seconds
    ops = sum(figures.get(f"mongo_{op}_per_upload", 0.0) for op in MONGO_OPS)
    if ops > 0:  # zero when the server reports no opcounters
        raw = await mongodb_ops_per_s(bench.db, level, CEILING_SECONDS)
        figures["mongodb_raw_ops_per_s"] = raw
        figures["ceiling_mongodb_per_s"] = raw / ops
    raw = await rabbitmq_publishes_per_s(vhost.url, level, CEILING_SECONDS)
    figures["rabbitmq_raw_publishes_per_s"] = raw
    if (published := figures.get("broker_published_per_upload", 0.0)) > 0:
        figures["ceiling_rabbitmq_per_s"] = raw / published
    lowest = min(v for name, v in figures.items() if name.startswith("ceiling_"))
    figures["pipeline_over_lowest_ceiling"] = figures["uploads_per_s"] / lowest


async def measure(
    services: Services, system: System, profile: Profile, vhost: VirtualHost, database: str,
    count: int, api_metrics_port: int,
) -> tuple[str, dict[int, Figures], Bench]:  # fmt: skip
    """Every level, then the ceilings; the MongoDB server's name, figures by level."""
    url = services["mongodb"].url
    observer: AsyncMongoClient[Document] = AsyncMongoClient(url, tz_aware=True)
    broker = VhostManagement(vhost.management_url, vhost.auth)
    http = httpx.AsyncClient(timeout=10)
    try:
        pids = watched(system, services)
        bench = Bench(
            profile, observer, observer[database], broker, vhost.name, pids, http,
            {api_metrics_port},
        )  # fmt: skip
        # Warm up: the rotator's keys for both stores issued, the profile's key lists fresh.
        await asyncio.to_thread(in_threads, 1, len(STORES), uploader(profile, "bench/e2e/warm"))
        # Each reactor has consumed an upload now, so it serves its metrics if it does at all.
        reactors = [pid for name, pid in system.pids.items() if name.startswith("reactor-")]
        bench.reactor_metrics = listening_ports(n for pid in reactors for n in members(pid))
        idle_start = await sample(observer, pids)
        await asyncio.sleep(IDLE_SECONDS)
        bench.idle = rates(idle_start, await sample(observer, pids))
        table = {level: await bench.level(level, count) for level in LEVELS}
        for level, figures in table.items():
            await ceilings(bench, services, vhost, figures, level, count)
        return await describe_mongodb(observer, url), table, bench
    finally:
        await http.aclose()
        await broker.close()
        await observer.close()


NOTES = """\
uploads_per_s: uploads / seconds from the first request until the last outcome was seen.
latency: from the client's first request (upload key) until it saw the settled outcome.
stages (p50 over the level's stored uploads), from the events' recorded_at and the client's
  clock: key_issued = client start -> UploadKeyIssued (request, API, RPC to the rotator);
  accepted = UploadKeyIssued -> SecretUploadRequested (rest of the key request, the
  client's checks and encryption, submit, API); outcome = SecretUploadRequested ->
  SecretStored (relay, broker, reactor, upstream write); visible = SecretStored -> the
  client saw it (projection and long-poll: rm_uploads.updated_at is the event's own time,
  so the projection is not timed apart); key_destroyed = SecretStored ->
  UploadKeyDestroyed (relay, broker, rotator; off the client's path).
  stage_api_issue/submit_mean_ms: the API's own time for POST /v1/upload-keys and
  POST /v1/secrets (its m8_api_request_duration_seconds, mean over the level).
  stage_upstream_write_mean_ms: the reactors' m8_reactor_upstream_write_seconds (result
  ok), mean over the level; stage_relay_broker_reactor_mean_ms = mean outcome minus it.
  Both are missing when the reactors serve no metrics (M8_REACTOR_METRICS_PORT unset).
mongo_*: the server's opcounters (whole server) per upload, net of the idle background.
broker_*: the management API's counters of the bench's virtual host, per upload.
cpu_ms_per_upload_*: utime+stime from /proc of each process and its session, net of the
  idle background; rabbitmq is the machine's beam.smp, shared with whoever else uses it.
ceilings, in uploads/s, at the level's concurrency: hvac = direct KV v2 writes to the same
  OpenBao, boto3 = direct create_secret to the same moto (one write per upload);
  mongodb = mongodb_raw_ops_per_s (insert_one + find_one by _id of upload-request event
  documents on a scratch collection with the event store's indexes, for a few seconds)
  over the level's mongo insert+update+delete+query per upload; rabbitmq =
  rabbitmq_raw_publishes_per_s (confirmed persistent event messages to a scratch quorum
  queue with m8's arguments, one channel, for a few seconds) over the level's publishes
  per upload. pipeline_over_lowest_ceiling: uploads_per_s over the lowest of them.
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
    database, api_metrics_port = f"m8_bench_{uuid.uuid4().hex[:12]}", free_port()
    overrides = {
        **LIFTED,
        "M8_MONGODB_DATABASE": database,
        "M8_API_METRICS_PORT": str(api_metrics_port),
    }
    try:
        with running_system("m8-bench-e2e-", overrides) as running:
            services = running.services
            try:
                profile = Profile.load(running.m8ctl_config)
                run = measure(
                    services, running.system, profile, running.vhost, database, args.uploads,
                    api_metrics_port,
                )  # fmt: skip
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
