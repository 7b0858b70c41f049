"""``orch work-pool provision-infrastructure`` as a user types it, against a live API (SQLite) and
the real Kubernetes 1.20 API server of ../shared/testenv (admin credentials, as a cluster admin
would run it): what it makes, what it records in the pool, that a second run changes nothing, and
that the worker's account may do what the Kubernetes worker does there and nothing more, and the
runs' account nothing."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from job_templates.render import default_template
from tests.harness import ORCH_MODULE, clean_env, wait_until
from tests.kube_cluster import ADMIN_KUBECONFIG, WORKER_ROLE_RULES

pytest_plugins = ["tests.worker_runs", "tests.kube_cluster"]
pytestmark = pytest.mark.e2e


def orch(api: Any, *args: str, kubeconfig: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**clean_env(), "ORCH_API_URL": api.url}
    env["KUBECONFIG"] = kubeconfig or os.environ.get("KUBECONFIG") or ADMIN_KUBECONFIG
    return subprocess.run([*ORCH_MODULE, *args], capture_output=True, text=True, env=env, timeout=90, check=False)


def new_pool(api: Any, type_: str = "kubernetes") -> str:
    from orchestrator import schemas

    name = f"Prov {uuid.uuid4().hex[:6]}"  # a space and capitals: the account's name must still be valid
    api.client().create_work_pool(schemas.WorkPoolCreate(name=name, type=type_))
    return name


def rule_set(rules: list[dict[str, Any]]) -> set[tuple[str, str, frozenset[str]]]:
    return {(g, r, frozenset(rule["verbs"])) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}


def test_dry_run_prints_the_manifests_and_changes_nothing(worker_api: Any) -> None:
    pool = new_pool(worker_api)
    before = worker_api.client().read_work_pool(pool).base_job_template
    # no Kubernetes credentials at all: a dry run needs none
    result = orch(worker_api, "work-pool", "provision-infrastructure", pool, "--namespace", "orch-dry",
                  "--dry-run", kubeconfig="/nonexistent/kubeconfig")
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount", "Role", "RoleBinding", "ServiceAccount"]
    worker, runs = docs[1]["metadata"]["name"], docs[4]["metadata"]["name"]
    assert worker.startswith("orch-prov-") and worker.endswith("-worker") and len(worker) <= 63
    assert runs == worker.removesuffix("-worker") + "-runs" and docs[4]["automountServiceAccountToken"] is False
    assert {d["metadata"].get("namespace", d["metadata"]["name"]) for d in docs} == {"orch-dry"}
    assert rule_set(docs[2]["rules"]) == rule_set(WORKER_ROLE_RULES)
    assert docs[3]["roleRef"]["name"] == docs[2]["metadata"]["name"]
    assert docs[3]["subjects"] == [{"kind": "ServiceAccount", "name": worker, "namespace": "orch-dry"}]
    assert f"namespace=orch-dry, service_account_name={runs}; run its worker as {worker}" in result.stdout
    assert worker_api.client().read_work_pool(pool).base_job_template == before


def test_refuses_a_pool_that_is_not_kubernetes_and_a_bad_namespace(worker_api: Any) -> None:
    process_pool = new_pool(worker_api, "process")
    result = orch(worker_api, "work-pool", "provision-infrastructure", process_pool)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"Error: work pool '{process_pool}' is of type process: "
                                     "provision-infrastructure is for kubernetes pools")
    result = orch(worker_api, "work-pool", "provision-infrastructure", new_pool(worker_api), "-n", "Bad_NS")
    assert result.returncode == 1 and "invalid namespace 'Bad_NS'" in result.stderr
    # no usable credentials: a clear error, and nothing recorded in the pool
    pool = new_pool(worker_api)
    before = worker_api.client().read_work_pool(pool).base_job_template
    result = orch(worker_api, "work-pool", "provision-infrastructure", pool, kubeconfig="/nonexistent/kubeconfig")
    assert result.returncode == 1 and result.stderr.startswith("Error: cannot load Kubernetes credentials: ")
    assert worker_api.client().read_work_pool(pool).base_job_template == before
    result = orch(worker_api, "work-pool", "provision-infrastructure", "no-such-pool")
    assert result.returncode != 0 and "Traceback" not in result.stderr and "no-such-pool" in result.stderr


@pytest.fixture
def namespace(kube_admin: Any) -> Iterator[str]:
    from kubernetes import client

    name = f"orch-prov-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        client.CoreV1Api(kube_admin).delete_namespace(name)
    except client.ApiException as error:
        if error.status != 404:
            raise


def test_provisions_records_and_a_second_run_changes_nothing(worker_api: Any, kube_admin: Any,
                                                              namespace: str) -> None:
    from kubernetes import client

    pool = new_pool(worker_api)
    first = orch(worker_api, "work-pool", "provision-infrastructure", pool, "--namespace", namespace)
    assert first.returncode == 0, first.stderr
    accounts = [line.split()[1].rstrip(":") for line in first.stdout.splitlines()
                if line.startswith("ServiceAccount ")]
    worker, runs = accounts
    assert first.stdout.splitlines()[:5] == [f"Namespace {namespace}: created", f"ServiceAccount {worker}: created",
                                             f"Role {worker}: created", f"RoleBinding {worker}: created",
                                             f"ServiceAccount {runs}: created"]
    core, rbac = client.CoreV1Api(kube_admin), client.RbacAuthorizationV1Api(kube_admin)
    assert core.read_namespace(namespace).status.phase == "Active"
    assert core.read_namespaced_service_account(runs, namespace).automount_service_account_token is False
    role = rbac.read_namespaced_role(worker, namespace)
    assert rule_set([{"apiGroups": r.api_groups, "resources": r.resources, "verbs": r.verbs} for r in role.rules]) \
        == rule_set(WORKER_ROLE_RULES)
    # recorded: the pool's runs now default to that namespace and the runs' account
    variables = worker_api.client().read_work_pool(pool).base_job_template["variables"]["properties"]
    assert (variables["namespace"]["default"], variables["service_account_name"]["default"]) == (namespace, runs)
    defaults = default_template("kubernetes")["variables"]["properties"]
    assert variables["image"] == defaults["image"]  # nothing else changed

    def allowed(account: str, verb: str, resource: str, group: str = "", ns: str = namespace, sub: str = "") -> bool:
        review = client.AuthorizationV1Api(kube_admin).create_subject_access_review({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": f"system:serviceaccount:{namespace}:{account}",
                     "resourceAttributes": {"namespace": ns, "verb": verb, "group": group, "resource": resource,
                                            "subresource": sub}}})
        return bool(review.status.allowed)

    # the worker's account may do what the worker does in that namespace, and nothing else; the runs' none
    assert allowed(worker, "create", "jobs", "batch") and allowed(worker, "delete", "pods")
    assert allowed(worker, "get", "pods", sub="log")
    assert not allowed(worker, "get", "secrets") and not allowed(worker, "create", "jobs", "batch", ns="default")
    assert not allowed(runs, "create", "jobs", "batch") and not allowed(runs, "list", "pods")
    versions = {"role": rbac.read_namespaced_role(worker, namespace).metadata.resource_version,
                "binding": rbac.read_namespaced_role_binding(worker, namespace).metadata.resource_version}
    # idempotent: a second run changes nothing, and says so
    second = orch(worker_api, "work-pool", "provision-infrastructure", pool, "--namespace", namespace)
    assert second.returncode == 0, second.stderr
    assert f"Nothing to change: work pool '{pool}' is already provisioned in namespace {namespace}." in second.stdout
    assert "created" not in second.stdout and "Recorded" not in second.stdout
    assert rbac.read_namespaced_role(worker, namespace).metadata.resource_version == versions["role"]
    assert rbac.read_namespaced_role_binding(worker, namespace).metadata.resource_version == versions["binding"]
    # a Role narrowed by hand is put back
    rbac.patch_namespaced_role(worker, namespace, {"rules": WORKER_ROLE_RULES[:1]})
    # The API server's authorizer learns a changed Role from its watch, a moment after the write.
    wait_until("the narrowed Role in force", lambda: not allowed(worker, "get", "pods", sub="log"), timeout=10)
    third = orch(worker_api, "work-pool", "provision-infrastructure", pool, "--namespace", namespace)
    assert third.returncode == 0 and f"Role {worker}: updated" in third.stdout, third.stdout + third.stderr
    wait_until("the Role put back in force", lambda: allowed(worker, "get", "pods", sub="log"), timeout=10)
