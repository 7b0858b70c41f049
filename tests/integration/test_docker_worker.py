"""The Docker worker on the real Docker engine of ../shared/testenv, end to end: a live API, a
docker work pool with its default template, ``worker.handle(run_id)`` claiming the run, a
``local/python:3.11`` container running ``python -m orchestrator.engine`` from a bind-mounted venv
with host networking, and the engine inside reporting states and logs back to the API."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.containers import PYTHON_IMAGE, container_volumes
from tests.worker_runs import deploy, log_text, new_run
from workers.docker import LABEL_POOL, LABEL_RUN, LABEL_WORKER, DockerWorker

pytest_plugins = ["tests.worker_runs", "tests.containers"]
pytestmark = pytest.mark.integration


class DockerSetup:
    def __init__(self, api: Any, docker: Any, venv: Path, flow_dir: Path) -> None:
        from orchestrator import schemas

        self.api = api
        self.docker = docker
        self.client = api.client()
        self.flow_dir = flow_dir
        self.pool = f"docker-{uuid.uuid4().hex[:8]}"
        self.client.create_work_pool(schemas.WorkPoolCreate(name=self.pool, type="docker"))
        self.variables: dict[str, Any] = {
            "image": PYTHON_IMAGE,
            "command": [str(venv / "bin" / "python"), "-m", "orchestrator.engine"],
            "volumes": container_volumes(venv, flow_dir),
            "network_mode": "host",  # the API listens on the host's 127.0.0.1
            "image_pull_policy": "IfNotPresent",  # present: must not pull (a pull fails here)
            "stream_output": False,
        }

    def worker(self, name: str = "docker-test", **kwargs: Any) -> DockerWorker:
        return DockerWorker(self.client, pool=self.pool, name=name, api_url=self.api.url, docker_client=self.docker,
                            **kwargs)

    def run(self, function: str, parameters: dict[str, Any] | None = None, **variables: Any) -> Any:
        deployment = deploy(self.client, self.pool, self.flow_dir, function, self.variables)
        return new_run(self.client, deployment, parameters=parameters or {}, job_variables=variables)

    def containers(self, run_id: uuid.UUID | None = None) -> list[Any]:
        labels = [f"{LABEL_POOL}={self.pool}"] + ([f"{LABEL_RUN}={run_id}"] if run_id else [])
        return list(self.docker.containers.list(all=True, filters={"label": labels}))


@pytest.fixture
def setup(worker_api: Any, docker_client: Any, container_venv: Path, flow_dir: Path) -> Any:
    setup = DockerSetup(worker_api, docker_client, container_venv, flow_dir)
    yield setup
    for container in setup.containers():
        container.remove(force=True)


def test_run_completes_in_a_container_and_its_output_reaches_the_api(setup: DockerSetup) -> None:
    run = setup.run("hello", {"name": "docker"}, labels={"team": "data"}, env={"EXTRA": "1"})

    setup.worker().handle(run.id)

    done = setup.client.read_flow_run(run.id)
    assert done.state.type == "COMPLETED", done.state
    assert done.result == "hi docker"
    [container] = setup.containers(run.id)
    assert "hello docker host=" in log_text(setup.client, run.id)
    assert "init=/sbin/docker-init" in log_text(setup.client, run.id)  # printed inside the container
    assert done.infrastructure_id == f"docker:{container.id}"
    assert container.labels["team"] == "data"
    assert container.labels[LABEL_WORKER] == "docker-test"
    assert container.attrs["State"]["ExitCode"] == 0
    assert container.attrs["HostConfig"]["NetworkMode"] == "host"
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert env["EXTRA"] == "1" and env["ORCH_FLOW_RUN_ID"] == str(run.id)


def test_stream_output_echoes_the_containers_output_in_the_worker_console(
        setup: DockerSetup, capsys: pytest.CaptureFixture[str]) -> None:
    run = setup.run("hello", {"name": "console"}, stream_output=True)

    setup.worker().handle(run.id)

    assert f"{run.name} | hello console host=" in capsys.readouterr().out


def test_auto_remove_removes_the_container_after_reading_its_exit(setup: DockerSetup) -> None:
    run = setup.run("hello", auto_remove=True)

    setup.worker().handle(run.id)

    assert setup.client.read_flow_run(run.id).state.type == "COMPLETED"
    assert setup.containers(run.id) == []


@pytest.fixture
def entrypoint_image(docker_client: Any) -> Any:
    """local/python:3.11 with an ENTRYPOINT that would break a bare command (as the project's own
    image has ENTRYPOINT ["orch"]). Built from the local base: no registry."""
    import io

    tag = f"local/orch-entrypoint-test:{uuid.uuid4().hex[:8]}"
    dockerfile = f'FROM {PYTHON_IMAGE}\nENTRYPOINT ["/bin/sh", "-c", "echo not-the-flow; exit 9"]\n'
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    yield tag
    docker_client.images.remove(tag, force=True)


def test_the_images_entrypoint_is_cleared_unless_the_job_names_one(setup: DockerSetup, entrypoint_image: str) -> None:
    plain = setup.run("hello", image=entrypoint_image)
    wrapped = setup.run("hello", image=entrypoint_image,
                        entrypoint=["/bin/sh", "-c", 'echo wrapped-by-entrypoint; exec "$0" "$@"'])

    setup.worker().handle(plain.id)
    setup.worker().handle(wrapped.id)

    assert setup.client.read_flow_run(plain.id).state.type == "COMPLETED"
    assert setup.client.read_flow_run(wrapped.id).state.type == "COMPLETED"
    [container] = setup.containers(wrapped.id)
    assert container.logs().decode().startswith("wrapped-by-entrypoint")


def test_resources_user_and_working_dir_reach_the_container(setup: DockerSetup) -> None:
    run = setup.run("hello", mem_limit="256m", cpus=0.5, user="0:0", working_dir="/tmp")

    setup.worker().handle(run.id)

    assert setup.client.read_flow_run(run.id).state.type == "COMPLETED"
    [container] = setup.containers(run.id)
    host = container.attrs["HostConfig"]
    assert host["Memory"] == 256 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert container.attrs["Config"]["User"] == "0:0"
    assert container.attrs["Config"]["WorkingDir"] == "/tmp"


def test_waiting_outlasts_the_engine_wait_slice(setup: DockerSetup, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    import workers.docker

    monkeypatch.setattr(workers.docker, "WAIT_SLICE_SECONDS", 1)  # each wait request times out: asked again
    run = setup.run("sleepy", {"seconds": 4})

    started = time.monotonic()
    setup.worker().handle(run.id)

    assert setup.client.read_flow_run(run.id).state.type == "COMPLETED"
    assert time.monotonic() - started < 8  # the exit is seen at once, not after a back-off
    assert not [r for r in caplog.records if r.name == "orchestrator.worker.docker" and r.levelname == "WARNING"]


def test_oom_kill_crashes_the_run_with_the_reason(setup: DockerSetup) -> None:
    run = setup.run("hog", {"megabytes": 1024}, mem_limit="160m")

    setup.worker().handle(run.id)

    done = setup.client.read_flow_run(run.id)
    assert done.state.type == "CRASHED"
    assert "OOM" in (done.state.message or ""), done.state.message


def test_image_pull_policy_never_refuses_a_missing_image(setup: DockerSetup) -> None:
    run = setup.run("hello", image="local/not-built-here:1", image_pull_policy="Never")

    setup.worker().handle(run.id)

    done = setup.client.read_flow_run(run.id)
    assert done.state.type == "CRASHED"
    assert "local/not-built-here:1 is not on the Docker engine and image_pull_policy is Never" in done.state.message


def test_image_pull_policy_always_pulls_and_fails_clearly_without_a_registry(setup: DockerSetup) -> None:
    run = setup.run("hello", image_pull_policy="Always")

    setup.worker().handle(run.id)

    done = setup.client.read_flow_run(run.id)
    assert done.state.type == "CRASHED"
    assert f"cannot pull image {PYTHON_IMAGE} (image_pull_policy Always)" in done.state.message
    assert setup.containers(run.id) == []
