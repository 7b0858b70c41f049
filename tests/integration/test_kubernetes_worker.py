"""The Kubernetes worker on the real Kubernetes 1.20 API server of ../shared/testenv, end to end:
a live API, a kubernetes work pool, ``worker.handle(run_id)`` claiming the run and creating a
batch/v1 Job with credentials of a ServiceAccount bound to exactly the Role docs/workers.md asks
for, and the stand-in kubelet running the pod's command -- this host's
``python -m orchestrator.engine`` -- which reports states and logs back to the API.

The stand-in kubelet pulls no images and enforces no memory limit, so ImagePullBackOff, OOMKilled
and Evicted are produced the way a kubelet reports them: by writing the pod's status through the
API server, for a pod bound to a node no kubelet runs (the test plays that node's kubelet)."""

from __future__ import annotations

import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest

from job_templates.kubernetes import LABEL_RUN, LABEL_WORKER
from job_templates.render import default_template
from tests.kube_cluster import KubeNamespace, PodEventClock, expire_resource_version, kubeconfig_via
from tests.tcp_proxy import TcpProxy
from tests.worker_runs import deploy, log_text, new_run, running_handle, wait_for, wait_state
from workers.kubernetes import KubernetesWorker

pytest_plugins = ["tests.worker_runs", "tests.kube_cluster"]

pytestmark = pytest.mark.integration
ENGINE = [sys.executable, "-m", "orchestrator.engine"]  # the stand-in kubelet runs it on this host


class KubeSetup:
    def __init__(self, api: Any, ns: KubeNamespace, flow_dir: Path) -> None:
        self.api = api
        self.ns = ns
        self.client = api.client()
        self.flow_dir = flow_dir
        self.pool = self.new_pool()
        self.variables: dict[str, Any] = {"command": ENGINE, "stream_output": False,
                                          "image": "ignored-by-the-stand-in-kubelet:1"}

    def new_pool(self, template: dict[str, Any] | None = None) -> str:
        """A pool whose template's namespace is the test's (``recover`` looks there by default)."""
        from orchestrator import schemas

        template = template or default_template("kubernetes")
        template["variables"]["properties"]["namespace"]["default"] = self.ns.name
        name = f"k8s-{uuid.uuid4().hex[:8]}"
        self.client.create_work_pool(schemas.WorkPoolCreate(name=name, type="kubernetes", base_job_template=template))
        return name

    def worker(self, name: str = "k8s-test", pool: str | None = None, **kwargs: Any) -> KubernetesWorker:
        kwargs.setdefault("kubeconfig", str(self.ns.worker_kubeconfig))
        return KubernetesWorker(self.client, pool=pool or self.pool, name=name, api_url=self.api.url, **kwargs)

    def run(self, function: str, parameters: dict[str, Any] | None = None, pool: str | None = None,
            **variables: Any) -> Any:
        deployment = deploy(self.client, pool or self.pool, self.flow_dir, function, self.variables)
        return new_run(self.client, deployment, parameters=parameters or {}, job_variables=variables)

    def jobs(self, run_id: uuid.UUID) -> list[Any]:
        return list(self.ns.batch.list_namespaced_job(self.ns.name, label_selector=f"{LABEL_RUN}={run_id}").items)

    def pods(self, run_id: uuid.UUID) -> list[Any]:
        return list(self.ns.core.list_namespaced_pod(self.ns.name, label_selector=f"{LABEL_RUN}={run_id}").items)


@pytest.fixture
def setup(worker_api: Any, kube_namespace: KubeNamespace, flow_dir: Path) -> KubeSetup:
    return KubeSetup(worker_api, kube_namespace, flow_dir)


def in_thread(worker: KubernetesWorker, run_id: uuid.UUID) -> threading.Thread:
    thread = threading.Thread(target=worker.handle, args=(run_id,))
    thread.start()
    return thread


def test_run_completes_in_a_job_and_its_output_reaches_the_api(setup: KubeSetup) -> None:
    run = setup.run("hello", {"name": "k8s"}, labels={"team": "data"}, env={"EXTRA": "1"},
                    cpu_request="100m", memory_limit="256Mi", ttl_seconds_after_finished=600)

    setup.worker().handle(run.id)

    done = setup.client.read_flow_run(run.id)
    assert done.state.type == "COMPLETED", done.state
    assert done.result == "hi k8s"
    [job] = setup.jobs(run.id)
    [pod] = setup.pods(run.id)
    assert done.infrastructure_id == f"kubernetes:{setup.ns.name}:{job.metadata.name}"
    logs = log_text(setup.client, run.id)
    assert f"hello k8s host={pod.metadata.name} " in logs  # printed in the pod
    assert f"InfrastructurePending: Job {setup.ns.name}/{job.metadata.name} created" in logs
    assert f"pod {pod.metadata.name} is running on node fake-node" in logs
    assert job.metadata.labels["team"] == "data" and job.metadata.labels[LABEL_WORKER] == "k8s-test"
    assert job.spec.backoff_limit == 0 and job.spec.ttl_seconds_after_finished == 600
    container = job.spec.template.spec.containers[0]
    assert container.args == ENGINE
    assert container.resources.requests == {"cpu": "100m"} and container.resources.limits == {"memory": "256Mi"}
    env = {e.name: e.value for e in container.env}
    assert env["EXTRA"] == "1" and env["ORCH_FLOW_RUN_ID"] == str(run.id) and env["ORCH_API_URL"] == setup.api.url


def test_stream_output_echoes_the_pods_output_in_the_worker_console(
        setup: KubeSetup, capsys: pytest.CaptureFixture[str]) -> None:
    run = setup.run("hello", {"name": "console"}, stream_output=True)

    setup.worker().handle(run.id)

    [job] = setup.jobs(run.id)
    assert f"{job.metadata.name} | hello console host=" in capsys.readouterr().out


def test_deadline_exceeded_crashes_the_run_with_the_reason(setup: KubeSetup) -> None:
    run = setup.run("sleepy", {"seconds": 60}, active_deadline_seconds=2)

    setup.worker().handle(run.id)

    done = setup.client.read_flow_run(run.id)
    assert done.state.type == "CRASHED"
    assert "DeadlineExceeded" in done.state.message


def node_template(timeout: float = 300) -> dict[str, Any]:
    """A pool that replaces the default manifest: its pods go to node 'test-kubelet', which no
    kubelet runs (the tests below speak for it)."""
    template = default_template("kubernetes")
    template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["nodeName"] = "test-kubelet"
    template["variables"]["properties"]["pod_watch_timeout_seconds"]["default"] = timeout
    return template


def test_a_pod_that_never_runs_crashes_the_run_after_pod_watch_timeout(setup: KubeSetup) -> None:
    pool = setup.new_pool(node_template(timeout=3))
    run = setup.run("hello", pool=pool)
    started = time.monotonic()

    setup.worker(pool=pool).handle(run.id)

    done = setup.client.read_flow_run(run.id)
    assert done.state.type == "CRASHED"
    assert "pod did not start within 3s" in done.state.message
    assert 3 <= time.monotonic() - started < 20
    assert "InfrastructurePending: pod" in log_text(setup.client, run.id)
    wait_for("the Job to be deleted", lambda: not setup.jobs(run.id))


KUBELET_REPORTS = {
    "ImagePullBackOff": {"phase": "Pending", "containerStatuses": [{
        "name": "flow-run", "ready": False, "restartCount": 0, "image": "x", "imageID": "",
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"'}}}]},
    "OOMKilled": {"phase": "Failed", "containerStatuses": [{
        "name": "flow-run", "ready": False, "restartCount": 0, "image": "x", "imageID": "",
        "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]},
    "Evicted": {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."},
}


@pytest.mark.parametrize("reason", sorted(KUBELET_REPORTS))
def test_kubelet_reported_failures_crash_the_run_with_the_reason(setup: KubeSetup, reason: str) -> None:
    pool = setup.new_pool(node_template())
    run = setup.run("hello", pool=pool)
    worker = setup.worker(pool=pool)
    thread = in_thread(worker, run.id)
    [pod] = wait_for("the Job's pod", lambda: setup.pods(run.id))

    setup.ns.core.patch_namespaced_pod_status(pod.metadata.name, setup.ns.name, {"status": KUBELET_REPORTS[reason]})
    thread.join(timeout=60)

    done = setup.client.read_flow_run(run.id)
    assert done.state.type == "CRASHED"
    assert reason in done.state.message
    if reason == "ImagePullBackOff":  # it would never start: the worker deleted it
        wait_for("the Job to be deleted", lambda: not setup.jobs(run.id))


def test_the_default_service_account_is_refused_with_a_clear_reason(setup: KubeSetup, tmp_path: Path) -> None:
    from tests.kube_cluster import service_account_token, token_kubeconfig

    token = service_account_token(setup.ns.core, setup.ns.name, "default")
    kubeconfig = tmp_path / "default.kubeconfig"
    kubeconfig.write_text(token_kubeconfig(setup.ns.admin, token, setup.ns.name))
    run = setup.run("hello")

    setup.worker(kubeconfig=str(kubeconfig)).handle(run.id)

    done = setup.client.read_flow_run(run.id)
    assert done.state.type == "CRASHED"
    assert f"cannot create the Job in namespace {setup.ns.name}" in done.state.message
    assert "forbidden" in done.state.message


@pytest.fixture
def proxy(setup: KubeSetup, tmp_path: Path) -> Any:
    server = urllib.parse.urlsplit(setup.ns.admin.configuration.host)
    proxy = TcpProxy(server.hostname or "127.0.0.1", server.port or 443)
    proxy.kubeconfig = kubeconfig_via(setup.ns.worker_kubeconfig, f"https://127.0.0.1:{proxy.port}",
                                      tmp_path / "proxied.kubeconfig")
    yield proxy
    proxy.close()


def test_dropped_watch_connections_resume_without_crashing_the_run(setup: KubeSetup, proxy: Any) -> None:
    run = setup.run("sleepy", {"seconds": 6})
    worker = setup.worker(kubeconfig=str(proxy.kubeconfig))
    thread = in_thread(worker, run.id)
    handle = running_handle(worker, run.id)
    wait_state(setup.client, run.id, "RUNNING")
    wait_for("the worker's watch", lambda: handle.running_pod)

    assert proxy.drop_connections() > 0  # the open watch among them
    wait_for("a new watch", lambda: proxy._pairs, timeout=30)
    assert proxy.drop_connections() > 0
    thread.join(timeout=60)

    done = setup.client.read_flow_run(run.id)
    assert done.state.type == "COMPLETED", done.state  # not CRASHED by a lost watch
    assert done.result == "rested"
    assert "CRASHED" not in [s.type for s in setup.client.read_flow_run_states(run.id)]


# Last in the module: on a fresh cluster it waits for the watch cache to age (see expire_resource_version).
@pytest.mark.timeout(240)  # on a fresh cluster, expire_resource_version waits until 76 s after the first test
def test_a_watch_too_old_to_resume_lists_again_without_crashing_the_run(
        setup: KubeSetup, proxy: Any, pod_event_clock: PodEventClock) -> None:
    too_old = expire_resource_version(pod_event_clock)
    run = setup.run("sleepy", {"seconds": 5})
    worker = setup.worker(kubeconfig=str(proxy.kubeconfig))
    thread = in_thread(worker, run.id)
    handle = running_handle(worker, run.id)
    wait_state(setup.client, run.id, "RUNNING")
    wait_for("the worker's watch", lambda: handle.running_pod)

    handle.resource_version = too_old  # as if the watch had been away for long: 410 Gone on resuming
    proxy.drop_connections()
    thread.join(timeout=60)

    assert handle.relists >= 1
    done = setup.client.read_flow_run(run.id)
    assert done.state.type == "COMPLETED", done.state
    assert "CRASHED" not in [s.type for s in setup.client.read_flow_run_states(run.id)]
