"""Latency histograms this server process observes: due -> PENDING (dispatch) and PENDING ->
RUNNING (start). Per process, as Prometheus expects: sum them across replicas when querying."""

from __future__ import annotations

import bisect
import datetime as dt
import threading
import time
from typing import Any

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class _Histogram:
    """One histogram by pool, counted in plain Python: what ``prometheus_client.Histogram`` counts
    (a bucket per upper bound, ``le`` inclusive; the sum; when each pool's series began), without
    loading ``prometheus_client`` until a scrape asks for it."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name, self.documentation = name, documentation
        self.pools: dict[str, tuple[list[int], list[float]]] = {}  # pool -> (bucket counts, [sum, created])

    def observe(self, pool: str, value: float) -> None:
        counts, totals = self.pools.get(pool) or self.pools.setdefault(pool, ([0] * (len(BUCKETS) + 1),
                                                                              [0.0, time.time()]))
        counts[bisect.bisect_left(BUCKETS, value)] += 1  # the first bound >= value; past the last: +Inf
        totals[0] += value

    def metric(self, created: bool) -> Any:
        from prometheus_client.metrics_core import Metric
        from prometheus_client.utils import floatToGoString

        metric = Metric(self.name, self.documentation, "histogram")
        for pool, (counts, (total, began)) in self.pools.items():  # first seen first, as prometheus_client
            cumulative = 0
            for bound, count in zip((*BUCKETS, float("inf")), counts, strict=True):
                cumulative += count
                metric.add_sample(f"{self.name}_bucket", {"pool": pool, "le": floatToGoString(bound)}, cumulative)
            metric.add_sample(f"{self.name}_count", {"pool": pool}, cumulative)
            metric.add_sample(f"{self.name}_sum", {"pool": pool}, total)
            if created:
                metric.add_sample(f"{self.name}_created", {"pool": pool}, began)
        return metric


class Latencies:
    """Observed on every claim and start, so counted here in plain Python under one lock;
    ``prometheus_client`` (~60 ms and a few MB, with the ``wsgiref`` it pulls in) is loaded by the
    first scrape of ``/metrics`` only, not by a server's start nor by its first claim. The scrape
    reads the same series ``prometheus_client.Histogram`` would have written."""

    def __init__(self) -> None:
        self._dispatch = _Histogram("orch_dispatch_latency_seconds", "Time from a run being due to PENDING (claimed)")
        self._start = _Histogram("orch_start_latency_seconds", "Time from PENDING to RUNNING")
        self._lock = threading.Lock()

    def claimed(self, pool: str | None, due: dt.datetime, claimed_at: dt.datetime) -> None:
        with self._lock:
            self._dispatch.observe(pool or "", max(0.0, (claimed_at - due).total_seconds()))

    def started(self, pool: str | None, pending_at: dt.datetime, running_at: dt.datetime) -> None:
        with self._lock:
            self._start.observe(pool or "", max(0.0, (running_at - pending_at).total_seconds()))

    def collectors(self) -> Any:
        """A collector of both histograms as they are now (what ``generate_latest`` takes)."""
        from prometheus_client import metrics

        created = metrics._use_created  # ``PROMETHEUS_DISABLE_CREATED_SERIES``, as Histogram honours it
        with self._lock:
            snapshot = [self._dispatch.metric(created), self._start.metric(created)]
        return _Snapshot(snapshot)


class _Snapshot:
    def __init__(self, metrics: list[Any]) -> None:
        self._metrics = metrics

    def collect(self) -> list[Any]:
        return self._metrics
