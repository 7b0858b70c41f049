"""Issue 21 on the real Kubernetes API server (../shared/testenv): a run's env may name a key of a
Kubernetes Secret (``{"secret_ref": {"name", "key"}}``), which the Job gets as
``valueFrom.secretKeyRef``; a secret job variable rendered into the env goes into a per-run Secret
the Job owns, so the Job's spec never holds a secret value -- and the pod still gets both."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from job_templates.kubernetes import secret_name
from job_templates.render import default_template
from tests.integration.test_kubernetes_worker import ENGINE, KubeSetup
from tests.kube_cluster import KubeNamespace
from tests.worker_runs import wait_for

pytest_plugins = ["tests.worker_runs", "tests.kube_cluster"]
pytestmark = pytest.mark.integration

CLUSTER_SECRET = "in-the-cluster-Hb40"
VARIABLE_SECRET = "job-variable-Rt66"

DIGEST_FLOW = '''

@flow
def digest_env():
    import hashlib
    import os
    return {key: hashlib.sha256(os.environ.get(key, "").encode()).hexdigest() for key in ("DB_PASSWORD", "API_TOKEN")}
'''


@pytest.fixture
def setup(worker_api: Any, kube_namespace: KubeNamespace, flow_dir: Path) -> KubeSetup:
    with (flow_dir / "flows.py").open("a") as flows:
        flows.write(DIGEST_FLOW)
    return KubeSetup(worker_api, kube_namespace, flow_dir)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_secrets_reach_the_pod_as_secret_key_refs_and_never_the_jobs_spec(setup: KubeSetup) -> None:
    ns = setup.ns
    ns.core.create_namespaced_secret(ns.name, {"metadata": {"name": "db"}, "stringData": {"password": CLUSTER_SECRET}})
    template = default_template("kubernetes")
    template["variables"]["properties"]["api_token"] = {"type": "string", "secret": True}
    template["job_configuration"]["env"] = {"API_TOKEN": "Bearer {{ api_token }}"}
    pool = setup.new_pool(template)
    run = setup.run("digest_env", pool=pool, api_token=VARIABLE_SECRET,
                    env={"DB_PASSWORD": {"secret_ref": {"name": "db", "key": "password"}}})

    setup.worker(pool=pool).handle(run.id)

    done = setup.client.read_flow_run(run.id)
    assert done.state.type == "COMPLETED", done.state
    assert done.result == {"DB_PASSWORD": sha(CLUSTER_SECRET), "API_TOKEN": sha(f"Bearer {VARIABLE_SECRET}")}
    [job] = setup.jobs(run.id)
    env = {e.name: e for e in job.spec.template.spec.containers[0].env}
    assert env["DB_PASSWORD"].value is None
    assert env["DB_PASSWORD"].value_from.secret_key_ref.to_dict() == {"name": "db", "key": "password", "optional": None}
    token_ref = env["API_TOKEN"].value_from.secret_key_ref
    assert env["API_TOKEN"].value is None and token_ref.name == secret_name(run.id)
    spec = json.dumps(ns.admin.sanitize_for_serialization(job))
    assert CLUSTER_SECRET not in spec and VARIABLE_SECRET not in spec  # the hand-off is masked too
    owned = ns.core.read_namespaced_secret(secret_name(run.id), ns.name)
    assert [(o.kind, o.uid) for o in owned.metadata.owner_references] == [("Job", job.metadata.uid)]

    # Deleting the Job deletes the run's Secret with it (Kubernetes' garbage collector).
    ns.batch.delete_namespaced_job(job.metadata.name, ns.name, propagation_policy="Foreground")
    wait_for("the run's Secret to go with its Job", lambda: secret_name(run.id) not in {
        s.metadata.name for s in ns.core.list_namespaced_secret(ns.name).items}, 60)


BOOT = "bootstrap-admin-key-Kq72-0123456789"


@pytest.fixture
def keyed_setup(tmp_path: Path, kube_namespace: KubeNamespace, flow_dir: Path) -> Iterator[KubeSetup]:
    """A server that requires API keys, so that every claim hands the run a key of its own."""
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker
    from tests.conftest import live_server

    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'api.db'}",
                        api_url="http://unused/api", server_api_keys=BOOT)
    with live_server(settings, broker=MemoryBroker(), run_services=False) as server:
        setup = KubeSetup.__new__(KubeSetup)  # KubeSetup with a client that carries the admin key
        setup.api, setup.ns, setup.flow_dir = server, kube_namespace, flow_dir
        setup.client = server.client(api_key=BOOT)
        setup.variables = {"command": ENGINE, "stream_output": False, "image": "ignored-by-the-stand-in-kubelet:1"}
        setup.pool = setup.new_pool()
        yield setup


def test_the_runs_own_api_key_reaches_the_pod_from_the_runs_secret_not_the_jobs_spec(keyed_setup: KubeSetup) -> None:
    setup = keyed_setup
    run = setup.run("hello")
    worker = setup.worker()
    worker.handle(run.id)

    # The run reported its states with its key (the server refuses requests without one)...
    assert setup.client.read_flow_run(run.id).state.type == "COMPLETED"
    [job] = setup.jobs(run.id)
    env = {e.name: e for e in job.spec.template.spec.containers[0].env}
    # ...which came from the run's Secret: the Job's spec names it, never holds it.
    assert env["ORCH_API_KEY"].value is None
    assert env["ORCH_API_KEY"].value_from.secret_key_ref.name == secret_name(run.id)
    stored = setup.ns.core.read_namespaced_secret(secret_name(run.id), setup.ns.name).data
    run_key = base64.b64decode(stored[env["ORCH_API_KEY"].value_from.secret_key_ref.key]).decode()
    assert run_key and run_key != BOOT
    assert run_key not in json.dumps(setup.ns.admin.sanitize_for_serialization(job))
