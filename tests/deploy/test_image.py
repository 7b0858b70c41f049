"""The container image: built from the Dockerfile FROM local/python:3.11, it is slim, non-root, has
no build tools, a healthcheck and ``orch`` as entrypoint, and serves as server, worker and
flow-run image (a flow run really runs inside the worker container)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, missing_service
from tests.deploy.conftest import DEPLOY_REDIS_URL, ROOT, wait_for

pytestmark = pytest.mark.timeout(900)  # a cold build: wheelhouse (~40 s) + image (~45 s) on 2 cores
ORCH = [sys.executable, "-m", "orchestrator.cli.main"]
SECOND = 1_000_000_000  # docker's healthcheck durations are nanoseconds


def test_build_context_holds_only_the_sources() -> None:
    from docker.utils.build import exclude_paths

    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sent = exclude_paths(str(ROOT), patterns)
    tops = {Path(p).parts[0] for p in sent}
    # the client always sends the Dockerfile and .dockerignore themselves
    assert tops <= {"pyproject.toml", "README.md", "orchestrator", "workers", "pools", "job_templates", "wheelhouse",
                    "Dockerfile", ".dockerignore"}
    assert {"pyproject.toml", "README.md", "orchestrator", "workers", "pools", "job_templates"} <= tops
    assert not [p for p in sent if "__pycache__" in p or p.endswith(".pyc")]


def test_image_is_slim_non_root_with_healthcheck_and_orch_entrypoint(docker_client: Any,
                                                                     orchestrator_image: str) -> None:
    image = docker_client.images.get(orchestrator_image)
    config = image.attrs["Config"]
    assert config["Entrypoint"] == ["orch"]
    assert config["Cmd"] == ["server", "start"]
    assert config["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"][0] == "CMD" and "/health" in " ".join(config["Healthcheck"]["Test"])
    probe = ("import importlib.util as u, os, shutil, json; print(json.dumps({'uid': os.getuid(), "
             "'pip': [m for m in ('pip', 'setuptools', 'wheel') if u.find_spec(m)], "
             "'tools': [t for t in ('gcc', 'cc', 'g++', 'make', 'ld', 'pip', 'pip3') if shutil.which(t)], "
             "'src': os.path.exists('/src'), 'orch': shutil.which('orch')}))")
    output = docker_client.containers.run(orchestrator_image, entrypoint=["python", "-c", probe],
                                          network_mode="none", remove=True)
    facts = json.loads(output)
    assert facts == {"uid": 10001, "pip": [], "tools": [], "src": False, "orch": "/opt/orchestrator/bin/orch"}
    helped = docker_client.containers.run(orchestrator_image, command=["--help"], network_mode="none", remove=True)
    assert b"worker" in helped and b"server" in helped
    base = docker_client.images.get("local/python:3.11").attrs["Size"]
    added = image.attrs["Size"] - base
    print(f"image {image.attrs['Size'] / 1e6:.0f} MB = base {base / 1e6:.0f} MB + {added / 1e6:.0f} MB")
    assert added < 400e6, f"the image adds {added / 1e6:.0f} MB to its base"


@pytest.fixture
def deploy_redis() -> str:
    import redis

    client = redis.Redis.from_url(DEPLOY_REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        missing_service(f"Redis at {DEPLOY_REDIS_URL} ({type(error).__name__})")
    finally:
        client.close()
    return DEPLOY_REDIS_URL


@pytest.fixture
def containers(docker_client: Any) -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for container in made:
        container.remove(force=True)


def _health(container: Any) -> str:
    container.reload()
    return str(container.attrs["State"].get("Health", {}).get("Status", "none"))


def _logs(*containers: Any) -> str:
    return "\n".join(f"--- {c.name}\n{c.logs(tail=40).decode(errors='replace')}" for c in containers)


FAST = {"interval": SECOND // 2, "timeout": 5 * SECOND, "retries": 3, "start_period": 60 * SECOND}


def start_server(docker_client: Any, image: str, database_url: str, broker_url: str, key: str,
                 containers: list[Any]) -> tuple[Any, str]:
    """The image as API server on the host network (so it reaches PostgreSQL and Redis on
    127.0.0.1), healthy by the image's own healthcheck."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    server = docker_client.containers.create(
        image, network_mode="host", name=f"orch-image-server-{port}",
        environment={"ORCH_DATABASE_URL": database_url, "ORCH_BROKER_URL": broker_url, "ORCH_SERVER_HOST": "127.0.0.1",
                     "ORCH_SERVER_PORT": str(port), "ORCH_API_URL": api_url, "ORCH_SERVER_API_KEYS": key},
        healthcheck=FAST)  # the image's own test command, with shorter timings
    containers.append(server)
    server.start()
    wait_for("the server container to be healthy", lambda: _health(server) == "healthy", 90,
             describe=lambda: f"health: {_health(server)}\n{_logs(server)}")
    return server, api_url


def test_image_runs_server_worker_and_flow_run(docker_client: Any, orchestrator_image: str, postgres_url: str,
                                              deploy_redis: str, flows_dir: Path, containers: list[Any]) -> None:
    """Server and process worker as containers, both turning healthy through their healthchecks;
    a flow run then runs inside the worker container, as the image's user."""
    key = uuid.uuid4().hex
    pool = f"image-{uuid.uuid4().hex[:8]}"
    server, api_url = start_server(docker_client, orchestrator_image, postgres_url, deploy_redis, key, containers)
    worker = docker_client.containers.create(
        orchestrator_image, ["worker", "start", "--pool", pool, "--type", "process", "--name", "image-worker"],
        network_mode="host", name=f"orch-image-worker-{pool}",
        environment={"ORCH_API_URL": api_url, "ORCH_API_KEY": key, "ORCH_BROKER_URL": deploy_redis},
        volumes={str(flows_dir): {"bind": str(flows_dir), "mode": "ro"}},
        healthcheck={**FAST, "test": ["CMD", "orch", "worker", "check", "--pool", pool, "--name", "image-worker"]})
    containers.append(worker)
    worker.start()
    wait_for("the worker container to be healthy", lambda: _health(worker) == "healthy", 90,
             describe=lambda: f"health: {_health(worker)}\n{_logs(server, worker)}")

    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(ORCH_API_URL=api_url, ORCH_API_KEY=key, POOL=pool, ORCH_HOME=str(flows_dir / ".home"))
    registered = subprocess.run([sys.executable, "flows.py"], cwd=flows_dir, env=env, capture_output=True,
                                text=True, timeout=60, check=False)
    assert registered.returncode == 0, registered.stderr
    run = subprocess.run([*ORCH, "deployment", "run", "add/sum", "--param", "x=5", "--watch"], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{_logs(server, worker)}"
    assert "COMPLETED" in run.stdout
    wait_for("the flow's output in the worker container's log",
             lambda: "adding 5 + 2 as uid 10001" in worker.logs().decode(errors="replace"), 30,
             describe=lambda: _logs(worker))

    # the worker probe fails, in one line, for a worker that is not there
    missing = worker.exec_run(["orch", "worker", "check", "--pool", pool, "--name", "nobody"])
    assert missing.exit_code == 1
    assert missing.output.decode().strip() == f"Error: worker 'nobody' is not registered in pool '{pool}'"


def test_image_is_the_docker_workers_flow_run_image(docker_client: Any, orchestrator_image: str, postgres_url: str,
                                                   deploy_redis: str, flows_dir: Path, containers: list[Any]) -> None:
    """compose.yaml's docker profile as plain containers: a Docker worker in the image, non-root
    with the socket's group, starts each run as a container of the same image, default command."""
    key = uuid.uuid4().hex
    pool = f"image-docker-{uuid.uuid4().hex[:8]}"
    server, api_url = start_server(docker_client, orchestrator_image, postgres_url, deploy_redis, key, containers)
    socket_gid = os.stat("/var/run/docker.sock").st_gid
    worker = docker_client.containers.create(
        orchestrator_image, ["worker", "start", "--pool", pool, "--type", "docker", "--name", "image-docker"],
        network_mode="host", name=f"orch-image-worker-{pool}", group_add=[str(socket_gid)],
        environment={"ORCH_API_URL": api_url, "ORCH_API_KEY": key, "ORCH_BROKER_URL": deploy_redis},
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
        healthcheck={**FAST, "test": ["CMD", "orch", "worker", "check", "--pool", pool, "--name", "image-docker"]})
    containers.append(worker)
    worker.start()
    wait_for("the docker worker container to be healthy", lambda: _health(worker) == "healthy", 90,
             describe=lambda: f"health: {_health(worker)}\n{_logs(server, worker)}")

    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(ORCH_API_URL=api_url, ORCH_API_KEY=key, ORCH_HOME=str(flows_dir / ".home"))
    job_variables = {"image": orchestrator_image, "image_pull_policy": "Never", "network_mode": "host",
                     "volumes": [f"{flows_dir}:{flows_dir}:ro"], "auto_remove": True}
    deploy = (f"from flows import add; add.deploy(name='in-docker', work_pool_name={pool!r}, "
              f"parameters={{'x': 1}}, job_variables={job_variables!r})")
    registered = subprocess.run([sys.executable, "-c", deploy], cwd=flows_dir, env=env, capture_output=True,
                                text=True, timeout=60, check=False)
    assert registered.returncode == 0, registered.stderr
    run = subprocess.run([*ORCH, "deployment", "run", "add/in-docker", "--param", "x=5", "--watch"], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{_logs(server, worker)}"
    assert "COMPLETED" in run.stdout
    wait_for("the flow's output in the worker's log (streamed from the run's container)",
             lambda: "adding 5 + 2 as uid 10001" in worker.logs().decode(errors="replace"), 30,
             describe=lambda: _logs(worker))
