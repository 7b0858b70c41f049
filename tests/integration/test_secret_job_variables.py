"""Issue 21, secrets stay secret, on real PostgreSQL: a pool marks variables secret, a deployment
and a run carry secret values, and no API answer that returns them, no recorded event, no run log
line, no worker log line and no UI page shows one in clear -- while the worker's claim has them and
the flow-run process gets them (its result is a digest, so it cannot leak them either)."""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.masking import MASK
from tests.worker_runs import deploy, new_run

pytestmark = pytest.mark.integration

POOL_SECRET = "pool-default-Zq81"
DEPLOYMENT_SECRET = "deployment-db-Xk27"
RUN_SECRET = "run-token-Wm55"
FILE_SECRET = "from-a-file-Pv93"
SECRETS = (POOL_SECRET, DEPLOYMENT_SECRET, RUN_SECRET, FILE_SECRET)

FLOWS_PY = '''\
import hashlib
import os

from orchestrator import flow


@flow
def digest():
    return {key: hashlib.sha256(os.environ.get(key, "").encode()).hexdigest()
            for key in ("API_TOKEN", "DB_PASSWORD", "FROM_FILE", "PLAIN")}


@flow
def leaky():
    pass
'''

TEMPLATE = {
    "job_configuration": {"command": "{{ command }}", "env": {"API_TOKEN": "{{ api_token }}"},
                          "stream_output": True},
    "variables": {"type": "object", "properties": {
        "command": {"type": "string"},
        "api_token": {"type": "string", "secret": True, "default": POOL_SECRET},
        "env": {"type": "object", "default": {},
                "properties": {"DB_PASSWORD": {"type": "string", "format": "password"}},
                "additionalProperties": {"anyOf": [
                    {"type": "string"},
                    {"type": "object", "required": ["secret_ref"],
                     "properties": {"secret_ref": {"type": "object", "required": ["file"]}}}]}},
    }},
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def pg_api(postgres_url: str, tmp_path: Path) -> Iterator[Any]:
    """A live API on PostgreSQL without background services: the test hands the run to the worker."""
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker
    from tests.conftest import live_server

    settings = Settings(home=tmp_path / "home", database_url=postgres_url, api_url="http://unused/api")
    with live_server(settings, broker=MemoryBroker(), run_services=False) as server:
        yield server


def get_text(api: Any, path: str) -> str:
    status, body = api.raw("GET", path)
    assert status == 200, (path, body)
    return body if isinstance(body, str) else json.dumps(body)


def ui_text(api: Any, path: str) -> str:
    try:
        request = urllib.request.Request(api.url.removesuffix("/api") + path, headers={"Accept": "text/html"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()
    except urllib.error.HTTPError as error:
        raise AssertionError(f"UI {path}: {error}") from None


def assert_hidden(where: str, text: str) -> None:
    shown = [secret for secret in SECRETS if secret in text]
    assert not shown, f"{where} shows {shown} in clear"


def test_no_secret_leaves_the_server_in_clear_and_the_worker_still_gets_them(
        pg_api: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator import schemas
    from workers.process import ProcessWorker

    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "flows.py").write_text(FLOWS_PY)
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(FILE_SECRET + "\n")
    client = pg_api.client()
    pool = f"secret-{uuid.uuid4().hex[:8]}"
    created = client.create_work_pool(schemas.WorkPoolCreate(name=pool, type="process", base_job_template=TEMPLATE))
    assert created.base_job_template["variables"]["properties"]["api_token"]["default"] == MASK
    deployment = deploy(client, pool, flows, "digest", {"env": {
        "DB_PASSWORD": DEPLOYMENT_SECRET, "PLAIN": "plain-value", "FROM_FILE": {"secret_ref": {"file": str(secret_file)}}}})
    assert deployment.job_variables["env"]["DB_PASSWORD"] == MASK
    assert deployment.job_variables["env"]["PLAIN"] == "plain-value"  # only what is marked is hidden
    run = new_run(client, deployment, job_variables={"api_token": RUN_SECRET})
    assert run.job_variables == {"api_token": MASK}

    # The claim is the one answer with the values in clear: the worker needs them.
    probe = new_run(client, deployment, job_variables={"api_token": RUN_SECRET})
    status, claim = pg_api.raw("POST", f"/flow_runs/{probe.id}/claim", {"worker_name": "probe", "pool": pool})
    assert status == 200, claim
    assert claim["flow_run"]["job_variables"] == {"api_token": RUN_SECRET}
    assert claim["deployment"]["job_variables"]["env"]["DB_PASSWORD"] == DEPLOYMENT_SECRET
    client.cancel_flow_run(probe.id)

    worker = ProcessWorker(client, pool=pool, name="secret-worker", api_url=pg_api.url, prewarm=False)
    with caplog.at_level(logging.DEBUG):
        try:
            worker.handle(run.id)
            # A run whose process prints a secret and fails: the echo and the crash's reason are scrubbed.
            leaky = new_run(client, deploy(client, pool, flows, "leaky", {}), job_variables={
                "api_token": RUN_SECRET, "command": 'sh -c \'echo "token=$API_TOKEN" >&2; exit 3\''})
            worker.handle(leaky.id)
        finally:
            worker.stop()
    done = client.read_flow_run(run.id)
    assert done.state.type == "COMPLETED", done.state
    assert done.result == {"API_TOKEN": sha(RUN_SECRET), "DB_PASSWORD": sha(DEPLOYMENT_SECRET),
                           "FROM_FILE": sha(FILE_SECRET), "PLAIN": sha("plain-value")}
    crashed = client.read_flow_run(leaky.id)
    assert crashed.state.type == "CRASHED" and f"token={MASK}" in (crashed.state.message or ""), crashed.state

    # Changes keep their secrets out of events and history: a new secret, and a template saved back masked.
    client.update_deployment(deployment.id, schemas.DeploymentUpdate(job_variables={"env": {
        "DB_PASSWORD": "deployment-db-changed-Xk28", "PLAIN": "plain-2"}}))
    shown = client.read_work_pool(pool).base_job_template
    shown["variables"]["properties"]["command"]["description"] = "edited"
    client.update_work_pool(pool, schemas.WorkPoolUpdate(base_job_template=shown))
    status, claim = pg_api.raw("POST", f"/flow_runs/{new_run(client, deployment).id}/claim",
                               {"worker_name": "probe", "pool": pool})
    assert claim["base_job_template"]["variables"]["properties"]["api_token"]["default"] == POOL_SECRET  # kept

    answers = {path: get_text(pg_api, path) for path in (
        "/work_pools", f"/work_pools/{pool}", "/deployments", f"/deployments/{deployment.id}",
        "/deployments/name/digest/test", f"/deployments/{deployment.id}/versions", "/flow_runs",
        f"/flow_runs/{run.id}", f"/flow_runs/{leaky.id}", f"/flow_runs/{run.id}/states",
        f"/flow_runs/{leaky.id}/states", f"/flow_runs/{run.id}/logs", f"/flow_runs/{leaky.id}/logs",
        "/events?limit=1000")}
    for path, text in answers.items():
        assert_hidden(f"GET /api{path}", text)
        assert_hidden(f"GET /api{path}", text.replace("deployment-db-changed-Xk28", DEPLOYMENT_SECRET))
    assert MASK in answers[f"/deployments/{deployment.id}/versions"]
    assert '"deployment.updated"' in answers["/events?limit=1000"] or "orchestrator.deployment.updated" in answers[
        "/events?limit=1000"]
    for path in ("/pools", f"/pools/{pool}", f"/deployments/{deployment.id}", f"/runs/{run.id}", f"/runs/{leaky.id}"):
        assert_hidden(f"UI {path}", ui_text(pg_api, path).replace("deployment-db-changed-Xk28", DEPLOYMENT_SECRET))
    assert_hidden("the worker's log records", caplog.text)
    assert_hidden("the worker's console", capsys.readouterr().out)


def test_the_job_preview_renders_the_deployments_job_with_secrets_masked(api: Any, tmp_path: Path) -> None:
    from orchestrator import schemas

    client = api.client()
    pool = f"preview-{uuid.uuid4().hex[:8]}"
    template = {**TEMPLATE, "job_configuration": {**TEMPLATE["job_configuration"],
                                                  "auth": "Bearer {{ api_token }}", "home": "{{ $HOME }}"}}
    client.create_work_pool(schemas.WorkPoolCreate(name=pool, type="process", base_job_template=template))
    deployment = deploy(client, pool, tmp_path, "digest", {"env": {"DB_PASSWORD": DEPLOYMENT_SECRET, "PLAIN": "p"}})

    status, body = api.raw("GET", f"/deployments/{deployment.id}/job_preview")
    assert status == 200, body
    assert_hidden("the job preview", json.dumps(body))
    assert body["work_pool_name"] == pool and body["work_pool_type"] == "process"
    assert body["job"]["env"] == {"API_TOKEN": MASK, "DB_PASSWORD": MASK, "PLAIN": "p"}
    assert body["job"]["auth"] == f"Bearer {MASK}" and body["job"]["home"] == "${HOME}"
    assert body["job_variables"]["api_token"] == MASK
    assert client.preview_job(deployment.id).job == body["job"]
    status, body = api.raw("GET", f"/deployments/{uuid.uuid4()}/job_preview")
    assert status == 404 and "not found" in body["detail"], body
