"""The Helm chart (helm/): lint, strict schema validation of what it renders, clear errors for bad
values, and a real install / upgrade / uninstall on the Kubernetes API server of testenv's k8s.sh.

That cluster's kubelet is a stand-in: it runs each pod's first container's command as a process on
this machine (images, probes and init containers are ignored; ``$(VAR)`` in args is not expanded).
So the release's values make every container's command this interpreter's ``orch``, the server
bind 127.0.0.1 on a free port, and the database and broker the test PostgreSQL and Redis. Templates,
the schema, RBAC (pods use their ServiceAccount's token), Secrets and ConfigMaps are all real.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PG_ADMIN_URL, free_port, missing_service
from tests.deploy.conftest import DEPLOY_REDIS_URL, ROOT, wait_for

pytestmark = pytest.mark.timeout(300)
CHART = ROOT / "helm"
CI_VALUES = CHART / "ci" / "example-values.yaml"
ORCH = [sys.executable, "-m", "orchestrator.cli.main"]
KEY = "helm-test-key-0123456789"
# external PostgreSQL and Redis instead of the chart's own
EXTERNAL = ["--set", "postgresql.enabled=false", "--set", "redis.enabled=false",
            "--set", "database.url=postgresql+psycopg://u:p@db:5432/orch", "--set", "broker.url=redis://r:6379/0",
            "--set", "apiKeys={ext-key-0123456789abcdef,ext-key-fedcba9876543210}"]
WORKER_RULES = {
    ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
    ("", "pods"): {"get", "list", "watch", "delete"},
    ("", "pods/log"): {"get"},
    ("", "events"): {"get", "list", "watch"},
    ("", "secrets"): {"create", "update", "patch", "delete"},
}


def helm_run(helm: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=timeout, check=False)


def render(helm: str, *args: str) -> list[dict[str, Any]]:
    result = helm_run(helm, "template", "rel", str(CHART), "--namespace", "ns", *args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def kubernetes_validate(path: Path, version: str) -> subprocess.CompletedProcess[str]:
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        missing_service("kubernetes-validate (pip install -e '.[test]')")
    return subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--kubernetes-version", version,
                           str(path)], capture_output=True, text=True, timeout=120, check=False)


# --- offline: lint, render, validate -----------------------------------------------------------


def test_chart_passes_helm_lint_strict(helm: str) -> None:
    result = helm_run(helm, "lint", "--strict", str(CHART), "--values", str(CI_VALUES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("version", ["1.20.0", "1.24.0"])
def test_rendered_manifests_pass_strict_schema_validation(helm: str, tmp_path: Path, version: str) -> None:
    """Every optional part on (CI values), no values at all, and external services: each object is
    checked against that Kubernetes version's schemas, unknown fields rejected (a 1.20 API server
    drops them silently, so the install test alone would not catch one). KEDA's kinds have no
    schema there: test_helm_defaults.py checks them."""
    for name, args in {"ci": ["--values", str(CI_VALUES)], "none": [], "external": EXTERNAL}.items():
        docs = render(helm, "--kube-version", version, *args)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        result = kubernetes_validate(path, version)
        assert result.returncode == 0, result.stdout + result.stderr
        checked = [d for d in docs if not d["apiVersion"].startswith("keda.sh/")]
        assert result.stdout.count("passed for resource") == len(checked), result.stdout
    # the validator does reject what the API server would silently drop
    bad = render(helm, "--set", "server.extraEnv[0].name=X", "--set", "server.extraEnv[0].valu=typo")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump_all(bad))
    rejected = kubernetes_validate(tmp_path / "bad.yaml", version)
    assert rejected.returncode != 0 and "'valu' was unexpected" in rejected.stdout + rejected.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "postgresql.enabled=false"], "database.url is required when postgresql.enabled is false"),
    (["--set", "redis.enabled=false"], "broker.url is required when redis.enabled is false"),
    (["--set", "database.url=postgresql+psycopg://u:p@db/o"],
     "database.url is for an external PostgreSQL: set postgresql.enabled=false to use it"),
    (["--set", "broker.url=redis://r:6379/0"], "broker.url is for an external Redis: set redis.enabled=false"),
    (["--set", "postgresql.enabled=false", "--set", "database.url=mysql://u:p@db/o"], "/database/url"),
    (["--set", "postgresql.password=has space"], "/postgresql/password"),
    (["--set", "postgresql.image.tag="], "/postgresql/image/tag"),
    (["--set", "keda.enabled=true", "--set", "keda.redis.address=no-port"], "/keda/redis/address"),
    (["--set", "server.autoscaling.maxReplicas=0"], "/server/autoscaling/maxReplicas"),
    (["--set", "workers[0].name=w", "--set", "workers[0].pool=p", "--set", "workers[0].type=lambda"],
     "value must be one of 'process', 'kubernetes', 'docker'"),
    (["--set", "workers[0].name=Bad_Name", "--set", "workers[0].pool=p"], "/workers/0/name"),
    (["--set", "workers[0].name=w", "--set", "workers[0].pool=p", "--set", "workers[0].limit=0"],
     "/workers/0/limit"),
    (["--set", "workers[0].name=w", "--set", "workers[0].pool=a", "--set", "workers[1].name=w",
      "--set", "workers[1].pool=b"], 'the name "w" is used twice'),
    (["--set", "apiKeys[0]=short"], "/apiKeys/0"),
    (["--set", "server.port=70000"], "/server/port"),
    (["--set", "sever.replicas=2"], "additional properties 'sever' not allowed"),
    (["--set", "settings.WORKER_LIMIT=3"], "invalid propertyName 'WORKER_LIMIT'"),
])
def test_bad_values_fail_with_a_clear_message(helm: str, args: list[str], message: str) -> None:
    result = helm_run(helm, "template", "rel", str(CHART), *args)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_worker_rbac_is_namespace_scoped_and_minimal(helm: str) -> None:
    docs = render(helm, "--values", str(CI_VALUES))
    kinds = [d["kind"] for d in docs]
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    (role,) = [d for d in docs if d["kind"] == "Role"]
    granted = {(group, resource): set(rule["verbs"]) for rule in role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]}
    assert granted == WORKER_RULES
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (account,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "ns"}]
    workers = [d for d in docs if d["kind"] == "Deployment" and "-worker-" in d["metadata"]["name"]]
    assert {w["spec"]["template"]["spec"]["serviceAccountName"] for w in workers} == {account["metadata"]["name"]}
    # only the kubernetes worker gets an API token; the server and the migration Job none
    tokens = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["automountServiceAccountToken"]
              for d in docs if d["kind"] in ("Deployment", "Job")}
    assert tokens == {"rel-orchestrator-server": False, "rel-orchestrator-migrate-1": False,
                      "rel-orchestrator-worker-local": False, "rel-orchestrator-worker-k8s": True}


def secret_keys(doc: dict[str, Any]) -> set[str]:
    """The Secret keys a Deployment's or Job's first container reads."""
    container = doc["spec"]["template"]["spec"]["containers"][0]
    return {e["valueFrom"]["secretKeyRef"]["key"] for e in container.get("env", []) if "secretKeyRef" in
            e.get("valueFrom", {})}


def test_secrets_reach_only_who_needs_them(helm: str) -> None:
    docs = render(helm, *EXTERNAL)
    by_name = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "Job")}
    assert secret_keys(by_name["rel-orchestrator-server"]) == {"ORCH_DATABASE_URL", "ORCH_BROKER_URL",
                                                              "ORCH_SERVER_API_KEYS"}
    assert secret_keys(by_name["rel-orchestrator-migrate-1"]) == {"ORCH_DATABASE_URL"}
    assert secret_keys(by_name["rel-orchestrator-worker-default"]) == {"ORCH_BROKER_URL", "ORCH_API_KEY"}
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert secret["stringData"]["ORCH_SERVER_API_KEYS"] == "ext-key-0123456789abcdef,ext-key-fedcba9876543210"
    assert secret["stringData"]["ORCH_API_KEY"] == "ext-key-0123456789abcdef"
    assert secret["stringData"]["ORCH_DATABASE_URL"] == "postgresql+psycopg://u:p@db:5432/orch"
    # with the chart's own services, the passwords come from the generated Secret, each to whom needs it
    by_name = {d["metadata"]["name"]: d for d in render(helm, "--values", str(CI_VALUES))
               if d["kind"] in ("Deployment", "Job")}
    assert secret_keys(by_name["rel-orchestrator-server"]) == {"postgres-password", "redis-password",
                                                              "ORCH_SERVER_API_KEYS"}
    assert secret_keys(by_name["rel-orchestrator-migrate-1"]) == {"postgres-password"}
    assert secret_keys(by_name["rel-orchestrator-worker-k8s"]) == {"redis-password", "ORCH_API_KEY"}
    # with an existing Secret the chart makes none, and the optional keys may be absent from it
    docs = render(helm, "--set", "existingSecret=mine")
    assert "rel-orchestrator" not in [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"]
    server = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "rel-orchestrator-server")
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in server["spec"]["template"]["spec"]["containers"][0]["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert {r["name"] for r in refs.values()} == {"mine"}
    assert refs["ORCH_SERVER_API_KEYS"]["optional"] is True and "optional" not in refs["ORCH_DATABASE_URL"]


def test_ingress_routes_only_the_api(helm: str) -> None:
    docs = render(helm, "--values", str(CI_VALUES))
    (ingress,) = [d for d in docs if d["kind"] == "Ingress"]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "orchestrator.example.com"
    assert [p["path"] for p in rule["http"]["paths"]] == ["/api"]  # /metrics stays in the cluster
    assert ingress["spec"]["tls"] == [{"hosts": ["orchestrator.example.com"], "secretName": "orchestrator-tls"}]
    assert "Ingress" not in [d["kind"] for d in render(helm)]


# --- on the real API server --------------------------------------------------------------------


def kubernetes_worker_available() -> bool:
    from workers.registry import worker_class

    try:
        worker_class("kubernetes")
    except (KeyError, ImportError):
        return False
    return True


@dataclass
class Release:
    name: str
    namespace: str
    helm_bin: str
    kubeconfig: str
    values: dict[str, Any]
    api_url: str
    pools: dict[str, str]
    core: Any
    batch: Any
    apps: Any

    def helm(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.helm_bin, *args, "--namespace", self.namespace, "--kubeconfig", self.kubeconfig],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def pods(self, component: str | None = None) -> list[Any]:
        selector = f"app.kubernetes.io/instance={self.name}"
        if component:
            selector += f",app.kubernetes.io/component={component}"
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def describe(self) -> str:
        lines = [f"{p.metadata.name}: {p.status.phase} {[(c.type, c.status) for c in p.status.conditions or []]}"
                 for p in self.pods()]
        logs = Path("/tmp/testenv-k8s/kubelet")
        for log in sorted(logs.glob(f"{self.namespace}_*.log")):
            lines.append(f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}")
        return "\n".join(lines)


def orch_env(api_url: str, key: str | None = KEY, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["ORCH_API_URL"] = api_url
    if key:
        env["ORCH_API_KEY"] = key
    env.update(extra)
    return env


def ready(pod: Any) -> bool:
    return pod.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture(scope="module")
def release(helm: str, kubeconfig: str, pg_admin: Any) -> Iterator[Release]:
    import redis
    from kubernetes import client, config
    from sqlalchemy import text

    broker = redis.Redis.from_url(DEPLOY_REDIS_URL, socket_connect_timeout=2)
    try:
        broker.ping()
    except redis.RedisError as error:
        missing_service(f"Redis at {DEPLOY_REDIS_URL} ({type(error).__name__})")
    finally:
        broker.close()
    suffix = uuid.uuid4().hex[:8]
    database = f"orch_helm_{suffix}"  # empty: the chart's migration Job creates the schema
    with pg_admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{database}"'))
    api = config.new_client_from_config(config_file=kubeconfig)
    core, batch, apps = client.CoreV1Api(api), client.BatchV1Api(api), client.AppsV1Api(api)
    namespace = f"orch-helm-{suffix}"
    core.create_namespace({"metadata": {"name": namespace}})

    def token() -> Any:
        try:
            return core.read_namespaced_service_account("default", namespace).secrets
        except client.ApiException as error:
            if error.status == 404:  # the controller has not made the account yet
                return None
            raise

    # pods are refused until the namespace's ServiceAccount token exists
    wait_for("the namespace's default ServiceAccount token", token, 30)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    pools = {"process": f"helm-proc-{suffix}"}
    workers = [{"name": "proc", "pool": pools["process"], "type": "process"}]
    if kubernetes_worker_available():
        pools["kubernetes"] = f"helm-k8s-{suffix}"
        workers.append({"name": "k8s", "pool": pools["kubernetes"], "type": "kubernetes"})
    values = {
        "command": ORCH,  # the stand-in kubelet runs the command on this machine: this interpreter's orch
        "server": {"host": "127.0.0.1", "port": port, "strategy": {"type": "Recreate"}},  # one host port
        "apiUrl": api_url,
        "postgresql": {"enabled": False},  # the test's own PostgreSQL and Redis: external services
        "redis": {"enabled": False},
        "database": {"url": PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"},
        "broker": {"url": DEPLOY_REDIS_URL},
        "apiKeys": [KEY],
        "workerDefaults": {"strategy": {"type": "Recreate"}},
        "workers": workers,
    }
    values_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"{namespace}-values.json"
    values_file.write_text(json.dumps(values))
    rel = Release("rel", namespace, helm, kubeconfig, values, api_url, pools, core, batch, apps)
    try:
        installed = rel.helm("install", rel.name, str(CHART), "--values", str(values_file), "--wait",
                             "--wait-for-jobs", "--timeout", "150s")
        assert installed.returncode == 0, f"{installed.stdout}\n{installed.stderr}\n{rel.describe()}"
        # The stand-in kubelet runs no probes, so a pod is ready as soon as its process runs: wait for
        # what the chart's probes would wait for, the server's health (startup probe) and each worker
        # ONLINE in its pool (readiness probe, `orch worker check`).
        wait_for("the server's health", lambda: answers(f"{api_url}/health"), 60, describe=rel.describe)
        from orchestrator.client import Client

        with contextlib.closing(Client(api_url, api_key=KEY)) as api_client:
            for pool in pools.values():
                wait_for(f"a worker ONLINE in {pool}", lambda p=pool: online_workers(api_client, p), 60,
                         describe=rel.describe)
        yield rel
    finally:
        rel.helm("uninstall", rel.name, "--wait", "--timeout", "60s")
        core.delete_namespace(namespace)
        wait_for("the release's server process to stop", lambda: not answers(f"{api_url}/health"), 60)
        api.close()
        values_file.unlink(missing_ok=True)
        with pg_admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def online_workers(api: Any, pool: str) -> list[Any]:
    """The pool's ONLINE workers; none yet while the worker pod's process is still creating its pool."""
    from orchestrator.errors import NotFound

    try:
        return [w for w in api.list_workers(pool) if w.status == "ONLINE"]
    except NotFound:
        return []


def test_install_runs_migrations_server_and_workers(release: Release) -> None:
    (job,) = release.batch.list_namespaced_job(release.namespace,
                                               label_selector="app.kubernetes.io/component=migrate").items
    assert job.metadata.name == "rel-orchestrator-migrate-1" and job.status.succeeded == 1
    server = release.pods("server")
    assert len(server) == 1 and ready(server[0]), release.describe()
    for name in ("proc", "k8s") if "kubernetes" in release.pools else ("proc",):
        pods = release.pods(f"worker-{name}")
        assert len(pods) == 1 and ready(pods[0]), release.describe()
    assert answers(f"{release.api_url}/health")
    # the Secret's keys reached the server: no key, no answer
    anonymous = subprocess.run([*ORCH, "work-pool", "ls"], env=orch_env(release.api_url, key=None),
                               capture_output=True, text=True, timeout=60, check=False)
    assert anonymous.returncode == 1 and "Error" in anonymous.stderr
    from orchestrator.client import Client

    api = Client(release.api_url, api_key=KEY)
    try:
        for pool in release.pools.values():
            # the stand-in kubelet leaves $(POD_NAME) unexpanded, so that is the worker's name here
            workers = online_workers(api, pool)
            assert workers, release.describe()
            check = subprocess.run([*ORCH, "worker", "check", "--pool", pool, "--name", workers[0].name],
                                   env=orch_env(release.api_url), capture_output=True, text=True, timeout=60,
                                   check=False)
            assert check.returncode == 0, check.stderr
    finally:
        api.close()


def test_process_pool_runs_a_flow(release: Release, flows_dir: Path) -> None:
    env = orch_env(release.api_url, POOL=release.pools["process"], ORCH_HOME=str(flows_dir / ".home"))
    registered = subprocess.run([sys.executable, "flows.py"], cwd=flows_dir, env=env, capture_output=True, text=True,
                                timeout=60, check=False)
    assert registered.returncode == 0, registered.stderr
    run = subprocess.run([*ORCH, "deployment", "run", "add/sum", "--param", "x=5", "--watch"], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{release.describe()}"
    assert "COMPLETED" in run.stdout


def test_kubernetes_pool_runs_a_flow_as_a_job(release: Release, flows_dir: Path) -> None:
    if "kubernetes" not in release.pools:
        missing_service("the Kubernetes worker (workers.registry.worker_class('kubernetes'))")
    pool = release.pools["kubernetes"]
    env = orch_env(release.api_url, ORCH_HOME=str(flows_dir / ".home"))
    job_variables = {"namespace": release.namespace, "image": "orchestrator:test",
                     # the stand-in kubelet runs this on the host; a real cluster runs the image's python
                     "command": [sys.executable, "-m", "orchestrator.engine"]}
    deploy = (f"from flows import add; add.deploy(name='on-k8s', work_pool_name={pool!r}, parameters={{'x': 1}}, "
              f"job_variables={job_variables!r})")
    registered = subprocess.run([sys.executable, "-c", deploy], cwd=flows_dir, env=env, capture_output=True,
                                text=True, timeout=60, check=False)
    assert registered.returncode == 0, registered.stderr
    started = time.monotonic()
    run = subprocess.run([*ORCH, "deployment", "run", "add/on-k8s", "--param", "x=40", "--watch"], env=env,
                         capture_output=True, text=True, timeout=150, check=False)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{release.describe()}"
    assert "COMPLETED" in run.stdout
    print(f"kubernetes pool: run COMPLETED {time.monotonic() - started:.1f}s after orch deployment run")
    run_id = run.stdout.split("(", 1)[1].split(")", 1)[0]

    def succeeded_jobs() -> list[str]:
        jobs = release.batch.list_namespaced_job(release.namespace,
                                                 label_selector=f"orchestrator.flow-run-id={run_id}").items
        return [j.metadata.name for j in jobs if j.status.succeeded == 1]

    # the run reports COMPLETED itself; the Job controller notes the pod's exit a moment later
    assert len(wait_for("the run's Job to succeed", succeeded_jobs, 30, describe=release.describe)) == 1


def test_upgrade_applies_new_values_and_migrates_again(release: Release) -> None:
    worker = "rel-orchestrator-worker-proc"
    before = release.apps.read_namespaced_deployment(worker, release.namespace).spec.template.metadata.annotations
    values = dict(release.values, settings={"ORCH_WORKER_HEARTBEAT_SECONDS": "5"},
                  workerDefaults={"strategy": {"type": "Recreate"}, "limit": 3})
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"{release.namespace}-upgrade.json"
    path.write_text(json.dumps(values))
    try:
        upgraded = release.helm("upgrade", release.name, str(CHART), "--values", str(path), "--wait",
                                "--wait-for-jobs", "--timeout", "150s")
    finally:
        path.unlink(missing_ok=True)
    assert upgraded.returncode == 0, f"{upgraded.stdout}\n{upgraded.stderr}\n{release.describe()}"
    assert "REVISION: 2" in upgraded.stdout
    # a new migration Job ran; helm removed the previous revision's
    jobs = {j.metadata.name: j for j in release.batch.list_namespaced_job(
        release.namespace, label_selector="app.kubernetes.io/component=migrate").items}
    assert set(jobs) == {"rel-orchestrator-migrate-2"} and jobs["rel-orchestrator-migrate-2"].status.succeeded == 1
    config = release.core.read_namespaced_config_map("rel-orchestrator", release.namespace)
    assert config.data["ORCH_WORKER_HEARTBEAT_SECONDS"] == "5"
    deployment = release.apps.read_namespaced_deployment(worker, release.namespace)
    args = deployment.spec.template.spec.containers[0].args
    assert args[args.index("--limit") + 1] == "3"
    # the changed ConfigMap rolled the pods
    assert deployment.spec.template.metadata.annotations["checksum/config"] != before["checksum/config"]
    wait_for("the upgraded server and worker pods to be ready", lambda: all(
        len(pods := release.pods(c)) == 1 and ready(pods[0]) for c in ("server", "worker-proc")), 90,
        describe=release.describe)
    wait_for("the upgraded API to answer", lambda: answers(f"{release.api_url}/health"), 60, describe=release.describe)


def test_bad_values_fail_at_install_and_create_nothing(release: Release) -> None:
    result = release.helm("install", "bad", str(CHART), "--set", "workers[0].name=w",
                          "--set", "workers[0].pool=p", "--set", "workers[0].type=lambda")
    assert result.returncode != 0
    assert "value must be one of 'process', 'kubernetes', 'docker'" in result.stderr
    assert not release.pods() or all(p.metadata.labels["app.kubernetes.io/instance"] == "rel" for p in release.pods())
    assert release.helm("status", "bad").returncode != 0


def test_uninstall_removes_the_release(release: Release) -> None:
    """Last in this module: the fixture's release is gone afterwards."""
    removed = release.helm("uninstall", release.name, "--wait", "--timeout", "60s")
    assert removed.returncode == 0, removed.stderr
    selector = f"app.kubernetes.io/instance={release.name}"

    def leftovers() -> list[str]:
        found = []
        for kind, items in (("deployment", release.apps.list_namespaced_deployment),
                            ("job", release.batch.list_namespaced_job),
                            ("pod", release.core.list_namespaced_pod),
                            ("configmap", release.core.list_namespaced_config_map),
                            ("secret", release.core.list_namespaced_secret),
                            ("service", release.core.list_namespaced_service)):
            found += [f"{kind}/{i.metadata.name}" for i in items(release.namespace, label_selector=selector).items]
        return found

    wait_for("the release's objects and pods to be gone", lambda: not leftovers(), 60,
             describe=lambda: str(leftovers()))
    # the pods' processes stopped with them
    wait_for("the API to stop answering", lambda: not answers(f"{release.api_url}/health"), 30)
