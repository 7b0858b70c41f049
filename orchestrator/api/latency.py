"""Latency histograms this server process observes: due -> PENDING (dispatch) and PENDING ->
RUNNING (start). Per process, as Prometheus expects: sum them across replicas when querying."""

from __future__ import annotations

import datetime as dt
from typing import Any

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Latencies:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Histogram

        self.registry = CollectorRegistry()
        self.dispatch = Histogram("orch_dispatch_latency_seconds", "Time from a run being due to PENDING (claimed)",
                                  ["pool"], buckets=BUCKETS, registry=self.registry)
        self.start = Histogram("orch_start_latency_seconds", "Time from PENDING to RUNNING",
                               ["pool"], buckets=BUCKETS, registry=self.registry)

    def claimed(self, pool: str | None, due: dt.datetime, claimed_at: dt.datetime) -> None:
        self.dispatch.labels(pool=pool or "").observe(max(0.0, (claimed_at - due).total_seconds()))

    def started(self, pool: str | None, pending_at: dt.datetime, running_at: dt.datetime) -> None:
        self.start.labels(pool=pool or "").observe(max(0.0, (running_at - pending_at).total_seconds()))

    def collectors(self) -> Any:
        return self.registry
