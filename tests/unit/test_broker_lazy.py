"""``CeleryBroker`` loads celery/kombu at its first use, not when built: the API server builds one at
start and an idle server never needs them. Run in a fresh interpreter (this one has celery loaded)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys, threading, uuid
import pools.broker
from pools.broker import CeleryBroker

builds = []
build = pools.broker.celery_app
pools.broker.celery_app = lambda url, **kwargs: builds.append(url) or build(url, **kwargs)
broker = CeleryBroker("memory://")
built = sorted(m for m in ("celery", "kombu") if m in sys.modules)
ids = [uuid.uuid4() for _ in range(8)]
start = threading.Barrier(len(ids))

def publish(run_id):
    start.wait(timeout=30)
    broker.publish("lazy", run_id)

threads = [threading.Thread(target=publish, args=(run_id,)) for run_id in ids]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(timeout=60)
received = broker.drain("lazy", timeout=5)
broker.close()
print(json.dumps({"loaded_when_built": built, "loaded_after_publish": "celery" in sys.modules,
                  "sent": sorted(map(str, ids)), "received": sorted(map(str, received)),
                  "builds": len(builds)}))
"""


def test_celery_is_loaded_at_the_first_publish_and_every_message_arrives() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True,
                            timeout=90, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["loaded_when_built"] == []
    assert report["loaded_after_publish"] is True
    assert report["received"] == report["sent"]
    assert report["builds"] == 1  # concurrent first publishes share one app


def test_close_before_any_use_loads_nothing() -> None:
    script = ("import sys; from pools.broker import CeleryBroker; "
              "CeleryBroker('redis://127.0.0.1:1/0').close(); print('celery' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                            timeout=90, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
