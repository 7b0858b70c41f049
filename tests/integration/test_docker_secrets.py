"""Issue 21 with the real Docker engine: an env value ``{"secret_ref": {"file": PATH}}`` is read by
the Docker worker on its own host when it starts the container; the flow sees the value, while
the API shows only the reference and neither the run's logs nor the worker's lines show the value."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_docker_worker import DockerSetup
from tests.worker_runs import log_text

pytest_plugins = ["tests.worker_runs", "tests.containers"]
pytestmark = pytest.mark.integration

FILE_SECRET = "docker-file-secret-Lm73"
DIGEST_FLOW = '''

@flow
def digest_env():
    import hashlib
    return hashlib.sha256(os.environ.get("DB_PASSWORD", "").encode()).hexdigest()
'''


@pytest.fixture
def docker(worker_api: Any, docker_client: Any, container_venv: Path, flow_dir: Path) -> Iterator[DockerSetup]:
    setup = DockerSetup(worker_api, docker_client, container_venv, flow_dir)
    yield setup
    for container in setup.containers():
        container.remove(force=True)


def test_a_file_reference_is_read_on_the_workers_host_and_never_shown(
        docker: DockerSetup, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    with (docker.flow_dir / "flows.py").open("a") as flows:
        flows.write(DIGEST_FLOW)
    secret = tmp_path / "db-password"
    secret.write_text(FILE_SECRET + "\n")
    reference = {"secret_ref": {"file": str(secret)}}
    run = docker.run("digest_env", env={"DB_PASSWORD": reference}, stream_output=True)

    with caplog.at_level(logging.DEBUG):
        docker.worker().handle(run.id)

    done = docker.client.read_flow_run(run.id)
    assert done.state.type == "COMPLETED", done.state
    assert done.result == hashlib.sha256(FILE_SECRET.encode()).hexdigest()
    assert done.job_variables["env"]["DB_PASSWORD"] == reference  # the reference, not the value
    assert FILE_SECRET not in log_text(docker.client, run.id)
    assert FILE_SECRET not in caplog.text and FILE_SECRET not in capsys.readouterr().out

    missing = docker.run("digest_env", env={"DB_PASSWORD": {"secret_ref": {"file": str(tmp_path / "gone")}}})
    docker.worker().handle(missing.id)
    crashed = docker.client.read_flow_run(missing.id)
    assert crashed.state.type == "CRASHED"
    assert "env DB_PASSWORD: cannot read secret file" in (crashed.state.message or ""), crashed.state
