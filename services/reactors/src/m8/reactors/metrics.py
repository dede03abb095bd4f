"""Prometheus metrics of the reactors. Labels carry store types, store names and fixed
outcome codes only: never a path, an id or anything from a value."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

UPLOADS = Counter(
    "m8_reactor_uploads_total",
    "Uploads a reactor finished: stored, rejected, failed, or already done (duplicate).",
    ["store_type", "store", "outcome", "reason"],
)
UPSTREAM_SECONDS = Histogram(
    "m8_reactor_upstream_write_seconds",
    "Time of one attempt to write an upload upstream, by result (ok, transient, permanent).",
    ["store_type", "store", "result"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UPSTREAM_RETRIES = Counter(
    "m8_reactor_upstream_retries_total",
    "Upstream writes retried after a transient error.",
    ["store_type", "store"],
)
IN_FLIGHT = Gauge(
    "m8_reactor_uploads_in_flight",
    "Uploads a reactor process is handling right now.",
    ["store_type"],
)


def serve(port: int) -> None:
    """Serves /metrics on `port` in a background thread; 0 means no server."""
    if port:
        start_http_server(port)
