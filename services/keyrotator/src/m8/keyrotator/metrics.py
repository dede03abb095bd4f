"""Prometheus metrics of the key rotator. Labels carry store types, store names, fixed
reasons, procedure names and error codes only: never a path, a key id or an actor.

A rotator process serves this registry on its operations port (m8.health), with the
process's own metrics added."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from m8.health import outbox_lag


class KeyRotatorMetrics:
    """One rotator's metrics, in a registry of its own (tests run several in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.issued = Counter(
            "m8_keyrotator_upload_keys_issued_total",
            "Upload keys issued (stored with their UploadKeyIssued event, then signed).",
            ["store_type", "store"],
            registry=self.registry,
        )
        self.destroyed = Counter(
            "m8_keyrotator_upload_keys_destroyed_total",
            "Upload keys destroyed, by reason: used, rejected, superseded (their upload "
            "ended) or expired (the sweep).",
            ["reason"],
            registry=self.registry,
        )
        self.sweeps = Counter(
            "m8_keyrotator_sweeps_total",
            "Passes of the expiry sweep, by outcome (ok, failed: retried at the next pass).",
            ["outcome"],
            registry=self.registry,
        )
        self.rpc_requests = Counter(
            "m8_keyrotator_rpc_requests_total",
            "RPC requests answered, by procedure and outcome: ok, or the error code of the "
            "reply (bad_request, unavailable, a domain refusal, internal).",
            ["procedure", "outcome"],
            registry=self.registry,
        )
        # The lag of this process's outbox relay (the rotator's events: UploadKeyIssued,
        # UploadKeyDestroyed).
        self.registry.register(outbox_lag())
