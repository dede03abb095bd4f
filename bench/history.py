"""Flat with history: upload latency with many existing secrets, and RSS over many uploads.

Runs the whole system locally as bench.e2e does and uploads through the SDK as
`m8ctl secret put` does, at concurrency 4. It measures the p50 upload latency on the
empty system, then seeds N stored secrets in bulk straight into MongoDB (each with the
documents a real upload leaves: bench.documents), measures again and prints both p50s and
their ratio. With --rss-uploads it then makes that many uploads more and prints each m8
process's RSS every tenth of them. Outside CI (it takes long); figures are printed, never
asserted.

    .venv/bin/python -m bench.history --seed 100000 --uploads 200
    .venv/bin/python -m bench.history --seed 0 --uploads 0 --rss-uploads 10000
    .venv/bin/python -m bench.history --seed 50000 --uploads 200 --slow-ms 15 --mongodb-cache 1G
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from bench.documents import FinishedUpload, finished_upload
from bench.e2e import LIFTED, M8_PROCESSES, STORES, in_threads, percentile, uploader, usage
from bench.system import RunningSystem, running_system
from m8.client.profile import Profile
from m8.config import Settings, SettingsError, load_settings
from m8.devservices import ServiceError
from m8.eventstore.mongo import Document

CONCURRENCY = 4
BATCH = 500  # secrets per bulk insert
Figures = dict[str, float]


def say(line: str) -> None:
    """Progress, as it happens (a run takes minutes)."""
    print(line, flush=True)


# --- latency -----------------------------------------------------------------------------


def latencies(profile: Profile, prefix: str, count: int) -> tuple[list[float], float]:
    """The seconds of each of `count` uploads to new secrets under `prefix`, and uploads/s."""
    uploads, elapsed = in_threads(CONCURRENCY, count, uploader(profile, prefix))
    return [u.seen - u.started for u in uploads], len(uploads) / elapsed


def shape(value: Any) -> Any:
    """A command with every value replaced by "?": what makes two operations alike."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items() if k not in ("lsid", "txnNumber", "$db")}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return "?"


@contextlib.contextmanager
def slow_operations(db_url: str, database: str, slow_ms: int, name: str) -> Iterator[None]:
    """MongoDB's profiler on `database` while the block runs (operations of at least
    `slow_ms`); then prints the slowest kinds of operation, by their time in total."""
    with MongoClient[Document](db_url) as client:
        db = client[database]
        was = db.command("profile", 1, slowms=slow_ms)  # slowms is server-wide: restored
        try:
            yield
        finally:
            try:
                db.command("profile", 0, slowms=was["slowms"])
                fields = {"op": 1, "ns": 1, "command": 1, "millis": 1}
                entries = list(db["system.profile"].find({}, fields))
                db.drop_collection("system.profile")
            except PyMongoError as exc:  # never hide what ended the block
                say(f"{name}: the profiler's entries could not be read: {exc}")
                entries = []
    took: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    longest: dict[str, int] = {}
    for entry in entries:
        key = f"{entry.get('op')} {entry.get('ns')} {json.dumps(shape(entry.get('command', {})))}"
        millis = int(entry.get("millis", 0))
        took[key] += millis
        seen[key] += 1
        longest[key] = max(longest.get(key, 0), millis)
    say(f"{name}: {len(entries)} operations of at least {slow_ms} ms, slowest kinds first:")
    for key, total in took.most_common(12):
        say(f"  {total:>7} ms in {seen[key]:>5}, longest {longest[key]:>5} ms: {key[:300]}")


def latency_figures(name: str, profile: Profile, count: int) -> Figures:
    """p50 and p95 latency and the rate of `count` uploads, named `<name>_...`."""
    seconds, rate = latencies(profile, f"bench/history/{name}", count)
    figures = {f"{name}_latency_p{p}_ms": 1000 * percentile(seconds, p) for p in (50, 95)}
    figures[f"{name}_uploads_per_s"] = rate
    say(", ".join(f"{n}={v:.1f}" for n, v in figures.items()))
    return figures


# --- seeding -----------------------------------------------------------------------------


def seed_store(n: int) -> tuple[str, str]:
    """The store of the n-th seeded secret (its name and type), alternately as uploads go."""
    name = STORES[n % len(STORES)]
    return name, name.removesuffix("-dev")


@dataclass
class Seeding:
    """How long seeding took: making the documents and inserting them."""

    secrets: int = 0
    documents: int = 0
    making: float = 0.0
    inserting: float = 0.0


def seed(db_url: str, database: str, count: int) -> Seeding:
    """`count` stored secrets, one upload each, inserted in bulk (unordered insert_many)."""
    done, tenth = Seeding(), max(1, count // 10)
    run = uuid.uuid4().hex[:8]  # seeding twice into one database makes other secrets
    with MongoClient[Document](db_url, tz_aware=True) as client:
        db = client[database]
        for first in range(0, count, BATCH):
            started = time.perf_counter()
            made: list[FinishedUpload] = []
            for n in range(first, min(first + BATCH, count)):
                store, store_type = seed_store(n)
                made.append(finished_upload(store, store_type, f"seed/{run}/team-{n % 97}/app-{n}"))
            batches: dict[str, list[Document]] = {}
            for upload in made:
                for collection, docs in upload.by_collection().items():
                    batches.setdefault(collection, []).extend(docs)
            inserting = time.perf_counter()
            for collection, docs in batches.items():
                db[collection].insert_many(docs, ordered=False)
                done.documents += len(docs)
            done.making += inserting - started
            done.inserting += time.perf_counter() - inserting
            done.secrets += len(made)
            if done.secrets // tenth > (done.secrets - len(made)) // tenth:
                took = done.making + done.inserting
                say(f"seeded {done.secrets} secrets ({done.documents} documents) in {took:.0f} s")
    return done


def seeding_figures(done: Seeding) -> Figures:
    """What seeding took, and so what 100,000 secrets would at the same rate."""
    total = done.making + done.inserting
    return {
        "seed_secrets": float(done.secrets),
        "seed_documents": float(done.documents),
        "seed_making_s": done.making,
        "seed_inserting_s": done.inserting,
        "seed_documents_per_s": done.documents / total if total else 0.0,
        "seed_s_per_100000_secrets": 100_000 * total / done.secrets if done.secrets else 0.0,
    }


# --- RSS ---------------------------------------------------------------------------------


def rss_line(running: RunningSystem, uploaded: int) -> str:
    """Each m8 process's RSS now."""
    rss = {name: usage(running.system.pids[name]).rss / 2**20 for name in M8_PROCESSES}
    return f"after {uploaded:>6} uploads: " + "  ".join(f"{n}={v:.1f}" for n, v in rss.items())


def rss_over(
    running: RunningSystem, profile: Profile, count: int, report: Callable[[str], None]
) -> Figures:
    """`count` uploads in ten steps, each m8 process's RSS (MiB) before and after each."""
    step = max(1, count // 10)
    first = {name: usage(running.system.pids[name]).rss for name in M8_PROCESSES}
    report(rss_line(running, 0))
    uploaded, started = 0, time.perf_counter()
    while uploaded < count:
        n = min(step, count - uploaded)
        in_threads(CONCURRENCY, n, uploader(profile, f"bench/history/rss/{uploaded}"))
        uploaded += n
        report(rss_line(running, uploaded))
    figures = {"rss_uploads_per_s": uploaded / (time.perf_counter() - started)}
    for name in M8_PROCESSES:
        last = usage(running.system.pids[name]).rss
        figures[f"rss_mb_first_{name}"] = first[name] / 2**20
        figures[f"rss_mb_last_{name}"] = last / 2**20
    return figures


# --- the run -----------------------------------------------------------------------------


NOTES = """\
latency: from the client's first request (upload key) until it saw the settled outcome,
  uploads of a new random value to a new secret each, at concurrency 4 through the SDK.
empty: before seeding; seeded: after. seeded_over_empty_p50: the ratio of the p50s (the
  issue asks for at most 1.10 with 100,000 secrets).
seeding: per secret one upload's documents as m8 writes them (5 events, published, the
  ciphertext redacted; rm_uploads, rm_secrets, upload_requests), unordered insert_many of
  500 secrets at a time into the bench's database while the system runs.
  seed_s_per_100000_secrets: 100,000 secrets at this run's average rate (a straight line:
  if each batch took longer than the last, 100,000 take longer still).
rss: resident set of each m8 process and its session, from /proc.
The API's per-caller limits are lifted for the run. Figures are printed, never asserted."""


def measure(running: RunningSystem, database: str, args: argparse.Namespace) -> Figures:
    """The run's figures: latency empty and seeded, seeding, RSS over uploads."""
    profile = Profile.load(running.m8ctl_config)
    # Warm up: the rotator's keys for both stores issued, the profile's key lists fresh.
    in_threads(1, len(STORES), uploader(profile, "bench/history/warm"))
    figures: Figures = {}
    db_url = running.services["mongodb"].url

    def profiled(name: str) -> contextlib.AbstractContextManager[None]:
        if args.slow_ms is None:
            return contextlib.nullcontext()
        return slow_operations(db_url, database, args.slow_ms, name)

    if args.uploads:
        with profiled("empty"):
            figures |= latency_figures("empty", profile, args.uploads)
    if args.seed:
        say(f"seeding {args.seed} secrets ...")
        figures |= seeding_figures(seed(db_url, database, args.seed))
    if args.uploads:
        try:
            with profiled("seeded"):
                figures |= latency_figures("seeded", profile, args.uploads)
        except Exception as exc:  # after many minutes of seeding, still print the rest
            say(f"uploads failed on the seeded system: {type(exc).__name__}: {exc}")
            return figures
        empty, seeded = figures["empty_latency_p50_ms"], figures["seeded_latency_p50_ms"]
        figures["seeded_over_empty_p50"] = seeded / empty
    if args.rss_uploads:
        figures |= rss_over(running, profile, args.rss_uploads, say)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Starts the servers and m8, measures, prints; cleans up in any case."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.history", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seed", type=int, default=100_000, help="secrets to seed")
    parser.add_argument("--uploads", type=int, default=200, help="uploads per latency measurement")
    parser.add_argument("--rss-uploads", type=int, default=0, help="uploads while watching RSS")
    parser.add_argument(
        "--mongodb-cache",
        default="8G",
        help="the cache of the in-memory SecantusDB started for the run: it holds every"
        " document, and near full every operation waits for it (default 8G, whatever"
        " M8_DEV_MONGODB_CACHE says; no effect with M8_MONGODB_URI or M8_SERVICES=containers)",
    )
    parser.add_argument(
        "--slow-ms",
        type=int,
        help="print the MongoDB operations of at least this many ms in each latency"
        " measurement (the profiler's own writes add to the latency)",
    )
    args = parser.parse_args(argv)
    if min(args.seed, args.uploads, args.rss_uploads, args.slow_ms or 0) < 0:
        parser.error("counts and times must not be negative")
    try:
        load_settings(Settings)  # the environment's, named in the error without values
    except SettingsError as exc:
        parser.error(str(exc))
    try:  # so only the flag can be wrong here
        settings = Settings(dev_mongodb_cache=args.mongodb_cache)
    except ValidationError:
        parser.error("--mongodb-cache takes a size such as 512M or 8G")
    database = f"m8_bench_{uuid.uuid4().hex[:12]}"
    try:
        with running_system(
            "m8-bench-history-", {**LIFTED, "M8_MONGODB_DATABASE": database}, settings
        ) as running:
            try:
                figures = measure(running, database, args)
            finally:
                with MongoClient[Document](running.services["mongodb"].url) as mongo:
                    mongo.drop_database(database)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    lines = [
        "m8 history benchmark",
        f"  seeded {args.seed} secrets; {args.uploads} uploads per latency measurement;"
        f" {args.rss_uploads} uploads while watching RSS",
        "",
    ]
    lines += [f"{name:<36}{value:>12.2f}" for name, value in figures.items()]
    lines += [NOTES, " ".join(f"{name}={value:.2f}" for name, value in figures.items())]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
