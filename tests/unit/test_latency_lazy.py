"""``prometheus_client`` is not part of a server's start: ``Latencies`` loads it at first use (the
server does it on a thread once it is up). Run in a fresh interpreter."""

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
from prometheus_client import generate_latest
text = generate_latest(latencies.collectors()).decode()
count = [line for line in text.splitlines() if line.startswith("orch_dispatch_latency_seconds_count")]
print(json.dumps({"loaded_when_built": built, "count": count}))
"""


def test_prometheus_is_loaded_at_first_use_once_and_observations_count() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=90,
                            check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["loaded_when_built"] is False
    assert report["count"] == ['orch_dispatch_latency_seconds_count{pool="p"} 4.0']  # one registry for all
