"""compose.yaml: validated by Debian's docker-compose, then brought up on the real Docker engine with
locally built images, running a deployment end to end.

No registry is reachable here, so the ``postgres`` and ``redis`` images compose.yaml names by
default cannot be pulled. The up test runs the same file with POSTGRES_IMAGE / REDIS_IMAGE pointing
at stand-ins built from this machine's own Debian PostgreSQL 15 and Redis 7 binaries
(tests/deploy/standins.py), which keep the official images' interface. Without those binaries the
test cannot run: it skips locally and fails under CI (``missing_service``), never silently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import free_port, missing_service
from tests.deploy.conftest import ROOT, wait_for
from tests.deploy.standins import build_standins, missing_host_files

pytestmark = pytest.mark.timeout(900)
ORCH = [sys.executable, "-m", "orchestrator.cli.main"]


@pytest.fixture(scope="module")
def compose() -> list[str]:
    path = shutil.which("docker-compose")
    if path is None:
        missing_service("docker-compose (Debian package docker-compose; .ci/run installs it)")
    return [path, "--file", str(ROOT / "compose.yaml")]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without this shell's ORCH_* and image settings, which compose.yaml reads."""
    skip = ("ORCH_", "POSTGRES_", "REDIS_", "DOCKER_GID")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env.update(extra)
    return env


def run(command: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT)


def published(service: dict[str, Any]) -> tuple[str, str]:
    """(host address, host port) of a service's first port, in compose v1's short or v2's long form."""
    port = service["ports"][0]
    if isinstance(port, str):
        host_ip, host_port, _ = port.split(":")
        return host_ip, host_port
    return str(port["host_ip"]), str(port["published"])


def test_compose_file_is_valid_with_health_gated_services(compose: list[str]) -> None:
    result = run([*compose, "config"], clean_env())
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {"postgres", "redis", "server", "worker", "docker-worker"}
    for name in services:
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    assert services["server"]["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                                "redis": {"condition": "service_healthy"}}
    assert services["worker"]["depends_on"] == {"server": {"condition": "service_healthy"}}
    assert services["server"]["command"][:2] == ["server", "start"]
    assert published(services["server"]) == ("127.0.0.1", "4300")
    assert services["worker"]["command"][:2] == ["worker", "start"]
    # each container its own name, from its host name, and its healthcheck asks about that same one
    for service, pool in (("worker", "default"), ("docker-worker", "docker")):
        command, probe = services[service]["command"], services[service]["healthcheck"]["test"]
        name = command[command.index("--name") + 1]
        assert "%h" in name, (service, command)
        assert probe[1:] == ["orch", "worker", "check", "--pool", pool, "--name", name], (service, probe)
    env = services["server"]["environment"]
    assert env["ORCH_DATABASE_URL"].startswith("postgresql+psycopg://orchestrator:")
    assert env["ORCH_BROKER_URL"] == "redis://redis:6379/0"
    # the docker worker is optional: only with --profile docker, and it gets the host's socket
    docker_worker = services["docker-worker"]
    assert docker_worker["profiles"] == ["docker"]
    assert "/var/run/docker.sock:/var/run/docker.sock:rw" in docker_worker["volumes"]
    assert docker_worker["command"][:6] == ["worker", "start", "--pool", "docker", "--type", "docker"]
    plain = run([*compose, "config", "--profiles"], clean_env())
    assert plain.stdout.split() == ["docker"]


def test_compose_settings_reach_the_services(compose: list[str]) -> None:
    env = clean_env(ORCH_IMAGE="example/orch:1.2", POSTGRES_PASSWORD="s3cret", ORCH_API_KEYS="k1,k2",
                    ORCH_API_KEY="k1", ORCH_PORT="14300", ORCH_POOL="etl", ORCH_FLOWS_DIR="/srv/flows")
    result = run([*compose, "config"], env)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["server"]["image"] == services["worker"]["image"] == "example/orch:1.2"
    assert services["server"]["environment"]["ORCH_SERVER_API_KEYS"] == "k1,k2"
    assert services["worker"]["environment"]["ORCH_API_KEY"] == "k1"
    assert ":s3cret@postgres:" in services["worker"]["environment"]["ORCH_DATABASE_URL"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cret"
    assert published(services["server"]) == ("127.0.0.1", "14300")
    assert services["worker"]["command"][2:4] == ["--pool", "etl"]
    assert services["worker"]["volumes"][0].startswith("/srv/flows:/flows")


@pytest.fixture
def stack(compose: list[str], docker_client: Any, orchestrator_image: str, flows_dir: Path) -> Iterator[dict[str, Any]]:
    missing = missing_host_files()
    if missing:
        missing_service(f"PostgreSQL/Redis binaries to build the compose stand-in images from ({', '.join(missing)});"
                        " the official images cannot be pulled here")
    images = build_standins(docker_client)
    port = free_port()
    project = f"orchtest{uuid.uuid4().hex[:8]}"
    env = clean_env(ORCH_IMAGE=orchestrator_image, POSTGRES_IMAGE=images["postgres"], REDIS_IMAGE=images["redis"],
                    ORCH_PORT=str(port), ORCH_FLOWS_DIR=str(flows_dir), ORCH_API_KEYS="compose-key-0123456789",
                    ORCH_API_KEY="compose-key-0123456789", COMPOSE_PROJECT_NAME=project)
    info = {"env": env, "port": port, "project": project, "compose": compose, "docker": docker_client}
    try:
        yield info
    finally:
        down = run([*compose, "down", "--volumes", "--remove-orphans", "--timeout", "10"], env, timeout=180)
        assert down.returncode == 0, down.stderr


WORKERS = 3  # the worker service scaled: each container must be a worker of its own


def test_compose_up_runs_a_deployment(stack: dict[str, Any]) -> None:
    compose, env = stack["compose"], stack["env"]
    # returns once the dependencies were healthy
    up = run([*compose, "up", "--detach", "--no-build", "--scale", f"worker={WORKERS}"], env)

    def logs() -> str:
        return run([*compose, "logs", "--tail", "30"], env).stdout

    assert up.returncode == 0, f"{up.stderr}\n{logs()}"

    def containers() -> list[Any]:
        return stack["docker"].containers.list(filters={"label": f"com.docker.compose.project={stack['project']}"})

    def healthy() -> bool:
        status = sorted((c.labels["com.docker.compose.service"], c.attrs["State"].get("Health", {}).get("Status"))
                        for c in containers())
        return status == sorted([(s, "healthy") for s in ("postgres", "redis", "server")]
                                + [("worker", "healthy")] * WORKERS)

    wait_for("every service to be healthy", healthy, 180, interval=1, describe=logs)
    workers = [c for c in containers() if c.labels["com.docker.compose.service"] == "worker"]
    api = clean_env(ORCH_API_URL=f"http://127.0.0.1:{stack['port']}/api", ORCH_API_KEY="compose-key-0123456789")

    def online() -> dict[str, str]:
        from orchestrator.client import Client

        with contextlib.closing(Client(api["ORCH_API_URL"], api_key=api["ORCH_API_KEY"])) as client:
            return {w.name: w.status for w in client.list_workers("default")}

    # one ONLINE worker per container, named after its host name (the container id): none restarted
    names = {f"compose-process-{c.attrs['Config']['Hostname']}" for c in workers}
    assert len(names) == WORKERS
    assert online() == dict.fromkeys(names, "ONLINE"), logs()
    assert [c.attrs["RestartCount"] for c in workers] == [0] * WORKERS, logs()

    # register the deployment from inside the worker, so its path is /flows, where the worker sees it
    registered = run([*compose, "exec", "-T", "worker", "python", "flows.py"], env, timeout=120)
    assert registered.returncode == 0, f"{registered.stdout}\n{registered.stderr}"
    host = clean_env(ORCH_API_URL=f"http://127.0.0.1:{stack['port']}/api", ORCH_API_KEY="compose-key-0123456789")
    result = run([*ORCH, "deployment", "run", "add/sum", "--param", "x=5", "--watch"], host, timeout=120)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{logs()}"
    assert "COMPLETED" in result.stdout
    wait_for("the run's output in the worker's log",
             lambda: "adding 5 + 2 as uid 10001" in run([*compose, "logs", "worker"], env).stdout, 30, describe=logs)
    # A worker's process killed as a crash would kill it: Docker restarts the container, whose worker
    # comes back under its own name (its dropped connection freed the name, or the restart waits the
    # 2 s grace for it), not refused into a restart loop.
    victim = workers[0]
    victim.reload()
    os.kill(victim.attrs["State"]["Pid"], signal.SIGKILL)

    def back() -> bool:
        victim.reload()
        return victim.attrs["RestartCount"] >= 1 and victim.attrs["State"].get("Health", {}).get("Status") == "healthy"

    wait_for("the killed worker's container to be restarted and healthy", back, 120, interval=1, describe=logs)
    assert victim.attrs["RestartCount"] == 1, victim.logs().decode()[-3000:]
    assert "Error: worker name" not in victim.logs().decode()
    assert online() == dict.fromkeys(names, "ONLINE")
    # without the key the API refuses: ORCH_API_KEYS reached the server
    refused = run([*ORCH, "work-pool", "ls"], clean_env(ORCH_API_URL=host["ORCH_API_URL"]))
    assert refused.returncode == 1 and "Error" in refused.stderr
