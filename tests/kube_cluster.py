"""Fixtures for tests on the Kubernetes API server of ``../shared/testenv`` (``k8s.sh up``): the
admin client, a fresh namespace per test with the worker's ServiceAccount and only the Role
docs/workers.md grants it, and a clock of the API server's pod watch cache. Test modules load the
fixtures with ``pytest_plugins = ["tests.kube_cluster"]`` and import the helpers by name.
PYTEST_DONT_REWRITE: the helpers raise their own AssertionErrors, and a module imported before
pytest_plugins registers it could not be rewritten anyway.

Like every real-service fixture they skip locally and fail under ``CI`` when the API server is
missing (``missing_service``). One exception, set by ``.ci/run``: ``ORCH_TEST_K8S_UNAVAILABLE`` carries
``k8s.sh``'s own message when this platform cannot build the Kubernetes control plane at all, and
the Kubernetes tests then skip with it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing_service
from tests.harness import wait_until

ADMIN_KUBECONFIG = "/tmp/testenv-k8s/admin.kubeconfig"


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
        wait_until("the default ServiceAccount's token", lambda: service_account_token(core, name, "default"))
        token = wait_until("the orch-worker ServiceAccount's token",
                           lambda: service_account_token(core, name, "orch-worker"))
        kubeconfig = tmp_path / "worker.kubeconfig"
        kubeconfig.write_text(token_kubeconfig(kube_admin, token, name))
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


def service_account_token(core: Any, namespace: str, account: str) -> str | None:
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


def token_kubeconfig(admin: Any, token: str, namespace: str, server: str | None = None) -> str:
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
        wait_until("the default ServiceAccount's token", lambda: service_account_token(core, name, "default"))
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
