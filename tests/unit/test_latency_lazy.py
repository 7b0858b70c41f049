"""``prometheus_client`` is not part of a server's start nor of its claims: ``Latencies`` counts in
plain Python and loads it for a scrape only, which reads what ``prometheus_client.Histogram`` would
have written. Run in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import datetime as dt, json, sys, threading
from orchestrator.server.api.latency import Latencies

latencies = Latencies()
built = "prometheus_client" in sys.modules
now = dt.datetime.now(dt.timezone.utc)
start = threading.Barrier(4)
def observe():
    start.wait(timeout=30)
    latencies.claimed("p", now - dt.timedelta(seconds=0.2), now)
threads = [threading.Thread(target=observe) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(timeout=30)
loaded_by_claims = "prometheus_client" in sys.modules
from prometheus_client import generate_latest
text = generate_latest(latencies.collectors()).decode()
count = [line for line in text.splitlines() if line.startswith("orch_dispatch_latency_seconds_count")]
print(json.dumps({"loaded_when_built": built, "loaded_by_claims": loaded_by_claims, "count": count}))
"""


def test_prometheus_is_loaded_by_a_scrape_only_and_observations_count() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=90,
                            check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["loaded_when_built"] is False
    assert report["loaded_by_claims"] is False
    assert report["count"] == ['orch_dispatch_latency_seconds_count{pool="p"} 4.0']  # one registry for all


SAME = r"""
import datetime as dt, json, re
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from orchestrator.server.api.latency import BUCKETS, Latencies

latencies = Latencies()
registry = CollectorRegistry()
reference = [Histogram(name, "", ["pool"], buckets=BUCKETS, registry=registry)
             for name in ("orch_dispatch_latency_seconds", "orch_start_latency_seconds")]
now = dt.datetime.now(dt.timezone.utc)
for pool, seconds in [("b", 0.0), ("a", 0.01), ("b", 0.010001), (None, 5.0), ("a", 1000.0), ("", 0.3), ("a", -1.0)]:
    waited, started = dt.timedelta(seconds=seconds), dt.timedelta(seconds=seconds / 4)  # microseconds
    latencies.claimed(pool, now - waited, now)
    latencies.started(pool, now - started, now)
    reference[0].labels(pool=pool or "").observe(max(0.0, waited.total_seconds()))
    reference[1].labels(pool=pool or "").observe(max(0.0, started.total_seconds()))

def series(text):  # the help texts differ here; the creation instants are the process's own
    return [re.sub(r"_created(.*) .*", r"_created\1", line) for line in text.splitlines() if not line.startswith("#")]

print(json.dumps([series(generate_latest(latencies.collectors()).decode()), series(generate_latest(registry).decode())]))
"""


def test_scrape_reads_what_a_prometheus_histogram_would() -> None:
    result = subprocess.run([sys.executable, "-c", SAME], cwd=REPO, capture_output=True, text=True, timeout=90,
                            check=False)
    assert result.returncode == 0, result.stderr
    ours, reference = json.loads(result.stdout.splitlines()[-1])
    assert len(ours) == 2 * (3 * (len("0123456789abc") + 1 + 3))  # 2 histograms, 3 pools, buckets + count/sum/created
    assert ours == reference
