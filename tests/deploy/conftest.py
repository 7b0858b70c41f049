"""Fixtures for the deployment artefacts: the image, compose.yaml and the Helm chart.

Real services only: the Docker engine, the Kubernetes API server and helm from ../shared/testenv
(``bash docker.sh start``, ``bash k8s.sh up``, ``bash helm.sh``). A missing one skips locally and
fails under CI, like every service fixture (``missing_service``).

The image is built ``FROM local/python:3.11`` (testenv's image of this machine's Debian Python,
no pip, no registry): its dependencies come from a wheelhouse made on the host with that same
interpreter, ``/usr/bin/python3.11 -m pip wheel``, cached by the hash of pyproject.toml.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REDIS_URL, docker_engine, missing_service
from tests.harness import wait_until

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
TESTENV = Path(os.environ.get("TESTENV_DIR", ROOT.parent / "shared" / "testenv"))
BASE_IMAGE = "local/python:3.11"
HOST_PYTHON = "/usr/bin/python3.11"  # the interpreter local/python:3.11 is made of
CACHE = Path(os.environ.get("ORCH_TEST_CACHE", Path.home() / ".cache" / "orchestrator-tests"))
# Redis database of these tests: the other tests flush db 11 and up (one per xdist worker) while they run.
DEPLOY_REDIS_URL = REDIS_URL.rsplit("/", 1)[0] + "/10"


wait_for = wait_until  # the one bounded wait (tests.harness), by the name these tests use


# --- Docker ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    import docker.errors

    client = docker_engine(timeout=300)
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        client.close()
        missing_service(f"base image {BASE_IMAGE} in the Docker engine (CI's testenv docker.sh builds it)")
    yield client
    client.close()


def _pip_wheels(dest: Path) -> None:
    """Wheels of every dependency (not of the project), of pip and setuptools, for HOST_PYTHON."""
    if not os.access(HOST_PYTHON, os.X_OK):
        missing_service(f"{HOST_PYTHON} (the interpreter of {BASE_IMAGE})")
    commands = [
        [HOST_PYTHON, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(dest), str(ROOT), "tzdata"],
        [HOST_PYTHON, "-m", "pip", "download", "--quiet", "--dest", str(dest), "pip", "setuptools>=68"],
    ]
    for command in commands:
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600, cwd=dest)
        if result.returncode != 0:
            missing_service(f"the package index for the image's wheelhouse ({' '.join(command[:4])}: "
                            f"{result.stderr.strip().splitlines()[-1:]})")
    for wheel in dest.glob("orchestrator-*.whl"):
        wheel.unlink()  # the image installs the project from its sources


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + HOST_PYTHON.encode()).hexdigest()[:16]
    target = CACHE / f"wheelhouse-{digest}"
    if not (target / ".complete").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="wheelhouse-", dir=CACHE))
        _pip_wheels(staging)
        (staging / ".complete").write_text("ok\n")
        try:
            staging.rename(target)
        except OSError:  # another session finished first: use theirs
            shutil.rmtree(staging, ignore_errors=True)
    return target


def image_build_context(wheelhouse: Path, dest: Path) -> Path:
    """The repository as a user's checkout would be (minus .git), plus wheelhouse/; the docker
    client applies .dockerignore to it, as it would to the checkout."""
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".pytest_cache",
                                                              ".ruff_cache", ".benchmarks", "wheelhouse"))
    shutil.copytree(wheelhouse, dest / "wheelhouse", ignore=shutil.ignore_patterns(".complete"))
    return dest


@pytest.fixture(scope="session")
def orchestrator_image(docker_client: Any, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The project's Dockerfile built FROM local/python:3.11, offline (network none), tagged for
    this session. Afterwards the tag and the build's own untagged steps are removed, so sessions
    do not pile up images (a rebuild reinstalls the venv anyway once a source file changed)."""
    import docker.errors

    tag = f"orchestrator:test-{uuid.uuid4().hex[:8]}"
    context = image_build_context(wheelhouse, tmp_path_factory.mktemp("image-context") / "ctx")
    started = time.monotonic()
    try:
        _image, log = docker_client.images.build(path=str(context), tag=tag, buildargs={"BASE_IMAGE": BASE_IMAGE},
                                                 network_mode="none", rm=True, forcerm=True, timeout=600)
    except docker.errors.BuildError as error:
        text = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in error.build_log)
        pytest.fail(f"docker build failed: {error}\n{text[-4000:]}")
    steps = [m.group(1) for chunk in log if (m := re.match(r"\s*---> ([0-9a-f]{12})\s*$", str(chunk.get("stream", ""))))]
    print(f"built {tag} in {time.monotonic() - started:.1f}s")
    yield tag
    with contextlib.suppress(docker.errors.APIError):
        docker_client.images.remove(tag)
    for step in reversed(steps):
        with contextlib.suppress(docker.errors.APIError):  # gone already, or used by another build
            if not docker_client.images.get(step).tags:  # never the base image or anyone's tagged image
                docker_client.images.remove(step)


@pytest.fixture
def flows_dir() -> Iterator[Path]:
    """A folder of flow code readable by the image's non-root user (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="orch-flows-"))
    path.chmod(0o755)
    target = path / "flows.py"
    shutil.copy(FIXTURES / "flows.py", target)
    target.chmod(0o644)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --- helm and Kubernetes -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm() -> str:
    script = TESTENV / "helm.sh"
    if not script.exists():
        on_path = shutil.which("helm")
        if on_path:
            return on_path
        missing_service("helm (not on PATH; CI installs it with its testenv's helm.sh)")
    result = subprocess.run(["bash", str(script)], check=False, capture_output=True, text=True, timeout=300)
    path = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if result.returncode != 0 or not os.access(path, os.X_OK):
        missing_service(f"helm (bash {script} failed: {result.stderr.strip()[-300:]})")
    return path


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    unavailable = os.environ.get("ORCH_TEST_K8S_UNAVAILABLE")  # set by .ci/run: k8s.sh cannot build here
    if unavailable:
        pytest.skip(f"Kubernetes control plane cannot be built on this platform: {unavailable}")
    path = os.environ.get("KUBECONFIG", "/tmp/testenv-k8s/admin.kubeconfig")
    if not Path(path).exists():
        missing_service(f"a Kubernetes API server (no kubeconfig at {path}; set KUBECONFIG to a cluster's)")
    from kubernetes import client, config

    api = client.ApiClient(config.new_client_from_config(config_file=path).configuration)
    try:
        client.VersionApi(api).get_code(_request_timeout=10)
        ready = [n for n in client.CoreV1Api(api).list_node(_request_timeout=10).items
                 if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])]
    except Exception as error:  # noqa: BLE001 - any failure means: no usable cluster
        missing_service(f"a Kubernetes API server (kubeconfig {path}: {type(error).__name__})")
    finally:
        api.close()
    if not ready:
        missing_service(f"a Ready node in the Kubernetes cluster of {path}")
    return path
