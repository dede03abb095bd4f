"""The m8 processes' Prometheus metrics, as the bench reads them.

A process's metrics port is found from /proc (the TCP ports its session listens on), so
the bench needs to know nothing of how the system was configured: a reactor serves
metrics when M8_REACTOR_METRICS_PORT is set for it, and listens on nothing else.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

LISTEN = "0A"  # the TCP state in /proc/net/tcp


def listening_ports(pids: Iterable[int]) -> set[int]:
    """The TCP ports these processes listen on."""
    inodes: set[str] = set()
    tables: set[Path] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[len("socket:[") : -1])
            tables |= {Path(f"/proc/{pid}/net/tcp"), Path(f"/proc/{pid}/net/tcp6")}
    ports = set()
    for table in tables:
        with contextlib.suppress(OSError):
            for line in table.read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == LISTEN and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@dataclass(frozen=True)
class Totals:
    """A histogram's sum and count, over the series that matched."""

    sum: float = 0.0
    count: float = 0.0

    def __add__(self, other: Totals) -> Totals:
        return Totals(self.sum + other.sum, self.count + other.count)

    def __sub__(self, other: Totals) -> Totals:
        return Totals(self.sum - other.sum, self.count - other.count)

    def mean(self) -> float | None:
        """The mean of what was observed, if anything was."""
        return self.sum / self.count if self.count else None


def histogram(texts: Iterable[str], name: str, labels: Mapping[str, str]) -> Totals:
    """The sum and count of histogram `name` over its series with these label values, in
    the metrics of every process (one text each)."""
    totals = {"_sum": 0.0, "_count": 0.0}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name != name:
                continue
            for sample in family.samples:
                suffix = sample.name.removeprefix(name)
                if suffix in totals and all(sample.labels.get(k) == v for k, v in labels.items()):
                    totals[suffix] += sample.value
    return Totals(totals["_sum"], totals["_count"])


async def scrape(http: httpx.AsyncClient, ports: Iterable[int]) -> list[str]:
    """The metrics text of each port that serves /metrics (others are skipped)."""
    texts = []
    for port in sorted(ports):
        with contextlib.suppress(httpx.HTTPError):
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
            if response.is_success:
                texts.append(response.text)
    return texts
