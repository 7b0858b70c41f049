"""What a Kubernetes pool needs in its namespace, made once: ``orch work-pool provision-infrastructure``.

Five objects: the namespace; the worker's ServiceAccount ``orch-<pool>-worker``, a Role with what
the Kubernetes worker does there (the rules ``helm/templates/rbac.yaml`` grants: create, watch and
delete the runs' Jobs, watch and delete their pods, read their logs and events, keep the Secret of a
run's secret job variables) and the RoleBinding
giving it that Role; and the runs' ServiceAccount ``orch-<pool>-runs``, with no rights and no
token mounted: a flow-run pod talks only to the orchestrator API, so it gets none of the worker's
rights. The pool's base job template records the namespace and the runs' account as its
``namespace`` and ``service_account_name`` defaults, so the runs' Jobs land there.

Idempotent: an object that exists as it should is left alone, a Role or RoleBinding that differs
is put back as it should be, and the report says which was which.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from orchestrator.errors import OrchestratorError

# What the worker calls (workers/kubernetes/worker.py), as the chart's Role grants it.
WORKER_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
    # A run's secret job variables go into a Secret of its own, owned by its Job (workers/kubernetes/job.py).
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "update", "patch", "delete"]},
]
NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # a DNS-1123 label
MANAGED_BY = {"app.kubernetes.io/managed-by": "orchestrator"}
POOL_ANNOTATION = "orchestrator/work-pool"


class ProvisionError(OrchestratorError):
    """The cluster refused, or could not be reached; the message says which and why."""


@dataclass(frozen=True)
class Change:
    kind: str
    name: str
    action: str  # created, updated or unchanged

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.action}"


def base_name(pool: str) -> str:
    """The start of the pool's object names (DNS-1123, room left for ``-worker``): ``orch-<pool>``,
    the pool's name lowercased with other characters as '-', plus a short hash when that changed the
    name (two pools never share one)."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", pool.lower()).strip("-") or "pool"
    name = f"orch-{cleaned}"
    if cleaned != pool:
        name = f"{name[:46].rstrip('-')}-{hashlib.sha256(pool.encode()).hexdigest()[:8]}"
    return name[:55].rstrip("-")


def worker_account(pool: str) -> str:
    """The worker's ServiceAccount, Role and RoleBinding."""
    return f"{base_name(pool)}-worker"


def runs_account(pool: str) -> str:
    """The flow-run pods' ServiceAccount: no rights."""
    return f"{base_name(pool)}-runs"


def manifests(pool: str, namespace: str) -> list[dict[str, Any]]:
    """The five objects, in the order they are made."""
    name = worker_account(pool)
    meta = {"labels": dict(MANAGED_BY), "annotations": {POOL_ANNOTATION: pool}}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, **copy.deepcopy(meta)}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": name, "namespace": namespace, **copy.deepcopy(meta)}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": name, "namespace": namespace, **copy.deepcopy(meta)},
         "rules": copy.deepcopy(WORKER_RULES)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": name, "namespace": namespace, **copy.deepcopy(meta)},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
        {"apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": False,
         "metadata": {"name": runs_account(pool), "namespace": namespace, **copy.deepcopy(meta)}},
    ]


def load_api_client(kubeconfig: str | None = None) -> Any:
    """Credentials as the Kubernetes worker finds them: in-cluster when run in a pod, else
    ``kubeconfig``, ``$KUBECONFIG`` or ``~/.kube/config``."""
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)
        else:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    except Exception as error:  # the loaders raise several types for a missing or bad file
        raise ProvisionError(f"cannot load Kubernetes credentials: {error}") from error
    return client.ApiClient(cfg)


def _rules(role: Any) -> list[dict[str, Any]]:
    return [{"apiGroups": list(r.api_groups or []), "resources": list(r.resources or []), "verbs": list(r.verbs or [])}
            for r in role.rules or []]


def _binding_as_it_should_be(found: Any, wanted: Mapping[str, Any]) -> bool:
    ref = found.role_ref
    subjects = [{"kind": s.kind, "name": s.name, "namespace": s.namespace} for s in found.subjects or []]
    return (ref.kind, ref.name) == ("Role", wanted["roleRef"]["name"]) and subjects == wanted["subjects"]


def _calls(core: Any, rbac: Any, doc: dict[str, Any]) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """The read and the create of ``doc``'s kind."""
    name, namespace = doc["metadata"]["name"], doc["metadata"].get("namespace")
    if doc["kind"] == "Namespace":
        return partial(core.read_namespace, name), partial(core.create_namespace, doc)
    api, suffix = {"ServiceAccount": (core, "service_account"), "Role": (rbac, "role"),
                   "RoleBinding": (rbac, "role_binding")}[doc["kind"]]
    return (partial(getattr(api, f"read_namespaced_{suffix}"), name, namespace),
            partial(getattr(api, f"create_namespaced_{suffix}"), namespace, doc))


def apply(api_client: Any, docs: list[dict[str, Any]]) -> list[Change]:
    """Makes each object that is missing, puts back a Role or RoleBinding that differs."""
    import urllib3
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core, rbac = client.CoreV1Api(api_client), client.RbacAuthorizationV1Api(api_client)
    changes = []
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        namespace = doc["metadata"].get("namespace")
        read, create = _calls(core, rbac, doc)
        where = f"{kind} {name}" + (f" in namespace {namespace}" if namespace else "")
        try:
            try:
                found = read()
            except ApiException as error:
                if error.status != 404:
                    raise
                create()
                changes.append(Change(kind, name, "created"))
                continue
            if kind == "Role" and _rules(found) != doc["rules"]:
                rbac.replace_namespaced_role(name, namespace, doc)
                changes.append(Change(kind, name, "updated"))
            elif kind == "RoleBinding" and not _binding_as_it_should_be(found, doc):
                # a binding's roleRef cannot change: made again
                rbac.delete_namespaced_role_binding(name, namespace)
                rbac.create_namespaced_role_binding(namespace, doc)
                changes.append(Change(kind, name, "updated"))
            else:
                changes.append(Change(kind, name, "unchanged"))
        except ApiException as error:
            reason = (error.reason or "").strip() or f"HTTP {error.status}"
            hint = " (the credentials may not create it: ask a cluster admin, or use --dry-run)" \
                if error.status == 403 else ""
            raise ProvisionError(f"cannot provision {where}: {reason}{hint}") from error
        except urllib3.exceptions.HTTPError as error:  # refused, timed out, TLS: no answer at all
            raise ProvisionError(f"cannot reach the Kubernetes API: {error}") from error
    return changes


def record_in_template(template: Mapping[str, Any], namespace: str, service_account: str) -> tuple[
        dict[str, Any], list[str]]:
    """The base job template with ``namespace`` and ``service_account_name`` defaulting to these,
    and the variables it lacks (a custom template that does not use them)."""
    updated = copy.deepcopy(dict(template))
    properties = updated.setdefault("variables", {}).setdefault("properties", {})
    missing = []
    for variable, value in (("namespace", namespace), ("service_account_name", service_account)):
        if isinstance(properties.get(variable), dict):
            properties[variable]["default"] = value
        else:
            missing.append(variable)
    return updated, missing
