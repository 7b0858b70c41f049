"""The automations' service and schemas (the triggers' models among them), and what a firing does
(actions, firing), are imported by the first request or trigger pass that needs them: a server with
no automation starts, answers, and passes over events without them (~60 ms of a start's CPU). Once
an automation exists the pass loads them and fires as before (``test_trigger_pass.py`` and the other
trigger tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A server's start up to its first answers, then one trigger pass over an event (the service is
# not started, so the pass below is the only one and sure to have run), in a fresh interpreter;
# then an automation is created and the next pass fires it.
STARTED = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
from fastapi.testclient import TestClient
from orchestrator.server.api.app import create_app
from orchestrator.settings import Settings

app = create_app(Settings(), run_services=False)
evaluator = app.state.triggers.evaluator
with TestClient(app) as client:
    assert client.get("/api/health").status_code == 200
    assert client.get("/api/work_pools").status_code == 200
    assert client.get("/api/deployments").status_code == 200
    assert client.post("/api/events", json=[{"event": "x.happened", "resource": {"orchestrator.resource.id": "r"}}]
                       ).status_code < 300
    work, _ = evaluator.run_pass()
    assert work is not None and work.evaluated == 0
    before = sorted(sys.modules)
    created = client.post("/api/automations", json={
        "name": "a", "trigger": {"type": "event", "expect": ["x.happened"], "posture": "Reactive", "threshold": 1},
        "actions": [{"type": "do-nothing"}]})
    assert created.status_code == 201, created.text
    evaluator.reload()
    assert client.post("/api/events", json=[{"event": "x.happened", "resource": {"orchestrator.resource.id": "r"}}]
                       ).status_code < 300
    work, _ = evaluator.run_pass()
    print(json.dumps({"before": before, "firings": work.firings}))
"""
DEFERRED = ["orchestrator.schemas.automations", "orchestrator.schemas.actions", "orchestrator.schemas.triggers",
            "orchestrator.server.services.automations", "orchestrator.server.triggers.firing",
            "orchestrator.server.triggers.actions"]


def test_a_server_without_automations_has_not_imported_them_and_fires_once_one_exists(
        tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "ORCH_HOME": str(tmp_path),
           "ORCH_DATABASE_URL": postgres_url, "ORCH_BROKER_URL": redis_url}
    done = subprocess.run([sys.executable, "-c", STARTED], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert [m for m in DEFERRED if m in seen["before"]] == []
    assert seen["firings"] == 1


# A deployment's writes (deploy, re-deploy, update, delete) without triggers, by a deployment that
# owns no automation, in a fresh interpreter: none needs the automations' service or models.
DEPLOYED = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
from fastapi.testclient import TestClient
from orchestrator.server.api.app import create_app
from orchestrator.settings import Settings

app = create_app(Settings(), run_services=False)
with TestClient(app) as client:
    assert client.post("/api/work_pools", json={"name": "local", "type": "process"}).status_code == 201
    body = {"flow_name": "etl", "name": "nightly", "entrypoint": "flows.py:etl", "work_pool_name": "local"}
    deployment = client.post("/api/deployments", json=body)
    assert deployment.status_code == 201, deployment.text
    assert client.post("/api/deployments", json={**body, "description": "again", "triggers": []}).status_code == 200
    url = f"/api/deployments/{deployment.json()['id']}"
    assert client.patch(url, json={"triggers": [], "description": "patched"}).status_code == 200
    assert client.post(f"{url}/runs", json={}).status_code == 201
    assert client.delete(url).status_code == 204
    print(json.dumps(sorted(sys.modules)))
"""


def test_deployments_without_triggers_are_written_without_the_automations_service(
        tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "ORCH_HOME": str(tmp_path),
           "ORCH_DATABASE_URL": postgres_url, "ORCH_BROKER_URL": redis_url}
    done = subprocess.run([sys.executable, "-c", DEPLOYED], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [m for m in DEFERRED if m in json.loads(done.stdout.strip().splitlines()[-1])] == []
