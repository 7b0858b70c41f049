"""``CeleryBroker`` loads celery/kombu at its first use, not when built: the API server builds one at
start and an idle server never needs them; publishing on Redis, or on an embedded broker whose
tables exist, never needs them (pools/publish.py). Run in a fresh interpreter (this one has celery
loaded)."""

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


DIRECT = r"""
import json, sys, uuid
from pools.broker import CeleryBroker

broker = CeleryBroker(sys.argv[1])
ids = [uuid.uuid4() for _ in range(5)]
for run_id in ids:
    broker.publish("orch/pool/direct/default", run_id)
loaded = "celery" in sys.modules
received = broker.drain("orch/pool/direct/default", timeout=5)
broker.close()
print(json.dumps({"celery_loaded_by_publishing": loaded, "sent": list(map(str, ids)),
                  "received": list(map(str, received))}))
"""


def _publish_directly(url: str) -> dict[str, object]:
    result = subprocess.run([sys.executable, "-c", DIRECT, url], cwd=REPO, capture_output=True, text=True,
                            timeout=90, check=False)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.splitlines()[-1]))


def test_publishing_to_redis_never_loads_celery(redis_url: str) -> None:
    # pools/publish.py: the control plane's publish is one LPUSH; Celery reads it all the same.
    report = _publish_directly(redis_url)

    assert report["celery_loaded_by_publishing"] is False
    assert report["received"] == report["sent"]


def test_publishing_to_the_embedded_broker_needs_celery_only_to_create_its_tables(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    first = _publish_directly(url)  # a new file: the first message creates kombu's tables through Celery
    again = _publish_directly(url)  # the tables exist: every message is one INSERT

    assert first["celery_loaded_by_publishing"] is True
    assert again["celery_loaded_by_publishing"] is False
    assert first["received"] == first["sent"]
    assert again["received"] == again["sent"]
