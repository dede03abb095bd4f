"""Prometheus metrics of the reactors. Labels carry store types, store names and fixed
outcome codes only: never a path, an id or anything from a value.

A reactor process serves its reactor's registry on its operations port (m8.health), with
the process's own metrics added."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from m8.health import outbox_lag


class ReactorMetrics:
    """One reactor's metrics, in a registry of its own: two reactors in one process (as in
    the tests) count apart."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.uploads = Counter(
            "m8_reactor_uploads_total",
            "Uploads a reactor finished: stored, rejected, failed, or already done (duplicate).",
            ["store_type", "store", "outcome", "reason"],
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "m8_reactor_upstream_write_seconds",
            "Time of one attempt to write an upload upstream, by result (ok, transient, "
            "permanent).",
            ["store_type", "store", "result"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.upstream_retries = Counter(
            "m8_reactor_upstream_retries_total",
            "Upstream writes retried after a transient error.",
            ["store_type", "store"],
            registry=self.registry,
        )
        self.put_off = Counter(
            "m8_reactor_uploads_put_off_total",
            "Deliveries put back at the end of their queue, uncounted, after waiting "
            "M8_REACTOR_PATH_WAIT_SECONDS for a path another upload was being written to.",
            ["store_type"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "m8_reactor_uploads_in_flight",
            "Uploads a reactor process is handling right now.",
            ["store_type"],
            registry=self.registry,
        )
        # The lag of this process's outbox relay (each reactor process has one).
        self.registry.register(outbox_lag())
