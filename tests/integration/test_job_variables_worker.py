"""Job variables as Prefect users give them, end to end: a pool whose base job template has a
literal ``env``, a deployment with ``env`` and a dotted ``env.X`` key, a run that unsets one key
with ``null`` -- accepted by the API, and the flow-run process started by a real process worker
sees the merged environment (template < defaults < deployment < run)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.worker_runs import deploy, new_run
from workers.process import ProcessWorker

pytest_plugins = ["tests.worker_runs"]
pytestmark = pytest.mark.integration

FLOWS_PY = '''\
import os

from orchestrator import flow


@flow
def show_env():
    return {key: os.environ.get(key) for key in
            ("FROM_TEMPLATE", "OVER", "DEFAULT", "DEPLOYMENT", "DOTTED", "RUN", "UNSET_BY_RUN", "IMAGE")}
'''

TEMPLATE = {
    "job_configuration": {
        "command": "{{ command }}",
        "env": {"FROM_TEMPLATE": "t", "OVER": "t", "UNSET_BY_RUN": "t", "IMAGE": "{{ image.name }}:{{ image.tag }}"},
        "stream_output": False,
    },
    "variables": {"type": "object", "properties": {
        "command": {"type": "string"},
        "env": {"type": "object", "additionalProperties": {"type": "string"}, "default": {"DEFAULT": "d", "OVER": "d"}},
        "image": {"type": "object", "default": {"name": "python", "tag": "3.11"}},
    }},
}


def test_a_run_sees_the_merged_environment(worker_api: Any, tmp_path: Path) -> None:
    from orchestrator import schemas

    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "flows.py").write_text(FLOWS_PY)
    client = worker_api.client()
    pool = f"literal-env-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(schemas.WorkPoolCreate(name=pool, type="process", base_job_template=TEMPLATE))
    deployment = deploy(client, pool, flows, "show_env", {
        "env": {"DEPLOYMENT": "1", "OVER": "deployment"}, "env.DOTTED": "yes", "image.tag": "3.12"})
    run = new_run(client, deployment, job_variables={"env": {"RUN": "r", "UNSET_BY_RUN": None}})
    worker = ProcessWorker(client, pool=pool, name="env", api_url=worker_api.url, prewarm=False)
    try:
        worker.handle(run.id)
    finally:
        worker.stop()
    done = client.read_flow_run(run.id)
    assert done.state.type == "COMPLETED", done.state
    assert done.result == {"FROM_TEMPLATE": "t", "OVER": "deployment", "DEFAULT": "d", "DEPLOYMENT": "1",
                           "DOTTED": "yes", "RUN": "r", "UNSET_BY_RUN": None, "IMAGE": "python:3.12"}, json.dumps(done.result)
