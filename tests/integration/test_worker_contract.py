"""The contract every worker kind keeps, one suite over the process, Docker and Kubernetes workers
on their real infrastructure (a subprocess on this host, a container on the testenv's Docker
engine, a Job on its Kubernetes API server): claim -> run -> COMPLETED; a raising flow FAILED; an
exit without a final state CRASHED with the exit code and the last output; a cancel CANCELLED with
the infrastructure gone; and a restarted worker settling what its previous life left behind.

What only one kind does (OOM kills, image pull policies, pod pending reasons, watches resumed...)
stays in ``test_<kind>_worker.py``. Each kind's services are asked for only by its own tests, so a
machine without Docker or Kubernetes runs the process worker's part and skips the rest (fails under
``CI``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.containers import PYTHON_IMAGE, REPO, container_volumes
from tests.worker_runs import deploy, log_text, new_run, running_handle, wait_for, wait_state
from workers.base import BaseWorker
from workers.registry import worker_class

pytest_plugins = ["tests.worker_runs", "tests.containers", "tests.kube_cluster"]
pytestmark = pytest.mark.integration


class Kind:
    """One worker kind under the contract: its pool, its worker, and what the test can see of its
    infrastructure."""

    name: str
    # Does a cancel delete the infrastructure (a Job) or only stop it (a container stays, exited)?
    cancel_removes = False
    # Job variables of the run a restarted worker adopts (Docker: its auto_remove must be honoured).
    adopt_variables: dict[str, Any] = {}

    def __init__(self, api: Any, flow_dir: Path, variables: dict[str, Any], template: dict[str, Any] | None = None,
                 **worker_options: Any) -> None:
        from orchestrator import schemas

        self.api = api
        self.client = api.client()
        self.flow_dir = flow_dir
        self.variables = {"stream_output": False, **variables}
        self.worker_options = worker_options
        self.pool = f"{self.name}-{uuid.uuid4().hex[:8]}"
        self.client.create_work_pool(schemas.WorkPoolCreate(name=self.pool, type=self.name,
                                                            base_job_template=template))

    def worker(self, name: str = "contract", **kwargs: Any) -> BaseWorker:
        return worker_class(self.name)(self.client, pool=self.pool, name=name, api_url=self.api.url,
                                       **self.worker_options, **kwargs)

    def run(self, function: str, parameters: dict[str, Any] | None = None, **variables: Any) -> Any:
        deployment = deploy(self.client, self.pool, self.flow_dir, function, self.variables)
        return new_run(self.client, deployment, parameters=parameters or {}, job_variables=variables)

    def exists(self, run_id: uuid.UUID) -> bool:
        """Is any infrastructure of the run left (running or not)?"""
        raise NotImplementedError

    def stopped(self, run_id: uuid.UUID, handle: Any) -> bool:
        """Has everything the run's infrastructure ran come to an end (after a cancel)?"""
        raise NotImplementedError

    def exited(self, run_id: uuid.UUID) -> bool:
        """Has the run's infrastructure exited by itself (and is it still there to be found)?"""
        raise NotImplementedError

    def close(self) -> None:
        pass


class ProcessKind(Kind):
    name = "process"

    def stopped(self, run_id: uuid.UUID, handle: Any) -> bool:
        if handle.process.poll() is None:
            return False
        try:
            os.killpg(handle.process.pid, 0)  # the run's own session: anything it started is in it
        except ProcessLookupError:
            return True
        return False


class DockerKind(Kind):
    name = "docker"
    adopt_variables = {"auto_remove": True}

    def __init__(self, api: Any, flow_dir: Path, docker: Any, venv: Path) -> None:
        self.docker = docker
        super().__init__(api, flow_dir, {
            "image": PYTHON_IMAGE, "command": [str(venv / "bin" / "python"), "-m", "orchestrator.engine"],
            "volumes": container_volumes(venv, flow_dir),
            "network_mode": "host",  # the API listens on the host's 127.0.0.1
            "image_pull_policy": "IfNotPresent"}, docker_client=docker)

    def containers(self, run_id: uuid.UUID | None = None) -> list[Any]:
        from workers.docker import LABEL_POOL, LABEL_RUN

        labels = [f"{LABEL_POOL}={self.pool}"] + ([f"{LABEL_RUN}={run_id}"] if run_id else [])
        return list(self.docker.containers.list(all=True, filters={"label": labels}))

    def exists(self, run_id: uuid.UUID) -> bool:
        return bool(self.containers(run_id))

    def stopped(self, run_id: uuid.UUID, handle: Any) -> bool:
        return all(c.status == "exited" for c in self.containers(run_id))

    def exited(self, run_id: uuid.UUID) -> bool:
        return [c.status for c in self.containers(run_id)] == ["exited"]

    def close(self) -> None:
        for container in self.containers():
            container.remove(force=True)


class KubernetesKind(Kind):
    name = "kubernetes"
    cancel_removes = True

    def __init__(self, api: Any, flow_dir: Path, ns: Any) -> None:
        from job_templates.render import default_template

        self.ns = ns
        template = default_template("kubernetes")
        template["variables"]["properties"]["namespace"]["default"] = ns.name  # where ``recover`` looks
        # The stand-in kubelet runs the pod's command on this host.
        super().__init__(api, flow_dir, {"command": [sys.executable, "-m", "orchestrator.engine"],
                                         "image": "ignored-by-the-stand-in-kubelet:1"}, template,
                         kubeconfig=str(ns.worker_kubeconfig))

    def _selector(self, run_id: uuid.UUID) -> str:
        from job_templates.kubernetes import LABEL_RUN

        return f"{LABEL_RUN}={run_id}"

    def exists(self, run_id: uuid.UUID) -> bool:
        return bool(self.ns.batch.list_namespaced_job(self.ns.name, label_selector=self._selector(run_id)).items)

    def stopped(self, run_id: uuid.UUID, handle: Any) -> bool:
        pods = self.ns.core.list_namespaced_pod(self.ns.name, label_selector=self._selector(run_id)).items
        return not self.exists(run_id) and not pods

    def exited(self, run_id: uuid.UUID) -> bool:
        pods = self.ns.core.list_namespaced_pod(self.ns.name, label_selector=self._selector(run_id)).items
        return self.exists(run_id) and [p.status.phase for p in pods] == ["Failed"]


@pytest.fixture(params=["process", "docker", "kubernetes"])
def kind(request: pytest.FixtureRequest, worker_api: Any, flow_dir: Path) -> Any:
    """Each kind asks for its own services here, so only its own tests skip when they are missing."""
    if request.param == "process":
        setup: Kind = ProcessKind(worker_api, flow_dir, {}, prewarm=False)
    elif request.param == "docker":
        setup = DockerKind(worker_api, flow_dir, request.getfixturevalue("docker_client"),
                           request.getfixturevalue("container_venv"))
    else:
        setup = KubernetesKind(worker_api, flow_dir, request.getfixturevalue("kube_namespace"))
    yield setup
    setup.close()


# A process worker leaves nothing to recover: its flow-run processes report for themselves and the
# reaper ends the runs of those that die unheard (tests/integration/test_reaper.py, tests/faults).
leaving_infrastructure = pytest.mark.parametrize("kind", ["docker", "kubernetes"], indirect=True)


def test_a_claimed_run_completes_and_its_output_reaches_the_api(kind: Kind) -> None:
    run = kind.run("hello", {"name": kind.name})

    kind.worker().handle(run.id)

    done = kind.client.read_flow_run(run.id)
    assert done.state.type == "COMPLETED", done.state
    assert done.result == f"hi {kind.name}"
    assert done.worker_name == "contract"
    assert (done.infrastructure_id or "").startswith(f"{kind.name}:")
    assert f"hello {kind.name} host=" in log_text(kind.client, run.id)  # printed by the flow


def test_a_raising_flow_fails_the_run(kind: Kind) -> None:
    run = kind.run("boom")

    kind.worker().handle(run.id)

    done = kind.client.read_flow_run(run.id)
    assert done.state.type == "FAILED"
    assert "ValueError: boom on purpose" in (done.state.message or "")


def test_an_exit_without_a_final_state_crashes_the_run_with_the_exit_code_and_last_output(kind: Kind) -> None:
    run = kind.run("exit_code", {"code": 7})

    kind.worker().handle(run.id)

    done = kind.client.read_flow_run(run.id)
    assert done.state.type == "CRASHED"
    assert "exited with code 7" in (done.state.message or "")
    assert "leaving without a word" in (done.state.message or "")  # what the flow printed last


def test_a_cancel_stops_the_infrastructure_politely_and_cancels_the_run(kind: Kind) -> None:
    run = kind.run("sleepy", {"seconds": 120})
    worker = kind.worker(cancel_grace_seconds=30)
    thread = threading.Thread(target=worker.handle, args=(run.id,))
    thread.start()
    handle = running_handle(worker, run.id)
    wait_state(kind.client, run.id, "RUNNING")

    worker.start_heartbeat()  # and the cancellation channel, which the API pushes the request into
    try:
        started = time.monotonic()
        kind.client.cancel_flow_run(run.id)
        thread.join(timeout=60)
    finally:
        worker.stop()

    assert not thread.is_alive()
    assert kind.client.read_flow_run(run.id).state.type == "CANCELLED"
    wait_for("the run's infrastructure to be gone", lambda: kind.stopped(run.id, handle))
    assert time.monotonic() - started < 20  # SIGTERM sufficed: no SIGKILL after the 30 s grace


WORKER_SCRIPT = """
import json, sys, threading, uuid
from orchestrator.client import Client
from workers.registry import worker_class

kind, api_url, pool, options, *run_ids = sys.argv[1:]
worker = worker_class(kind)(Client(api_url), pool=pool, name="restartable", api_url=api_url, **json.loads(options))
threads = [threading.Thread(target=worker.handle, args=(uuid.UUID(r),)) for r in run_ids]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


@leaving_infrastructure
def test_a_restarted_worker_adopts_settles_and_cleans_up_what_its_previous_life_left(kind: Kind) -> None:
    finishes = kind.run("sleepy", {"seconds": 12}, **kind.adopt_variables)
    cancelled = kind.run("sleepy", {"seconds": 300})
    exits = kind.run("exit_code", {"code": 3, "delay": 3})
    options = {"kubeconfig": kind.worker_options["kubeconfig"]} if "kubeconfig" in kind.worker_options else {}
    # A worker in its own process starts the three runs, then dies without a chance to clean up.
    process = subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, kind.name, kind.api.url, kind.pool,
                                json.dumps(options), str(finishes.id), str(cancelled.id), str(exits.id)],
                               cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        for run in (finishes, cancelled, exits):
            wait_state(kind.client, run.id, "RUNNING")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    wait_for("the exiting run's infrastructure to exit", lambda: kind.exited(exits.id), timeout=60)
    kind.client.cancel_flow_run(cancelled.id)  # nobody is there to carry it out
    assert kind.client.read_flow_run(exits.id).state.type == "RUNNING"  # nobody noticed the exit

    recovery = kind.worker("restartable").recover()

    assert recovery.adopted == [finishes.id]  # running, run live
    assert sorted(recovery.finished) == sorted([cancelled.id, exits.id])  # a cancel carried out; an exit seen
    assert recovery.cleaned == []
    for thread in recovery.threads:
        thread.join(timeout=60)
    assert kind.client.read_flow_run(finishes.id).state.type == "COMPLETED"
    if kind.adopt_variables.get("auto_remove"):
        assert not kind.exists(finishes.id)  # honoured by the adopter
    assert kind.client.read_flow_run(cancelled.id).state.type == "CANCELLED"
    wait_for("the cancelled run's infrastructure to stop", lambda: kind.stopped(cancelled.id, None))
    crashed = kind.client.read_flow_run(exits.id)
    assert crashed.state.type == "CRASHED" and "exited with code 3" in crashed.state.message
    # Restarted again: what is left belongs to final runs; it is cleaned up, nothing adopted or settled.
    again = kind.worker("restartable").recover()
    assert again.adopted == [] and again.finished == []
    assert sorted(again.cleaned) == sorted(r.id for r in (finishes, cancelled, exits) if kind.exists(r.id))
    assert exits.id in again.cleaned and (cancelled.id in again.cleaned) is not kind.cancel_removes


@leaving_infrastructure
def test_a_restarted_worker_leaves_another_workers_infrastructure_alone(kind: Kind) -> None:
    run = kind.run("hello")
    kind.worker("someone-else").handle(run.id)
    assert kind.exists(run.id)

    recovery = kind.worker("contract").recover()

    assert (recovery.adopted, recovery.finished, recovery.cleaned) == ([], [], [])
    assert kind.worker("someone-else").recover().cleaned == [run.id]  # while its own worker finds it
