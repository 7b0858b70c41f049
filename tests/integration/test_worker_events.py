"""Infrastructure events reported by workers (workers/events.py, docs/events.md), on the real
infrastructure of each kind: a subprocess on this host, a container on the testenv's Docker engine,
a Job on its Kubernetes API server. Each test runs a claimed run through ``worker.handle``, waits
(bounded) until the worker's emitter has sent its events, and reads them from the API's database:
the events related to the run, in the order the server stored them."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator.server.db import models as m
from tests.containers import PYTHON_IMAGE
from tests.integration.test_docker_worker import DockerSetup
from tests.integration.test_kubernetes_worker import KUBELET_REPORTS, KubeSetup, node_template
from tests.worker_runs import deploy, new_run, running_handle, wait_for
from workers.base import BaseWorker
from workers.process import ProcessWorker

pytest_plugins = ["tests.worker_runs", "tests.containers", "tests.kube_cluster"]
pytestmark = pytest.mark.integration


def infrastructure_events(api: Any, worker: BaseWorker, run_id: uuid.UUID) -> list[m.Event]:
    """The run's infrastructure events (its own state events left out), once the worker sent them."""
    assert worker.events.flush(10), "the worker's events were not sent within 10 s"
    e, r = m.Event, m.EventResource
    with api.ctx.sessions() as session:
        return list(session.scalars(
            select(e).join(r, r.event_seq == e.seq)
            .where(r.resource_id == f"orchestrator.flow-run.{run_id}", r.role == "flow-run")
            .order_by(e.seq)))


def roles(event: m.Event) -> dict[str, str]:
    return {labels["orchestrator.resource.role"]: labels["orchestrator.resource.id"] for labels in event.related}


def assert_chained(events: list[m.Event]) -> None:
    """Each infrastructure event of a run ``follows`` the one before it."""
    assert [e.follows for e in events] == [None, *(e.id for e in events[:-1])]


# --- process -----------------------------------------------------------------------------------


@pytest.fixture
def process_pool(worker_api: Any) -> str:
    from orchestrator import schemas

    name = f"process-{uuid.uuid4().hex[:8]}"
    worker_api.client().create_work_pool(schemas.WorkPoolCreate(name=name, type="process"))
    return name


def process_worker(api: Any, pool: str) -> ProcessWorker:
    return ProcessWorker(api.client(), pool=pool, name="events-test", api_url=api.url, prewarm=False)


def test_a_process_that_exits_3_reports_started_and_exited_related_to_the_run(
        worker_api: Any, process_pool: str, flow_dir: Path) -> None:
    client = worker_api.client()
    deployment = deploy(client, process_pool, flow_dir, "exit_code", {"stream_output": False})
    run = new_run(client, deployment, parameters={"code": 3}, tags=["nightly"])
    worker = process_worker(worker_api, process_pool)

    worker.handle(run.id)

    assert client.read_flow_run(run.id).state.type == "CRASHED"
    started, exited = infrastructure_events(worker_api, worker, run.id)
    assert [started.event, exited.event] == ["orchestrator.process.started", "orchestrator.process.exited"]
    pid = started.payload["pid"]
    host = os.uname().nodename
    assert started.resource_id == exited.resource_id == f"orchestrator.process.{host}.{pid}"
    assert started.resource["orchestrator.process.pid"] == str(pid)
    assert started.payload["command"][1:] == ["-m", "orchestrator.engine"]
    assert started.payload["working_dir"] == str(flow_dir)
    assert exited.payload == {"pid": pid, "exit_code": 3, "signal": None}
    assert_chained([started, exited])
    pool = client.read_work_pool(process_pool)
    assert roles(exited) == {
        "flow-run": f"orchestrator.flow-run.{run.id}", "flow": f"orchestrator.flow.{deployment.flow_id}",
        "deployment": f"orchestrator.deployment.{deployment.id}", "tag": "orchestrator.tag.nightly",
        "work-pool": f"orchestrator.work-pool.{pool.id}",
        "worker": f"orchestrator.worker.{process_pool}.events-test"}


def test_a_process_killed_by_sigkill_reports_the_signal(worker_api: Any, process_pool: str, flow_dir: Path) -> None:
    client = worker_api.client()
    run = new_run(client, deploy(client, process_pool, flow_dir, "sleepy", {"stream_output": False}))
    worker = process_worker(worker_api, process_pool)
    thread = threading.Thread(target=worker.handle, args=(run.id,))
    thread.start()
    handle = running_handle(worker, run.id)

    os.killpg(handle.process.pid, signal.SIGKILL)
    thread.join(timeout=30)

    assert not thread.is_alive()
    done = client.read_flow_run(run.id)
    assert done.state.type == "CRASHED" and "killed by signal SIGKILL" in done.state.message
    *_, exited = infrastructure_events(worker_api, worker, run.id)
    assert exited.event == "orchestrator.process.exited"
    assert exited.payload == {"pid": handle.process.pid, "exit_code": -9, "signal": "SIGKILL"}


def test_a_stopping_worker_sends_its_last_events_first(worker_api: Any, process_pool: str, flow_dir: Path) -> None:
    client = worker_api.client()
    run = new_run(client, deploy(client, process_pool, flow_dir, "sleepy", {"stream_output": False}))
    worker = process_worker(worker_api, process_pool)
    emitter = worker.events.emitter()
    assert emitter is not None
    emitter.linger_seconds = 600  # nothing would be sent before stop but for stop itself
    handling = threading.Thread(target=worker.handle, args=(run.id,))
    handling.start()
    handle = running_handle(worker, run.id)  # its run goes on: nothing else sends its events
    assert emitter.pending == 1

    worker.stop()  # no flush asked for: stopping sends what is queued

    with worker_api.ctx.sessions() as session:
        names = session.scalars(select(m.Event.event).where(m.Event.event.like("orchestrator.process.%"))).all()
    assert names == ["orchestrator.process.started"]
    assert worker.events.flush(0)  # nothing left, nothing new
    os.killpg(handle.process.pid, signal.SIGKILL)
    handling.join(timeout=30)
    assert not handling.is_alive()


def test_a_worker_whose_last_run_ended_sends_its_events_at_once(worker_api: Any, process_pool: str,
                                                                flow_dir: Path) -> None:
    """Not after the emitter's linger: then the batch, and the API's work on it, would land in the
    way of a run created meanwhile (bench/RESULTS.md, issue 22). While a run is still being handled,
    the events linger to share a POST (the burst's batching)."""
    client = worker_api.client()
    deployment = deploy(client, process_pool, flow_dir, "exit_code", {"stream_output": False})
    worker = process_worker(worker_api, process_pool)
    emitter = worker.events.emitter()
    assert emitter is not None
    emitter.linger_seconds = 600
    run = new_run(client, deployment)

    worker.handle(run.id)  # no flush asked for, no other run: its two events go now

    def stored() -> list[str]:
        with worker_api.ctx.sessions() as session:
            return list(session.scalars(select(m.Event.event).where(m.Event.event.like("orchestrator.process.%"))))

    assert sorted(wait_for("the run's events to be sent", lambda: len(stored()) == 2 and stored(), 30, 0.05)) == [
        "orchestrator.process.exited", "orchestrator.process.started"]
    worker.stop()


def test_the_worker_resource_id_is_the_servers() -> None:
    from orchestrator.server.services.emitted import worker_resource_id as servers
    from workers.events import worker_resource_id

    assert worker_resource_id("pool-a", "w-1") == servers("pool-a", "w-1")


# --- Docker ------------------------------------------------------------------------------------


@pytest.fixture
def docker_setup(worker_api: Any, docker_client: Any, container_venv: Path, flow_dir: Path) -> Any:
    setup = DockerSetup(worker_api, docker_client, container_venv, flow_dir)
    yield setup
    for container in setup.containers():
        container.remove(force=True)


def test_a_container_that_exits_3_reports_created_started_exited(docker_setup: DockerSetup) -> None:
    run = docker_setup.run("exit_code", {"code": 3})
    worker = docker_setup.worker()

    worker.handle(run.id)

    assert docker_setup.client.read_flow_run(run.id).state.type == "CRASHED"
    [container] = docker_setup.containers(run.id)
    events = infrastructure_events(docker_setup.api, worker, run.id)
    assert [e.event for e in events] == ["orchestrator.docker.container.created", "orchestrator.docker.container.started",
                                         "orchestrator.docker.container.exited"]
    assert {e.resource_id for e in events} == {f"orchestrator.docker.container.{container.id}"}
    assert events[0].resource["orchestrator.resource.name"] == container.name
    assert events[0].resource["orchestrator.docker.image"] == PYTHON_IMAGE
    assert events[2].payload["exit_code"] == 3 and events[2].payload["oom_killed"] is False
    assert_chained(events)
    assert roles(events[2])["worker"] == f"orchestrator.worker.{docker_setup.pool}.docker-test"


def test_an_oom_killed_container_reports_it_and_the_run_crashes_with_the_reason(docker_setup: DockerSetup) -> None:
    run = docker_setup.run("hog", {"megabytes": 1024}, mem_limit="160m")
    worker = docker_setup.worker()

    worker.handle(run.id)

    done = docker_setup.client.read_flow_run(run.id)
    assert done.state.type == "CRASHED" and "OOM-killed" in done.state.message
    *_, exited, oom = infrastructure_events(docker_setup.api, worker, run.id)
    assert exited.event == "orchestrator.docker.container.exited" and exited.payload["oom_killed"] is True
    assert oom.event == "orchestrator.docker.container.oom-killed"
    assert oom.payload == {"exit_code": exited.payload["exit_code"], "memory_limit": 160 * 1024 * 1024}
    assert oom.follows == exited.id


def test_an_image_that_does_not_exist_reports_the_failed_pull(docker_setup: DockerSetup) -> None:
    image = f"local/no-such-image-{uuid.uuid4().hex[:8]}:1"
    run = docker_setup.run("hello", image=image, image_pull_policy="IfNotPresent")
    worker = docker_setup.worker()

    worker.handle(run.id)

    assert docker_setup.client.read_flow_run(run.id).state.type == "CRASHED"
    [failed] = infrastructure_events(docker_setup.api, worker, run.id)
    assert failed.event == "orchestrator.docker.image.pull-failed"
    assert failed.resource_id == f"orchestrator.docker.image.{image}"
    assert failed.payload["image"] == image and failed.payload["image_pull_policy"] == "IfNotPresent"
    assert failed.payload["error"]


# --- Kubernetes --------------------------------------------------------------------------------


@pytest.fixture
def kube_setup(worker_api: Any, kube_namespace: Any, flow_dir: Path) -> KubeSetup:
    return KubeSetup(worker_api, kube_namespace, flow_dir)


def test_a_job_reports_created_and_its_pod_scheduled_running_succeeded(kube_setup: KubeSetup) -> None:
    run = kube_setup.run("hello", {"name": "k8s"})
    worker = kube_setup.worker()

    worker.handle(run.id)

    assert kube_setup.client.read_flow_run(run.id).state.type == "COMPLETED"
    [job] = kube_setup.jobs(run.id)
    [pod] = kube_setup.pods(run.id)
    events = infrastructure_events(kube_setup.api, worker, run.id)
    assert [e.event for e in events] == [
        "orchestrator.kubernetes.job.created", "orchestrator.kubernetes.pod.scheduled",
        "orchestrator.kubernetes.pod.running", "orchestrator.kubernetes.pod.succeeded"]
    ns = kube_setup.ns.name
    assert events[0].resource_id == f"orchestrator.kubernetes.job.{ns}.{job.metadata.name}"
    assert {e.resource_id for e in events[1:]} == {f"orchestrator.kubernetes.pod.{ns}.{pod.metadata.name}"}
    assert events[2].payload == {"node": pod.spec.node_name}
    assert events[3].payload == {"exit_code": 0}
    assert roles(events[3])["kubernetes-job"] == events[0].resource_id
    assert_chained(events)


# What each failure the kubelet reports (tests/integration/test_kubernetes_worker.py) is reported as.
KUBELET_EVENTS = {
    "ImagePullBackOff": ["orchestrator.kubernetes.pod.scheduled", "orchestrator.kubernetes.pod.image-pull-error"],
    "OOMKilled": ["orchestrator.kubernetes.pod.scheduled", "orchestrator.kubernetes.pod.failed",
                  "orchestrator.kubernetes.pod.oom-killed"],
    "Evicted": ["orchestrator.kubernetes.pod.scheduled", "orchestrator.kubernetes.pod.failed",
                "orchestrator.kubernetes.pod.evicted"],
}


@pytest.mark.parametrize("reason", sorted(KUBELET_EVENTS))
def test_kubelet_reported_failures_are_reported_as_events(kube_setup: KubeSetup, reason: str) -> None:
    pool = kube_setup.new_pool(node_template())
    run = kube_setup.run("hello", pool=pool)
    worker = kube_setup.worker(pool=pool)
    thread = threading.Thread(target=worker.handle, args=(run.id,))
    thread.start()
    [pod] = wait_for("the Job's pod", lambda: kube_setup.pods(run.id))

    kube_setup.ns.core.patch_namespaced_pod_status(pod.metadata.name, kube_setup.ns.name,
                                                   {"status": KUBELET_REPORTS[reason]})
    thread.join(timeout=60)

    assert not thread.is_alive()
    assert kube_setup.client.read_flow_run(run.id).state.type == "CRASHED"
    events = infrastructure_events(kube_setup.api, worker, run.id)
    assert [e.event for e in events] == ["orchestrator.kubernetes.job.created", *KUBELET_EVENTS[reason]]
    last = events[-1]
    if reason == "ImagePullBackOff":
        assert last.payload == {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"', "image": "x"}
    elif reason == "OOMKilled":
        assert last.payload == {"exit_code": 137}
    else:
        assert last.payload == {"message": "The node was low on resource: memory."}
