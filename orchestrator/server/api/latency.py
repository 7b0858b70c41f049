"""Latency histograms this server process observes: due -> PENDING (dispatch) and PENDING ->
RUNNING (start). Per process, as Prometheus expects: sum them across replicas when querying."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Latencies:
    """``prometheus_client`` (~60 ms of a server's start, with the ``wsgiref`` it pulls in) is loaded
    when the histograms are first needed; the server calls ``load()`` on a thread once it is up, so
    that is not the first claim either."""

    def __init__(self) -> None:
        self._histograms: tuple[Any, Any, Any] | None = None  # registry, dispatch, start
        self._lock = threading.Lock()

    def load(self) -> tuple[Any, Any, Any]:
        if self._histograms is None:
            with self._lock:
                if self._histograms is None:
                    from prometheus_client import CollectorRegistry, Histogram

                    registry = CollectorRegistry()
                    self._histograms = (
                        registry,
                        Histogram("orch_dispatch_latency_seconds", "Time from a run being due to PENDING (claimed)",
                                  ["pool"], buckets=BUCKETS, registry=registry),
                        Histogram("orch_start_latency_seconds", "Time from PENDING to RUNNING",
                                  ["pool"], buckets=BUCKETS, registry=registry),
                    )
        return self._histograms

    def claimed(self, pool: str | None, due: dt.datetime, claimed_at: dt.datetime) -> None:
        self.load()[1].labels(pool=pool or "").observe(max(0.0, (claimed_at - due).total_seconds()))

    def started(self, pool: str | None, pending_at: dt.datetime, running_at: dt.datetime) -> None:
        self.load()[2].labels(pool=pool or "").observe(max(0.0, (running_at - pending_at).total_seconds()))

    def collectors(self) -> Any:
        return self.load()[0]
