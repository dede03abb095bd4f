"""Chaos at scale: a few hundred uploads while every fault of the schedule strikes
(bench/chaos.py): the API, the key rotator and each of two reactors per type killed and
restarted, the broker restarted and its connections closed, OpenBao and moto paused for
20 s, the MongoDB server restarted, the reactors' link to the broker cut for 10 s.
Every upload ends with an outcome, and upstream holds each stored value once, the latest
per path. The run uses servers of its own (never the machine's RabbitMQ)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import ROUND, chaos_run, fault_counts, format_report, parser

UPLOADS = 300
# Long enough for a path whose lease a killed reactor held (contracts: reactor_path_leases)
# and for an upload's whole retry budget; short enough to report stuck within the timeout.
DRAIN_TIMEOUT = 150


@pytest.mark.timeout(480)
async def test_uploads_through_every_fault_are_stored_once_and_in_order(tmp_path: Path) -> None:
    args = parser().parse_args(["--uploads", str(UPLOADS), "--drain-timeout", str(DRAIN_TIMEOUT)])
    report = await chaos_run(args, tmp_path)
    print(format_report(report))  # the figures, with `pytest -s`

    assert [a.name for a in report.fault_errors] == []
    every_fault = {f"{f.kind}_{f.target}" if f.target else f.kind for s in ROUND for f in s}
    assert set(fault_counts(report.applied)) == every_fault
    books = report.books
    assert books.client["accepted"] == UPLOADS
    assert books.lost == []
    assert books.duplicated == []
    assert books.stuck == []
    assert books.out_of_order == []
