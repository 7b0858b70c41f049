"""Fixtures for tests on real infrastructure: the Docker engine and the Kubernetes API server of
``../shared/testenv`` (``docker.sh start``, ``k8s.sh up``). Test modules load them with
``pytest_plugins = ["tests.infra"]`` and import the helpers by name. PYTEST_DONT_REWRITE: the
helpers raise their own AssertionErrors, and a module imported before pytest_plugins registers
it could not be rewritten anyway.

Like every real-service fixture they skip locally and fail under ``CI`` when the service is missing
(``missing_service``). One exception, set by ``.ci/run``: ``ORCH_TEST_K8S_UNAVAILABLE`` carries
``k8s.sh``'s own message when this platform cannot build the Kubernetes control plane at all, and
the Kubernetes tests then skip with it.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import select
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import docker_engine, missing_service
from tests.harness import wait_until

REPO = Path(__file__).resolve().parents[1]
PYTHON_IMAGE = "local/python:3.11"
# The image's interpreter is Debian's /usr/bin/python3.11, the same file as the host's: a venv made
# with it on the host runs unchanged when bind-mounted at the same path in the container.
IMAGE_PYTHON = "/usr/bin/python3.11"
CACHE = Path(os.environ.get("ORCH_TEST_CACHE", Path.home() / ".cache" / "orchestrator-tests"))
ADMIN_KUBECONFIG = "/tmp/testenv-k8s/admin.kubeconfig"


wait_for = wait_until  # the one bounded wait (tests.harness), by the name these tests use


# --- a live API and flows for workers to run -----------------------------------------------------

FLOWS_PY = """\
import os
import time

from orchestrator import flow


@flow
def hello(name: str = "world") -> str:
    with open("/proc/1/cmdline", "rb") as f:  # in a container: its init process
        init = f.read().split(b"\\0")[0].decode()
    print(f"hello {name} host={os.environ.get('HOSTNAME')} init={init}")
    return f"hi {name}"


@flow
def boom() -> None:
    raise ValueError("boom on purpose")


@flow
def exit_code(code: int = 7, delay: float = 0.0) -> None:
    time.sleep(delay)
    print("leaving without a word", flush=True)
    os._exit(code)


@flow
def sleepy(seconds: float = 60.0) -> str:
    print("sleeping", flush=True)
    time.sleep(seconds)
    return "rested"


@flow
def hog(megabytes: int = 1024) -> int:
    print("allocating", flush=True)
    blob = b"x" * (megabytes * 1024 * 1024)  # written, so the pages are really used
    return len(blob)
"""


@pytest.fixture
def flow_dir(tmp_path: Path) -> Path:
    path = tmp_path / "flows"
    path.mkdir()
    (path / "flows.py").write_text(FLOWS_PY)
    return path


@pytest.fixture
def worker_api(tmp_path: Path) -> Iterator[Any]:
    """A live API on SQLite, without background services: the test itself hands runs to
    ``worker.handle(run_id)``, so the claim -> infrastructure -> engine -> report path is all real
    and nothing else (dispatcher, reaper) acts on the runs."""
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker
    from tests.conftest import live_server

    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'api.db'}",
                        api_url="http://unused/api")
    with live_server(settings, broker=MemoryBroker(), run_services=False) as server:
        yield server


def deploy(client: Any, pool: str, flow_dir: Path, function: str, job_variables: dict[str, Any]) -> Any:
    from orchestrator import schemas

    return client.upsert_deployment(schemas.DeploymentCreate(
        flow_name=function.replace("_", "-"), name="test", entrypoint=f"flows.py:{function}", path=str(flow_dir),
        work_pool_name=pool, job_variables=job_variables, enforce_parameter_schema=False))


def new_run(client: Any, deployment: Any, **fields: Any) -> Any:
    from orchestrator import schemas

    return client.create_flow_run(deployment.id, schemas.FlowRunCreate(**fields))


def process_pool_run(client: Any, tmp_path: Path, flows_py: str, function: str, **fields: Any) -> tuple[str, Path, Any]:
    """A run of ``function`` of ``flows_py`` (written to ``tmp_path/flows/flows.py``), deployed on a new
    process pool: the pool's name, the flows' folder and the run."""
    from orchestrator import schemas

    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "flows.py").write_text(flows_py)
    pool = f"process-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(schemas.WorkPoolCreate(name=pool, type="process"))
    return pool, flows, new_run(client, deploy(client, pool, flows, function, {}), **fields)


def log_text(client: Any, run_id: uuid.UUID) -> str:
    return "\n".join(entry.message for entry in client.read_logs(run_id))


def running_handle(worker: Any, run_id: uuid.UUID, timeout: float = 60) -> Any:
    """The infrastructure handle of a run the worker is watching. (BaseWorker keeps it private;
    the cancellation path calls ``kill`` with it, as the tests here do.)"""
    wait_for(f"worker to watch run {run_id}", lambda: run_id in worker.running(), timeout)
    return worker._running[run_id]


def wait_state(client: Any, run_id: uuid.UUID, *types: str, timeout: float = 60) -> Any:
    return wait_for(f"run {run_id} to be {'/'.join(types)}",
                    lambda: (run := client.read_flow_run(run_id)).state.type in types and run, timeout, 0.1)


# --- Docker ------------------------------------------------------------------------------------


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


# --- Kubernetes --------------------------------------------------------------------------------

# Exactly what docs/workers.md tells users to grant the worker's ServiceAccount.
WORKER_ROLE_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "update", "patch", "delete"]},
]


@pytest.fixture(scope="session")
def kube_admin() -> Any:
    """An ApiClient with the test cluster's admin credentials."""
    unavailable = os.environ.get("ORCH_TEST_K8S_UNAVAILABLE")
    if unavailable:
        pytest.skip(f"Kubernetes control plane cannot be built on this platform: {unavailable}")
    from kubernetes import client, config

    path = os.environ.get("KUBECONFIG") or ADMIN_KUBECONFIG
    try:
        api = config.new_client_from_config(config_file=path)
        client.VersionApi(api).get_code(_request_timeout=10)
    except Exception as error:  # noqa: BLE001 - any failure means: no cluster here
        missing_service(f"a Kubernetes API server (kubeconfig {path}; set KUBECONFIG to use another): "
                        f"{type(error).__name__}: {error}")
    return api


@dataclass
class KubeNamespace:
    name: str
    admin: Any  # kubernetes.client.ApiClient
    worker_kubeconfig: Path  # credentials of a ServiceAccount bound to WORKER_ROLE_RULES only

    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.admin)

    @property
    def batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self.admin)


@pytest.fixture
def kube_namespace(kube_admin: Any, pod_event_clock: PodEventClock, tmp_path: Path) -> Iterator[KubeNamespace]:
    """A fresh namespace with a ServiceAccount ``orch-worker`` bound to the worker Role, and a
    kubeconfig holding that account's token (the worker under test uses only that)."""
    from kubernetes import client

    core = client.CoreV1Api(kube_admin)
    rbac = client.RbacAuthorizationV1Api(kube_admin)
    name = f"orch-test-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        core.create_namespaced_service_account(name, {"metadata": {"name": "orch-worker"}})
        rbac.create_namespaced_role(name, {"metadata": {"name": "orch-worker"}, "rules": WORKER_ROLE_RULES})
        rbac.create_namespaced_role_binding(name, {
            "metadata": {"name": "orch-worker"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "orch-worker"},
            "subjects": [{"kind": "ServiceAccount", "name": "orch-worker", "namespace": name}],
        })
        # Pods may only be made once the namespace's default account has its token (testenv README).
        wait_for("the default ServiceAccount's token", lambda: _sa_token(core, name, "default"))
        token = wait_for("the orch-worker ServiceAccount's token", lambda: _sa_token(core, name, "orch-worker"))
        kubeconfig = tmp_path / "worker.kubeconfig"
        kubeconfig.write_text(_kubeconfig(kube_admin, token, name))
        yield KubeNamespace(name, kube_admin, kubeconfig)
    finally:
        _delete_namespace(core, name)


def _delete_namespace(core: Any, name: str) -> None:
    """Pods bound to a node no kubelet runs would wait forever for their graceful deletion to be
    confirmed (and keep the namespace Terminating): delete every pod at once first."""
    with contextlib.suppress(Exception):
        core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    with contextlib.suppress(Exception):
        core.delete_namespace(name, propagation_policy="Background")


def _sa_token(core: Any, namespace: str, account: str) -> str | None:
    from kubernetes.client.exceptions import ApiException

    try:
        sa = core.read_namespaced_service_account(account, namespace)
    except ApiException as error:
        if error.status == 404:  # the serviceaccount controller has not made it yet
            return None
        raise
    for ref in sa.secrets or []:
        secret = core.read_namespaced_secret(ref.name, namespace)
        if secret.type == "kubernetes.io/service-account-token" and (secret.data or {}).get("token"):
            return base64.b64decode(secret.data["token"]).decode()
    return None


def _kubeconfig(admin: Any, token: str, namespace: str, server: str | None = None) -> str:
    import json

    cfg = admin.configuration
    ca = Path(cfg.ssl_ca_cert).read_bytes() if cfg.ssl_ca_cert else b""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "worker",
        "clusters": [{"name": "test", "cluster": {"server": server or cfg.host,
                                                  "certificate-authority-data": base64.b64encode(ca).decode()}}],
        "users": [{"name": "orch-worker", "user": {"token": token}}],
        "contexts": [{"name": "worker", "context": {"cluster": "test", "user": "orch-worker",
                                                    "namespace": namespace}}],
    })


@dataclass
class PodEventClock:
    """A pod parked on a node no kubelet runs, made when the session's first Kubernetes test
    starts: from then on the API server's pod watch cache holds no event older than ``started``
    that this session did not find there already."""

    core: Any  # kubernetes.client.CoreV1Api, admin
    namespace: str
    started: float  # time.monotonic()


@pytest.fixture(scope="session")
def pod_event_clock(kube_admin: Any) -> Iterator[PodEventClock]:
    from kubernetes import client

    core = client.CoreV1Api(kube_admin)
    name = f"orch-test-clock-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        wait_for("the default ServiceAccount's token", lambda: _sa_token(core, name, "default"))
        core.create_namespaced_pod(name, {"metadata": {"name": "parked"}, "spec": {
            "nodeName": "no-kubelet-here", "containers": [{"name": "c", "image": "none"}]}})
        yield PodEventClock(core, name, time.monotonic())
    finally:
        _delete_namespace(core, name)


# The API server's watch cache (1.20) keeps every event younger than this, growing as needed.
WATCH_CACHE_FRESH_SECONDS = 75


def expire_resource_version(clock: PodEventClock, timeout: float = 150) -> str:
    """Return "1" once resuming a pods watch from resourceVersion 1 answers 410 Gone.

    The watch cache keeps at least 100 events, and doubles instead of dropping any while its
    oldest is younger than 75 s: a young cluster still replays everything from resourceVersion 1.
    Once the oldest is older, a full cache drops it for each new event. So: wait until 75 s after
    the clock's first pod event (at once on a cluster that is up for a while), then make pod events
    quickly until the server has really dropped that history."""
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException

    def expired() -> bool:
        try:
            for _ in watch.Watch().stream(clock.core.list_pod_for_all_namespaces, resource_version="1",
                                          timeout_seconds=1):
                pass
        except ApiException as error:
            if error.status == 410:
                return True
            raise
        return False

    deadline = time.monotonic() + timeout
    count = 0
    while not expired():
        if time.monotonic() > deadline:
            raise AssertionError(f"the API server still replays pod events from resourceVersion 1 after {timeout}s")
        wait = clock.started + WATCH_CACHE_FRESH_SECONDS + 1 - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, 5))  # bounded polling: nothing announces the cache's age
            continue
        for _ in range(50):
            count += 1
            clock.core.patch_namespaced_pod("parked", clock.namespace, {"metadata": {"annotations": {"n": str(count)}}})
    return "1"


def kubeconfig_via(path: Path, server: str, dest: Path) -> Path:
    """A copy of kubeconfig ``path`` that reaches the API server at ``server`` instead."""
    import json

    data = json.loads(path.read_text())
    data["clusters"][0]["cluster"]["server"] = server
    dest.write_text(json.dumps(data))
    return dest


class TcpProxy:
    """A loopback TCP forwarder whose connections a test can cut: a dropped connection, for real,
    between a client and a server (TLS passes through untouched)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.drops = 0
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="tcp-proxy").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                downstream.close()
                continue
            with self._lock:
                self._pairs.append((downstream, upstream))
            threading.Thread(target=self._pipe, args=(downstream, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (b if source is a else a).sendall(data)
        except (OSError, ValueError):  # ValueError: select on a socket another thread closed
            return
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def drop_connections(self) -> int:
        """Reset every open connection; return how many there were."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
        self.drops += len(pairs)
        return len(pairs)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self.drop_connections()


def upgrade_to(database_url: str, revision: str) -> None:
    """Run the migration scripts up to ``revision`` (an older one: as a server of an older release
    left the database; "head": the schema built the long way, as an upgrade builds it)."""
    from alembic import command
    from alembic.config import Config

    from orchestrator.server.db.session import MIGRATIONS, make_engine

    engine = make_engine(database_url)
    try:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def differences_from_the_models(database_url: str) -> list[Any]:
    """alembic's autogenerate comparison of the database with ``orchestrator.server.db.models``: [] when
    they match."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from orchestrator.server.db.models import Base
    from orchestrator.server.db.session import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))
    finally:
        engine.dispose()
