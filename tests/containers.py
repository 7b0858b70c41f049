"""Fixtures for tests whose runs go into containers on the Docker engine of ``../shared/testenv``
(``docker.sh start``): the engine's client once it holds the project's Python image, and a venv of that
image's Python with this project installed, which containers mount beside the source tree. Test
modules load the fixtures with ``pytest_plugins = ["tests.containers"]`` and import the helpers by
name (PYTEST_DONT_REWRITE: a module imported before pytest_plugins registers it could not be
rewritten anyway). Like every real-service fixture they skip locally and fail under ``CI`` when the
engine or the image is missing (``missing_service``).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import docker_engine, missing_service

REPO = Path(__file__).resolve().parents[1]
PYTHON_IMAGE = "local/python:3.11"
# The image's interpreter is Debian's /usr/bin/python3.11, the same file as the host's: a venv made
# with it on the host runs unchanged when bind-mounted at the same path in the container.
IMAGE_PYTHON = "/usr/bin/python3.11"
CACHE = Path(os.environ.get("ORCH_TEST_CACHE", Path.home() / ".cache" / "orchestrator-tests"))


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    import docker

    client = docker_engine(timeout=30)
    try:
        client.images.get(PYTHON_IMAGE)
    except docker.errors.ImageNotFound:
        client.close()
        missing_service(f"image {PYTHON_IMAGE} in the Docker engine (CI's testenv docker.sh builds it)")
    yield client
    client.close()


@pytest.fixture(scope="session")
def container_venv(docker_client: Any) -> Path:
    """A venv of the image's Python with this project installed editable (``make_container_venv``)."""
    return make_container_venv()


def make_container_venv() -> Path:
    """A venv of the image's Python with this project installed editable, made once and cached
    (keyed by pyproject.toml). Containers mount it and the source tree read-only at the same paths
    (``container_volumes``), so they run the code under test without any registry."""
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + str(REPO).encode()).hexdigest()[:12]
    venv = CACHE / f"venv-py311-{key}"
    ready = venv / ".ready"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one maker; parallel sessions wait for it
        if not ready.exists():
            subprocess.run(["rm", "-rf", str(venv)], check=True)
            subprocess.run([IMAGE_PYTHON, "-m", "venv", str(venv)], check=True, timeout=300)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-e", str(REPO)],
                           check=True, timeout=900)
            ready.touch()
    return venv


def container_volumes(venv: Path, *paths: Path) -> list[str]:
    return [f"{p}:{p}:ro" for p in (venv, REPO, *paths)]
