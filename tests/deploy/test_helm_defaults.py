"""The chart as-is (issue 20 point 4): `helm install orch ./helm` with no values brings its own
PostgreSQL and Redis, the server's PodDisruptionBudget (and HorizontalPodAutoscaler when asked), and
optionally KEDA ScaledObjects on the pools' Redis lists and NetworkPolicies.

Rendered here, then installed on the real Kubernetes API server of testenv's k8s.sh. That cluster's
kubelet is a stand-in that would run each container's command on this machine (the images, the
volumes and the probes are not exercised), so the no-values install happens in a namespace whose
ResourceQuota admits no pod: every object the chart makes is created and checked by the real API
server, no container runs. The KEDA operator is not installed there: its two CRDs are (schemas that
accept any spec), so the ScaledObjects are created as objects; what KEDA would do with them is
checked by reading, on the test Redis, the list the chart names after a real publish.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pools.names import run_queue
from tests.conftest import missing_service
from tests.deploy.conftest import DEPLOY_REDIS_URL, wait_for
from tests.deploy.test_helm import CHART, CI_VALUES, EXTERNAL, helm_run, render

pytestmark = pytest.mark.timeout(300)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def env_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in doc["spec"]["template"]["spec"]["containers"][0].get("env", [])}


# --- rendered ----------------------------------------------------------------------------------


def test_no_values_bring_their_own_postgresql_and_redis(helm: str) -> None:
    docs = render(helm)
    sets = by_kind(docs, "StatefulSet")
    assert set(sets) == {"rel-orchestrator-postgresql", "rel-orchestrator-redis"}
    for name, image, port in (("postgresql", "postgres:16", 5432), ("redis", "redis:7", 6379)):
        stateful = sets[f"rel-orchestrator-{name}"]
        pod = stateful["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == image  # the official image
        assert container["ports"][0]["containerPort"] == port
        assert container["readinessProbe"]["exec"] and container["livenessProbe"]["exec"]
        (claim,) = stateful["spec"]["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == container["volumeMounts"][0]["name"] == "data"
        assert claim["spec"]["resources"]["requests"]["storage"]
        service = by_kind(docs, "Service")[f"rel-orchestrator-{name}"]
        assert service["spec"]["selector"] == stateful["spec"]["selector"]["matchLabels"]
        assert stateful["spec"]["serviceName"] == service["metadata"]["name"]
    # the passwords: generated, kept by helm on uninstall, and never copied into another object
    generated = by_kind(docs, "Secret")["rel-orchestrator-generated"]
    assert generated["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    passwords = generated["stringData"]
    assert set(passwords) == {"postgres-password", "redis-password"}
    assert all(len(p) == 32 and p.isalnum() for p in passwords.values())
    assert not any(p in json.dumps([d for d in docs if d is not generated]) for p in passwords.values())
    # the URLs point at them; Kubernetes expands $(POSTGRES_PASSWORD), defined before the URL
    server = by_kind(docs, "Deployment")["rel-orchestrator-server"]
    env = env_of(server)
    names = list(env)
    assert env["ORCH_DATABASE_URL"]["value"] == (
        "postgresql+psycopg://orchestrator:$(POSTGRES_PASSWORD)@rel-orchestrator-postgresql:5432/orchestrator")
    assert names.index("POSTGRES_PASSWORD") < names.index("ORCH_DATABASE_URL")
    assert env["ORCH_BROKER_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@rel-orchestrator-redis:6379/0"
    assert names.index("REDIS_PASSWORD") < names.index("ORCH_BROKER_URL")
    redis_args = sets["rel-orchestrator-redis"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert redis_args[:2] == ["--requirepass", "$(REDIS_PASSWORD)"]
    # the server and the migration Job wait for PostgreSQL before migrating
    migrate = by_kind(docs, "Job")["rel-orchestrator-migrate-1"]
    for doc in (server, migrate):
        (init,) = doc["spec"]["template"]["spec"]["initContainers"]
        assert "pg_isready" in init["command"][-1] and "rel-orchestrator-postgresql" in init["command"][-1]
    # one process worker for pool "default", probed with `orch worker check`; the server on /api/health
    worker = by_kind(docs, "Deployment")["rel-orchestrator-worker-default"]
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:6] == ["worker", "start", "--pool", "default", "--type", "process"]
    assert "orch worker check" in container["readinessProbe"]["exec"]["command"][-1]
    assert "orch worker check" in container["livenessProbe"]["exec"]["command"][-1]
    server_container = server["spec"]["template"]["spec"]["containers"][0]
    assert {server_container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {
        "/api/health"}
    # the server's disruption budget; no autoscaler, ScaledObject or NetworkPolicy unless asked
    (budget,) = by_kind(docs, "PodDisruptionBudget").values()
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == server["spec"]["selector"]["matchLabels"]
    assert not {"HorizontalPodAutoscaler", "ScaledObject", "NetworkPolicy"} & {d["kind"] for d in docs}


def test_an_upgrade_that_cannot_read_the_generated_passwords_stops_with_a_message(helm: str) -> None:
    # `helm template --is-upgrade` has no cluster: lookup finds nothing, as for a user without the
    # right to read Secrets. New passwords would lock the release out of its data: it must stop.
    blind = helm_run(helm, "template", "rel", str(CHART), "--namespace", "ns", "--is-upgrade")
    assert blind.returncode != 0
    assert "cannot read Secret ns/rel-orchestrator-generated" in blind.stderr
    assert "--set postgresql.password=" in blind.stderr
    given = render(helm, "--is-upgrade", "--set", "postgresql.password=pg-Ab12", "--set", "redis.password=rd-Cd34")
    data = by_kind(given, "Secret")["rel-orchestrator-generated"]["stringData"]
    assert data == {"postgres-password": "pg-Ab12", "redis-password": "rd-Cd34"}


def test_external_services_replace_the_bundled_ones(helm: str) -> None:
    docs = render(helm, *EXTERNAL)
    assert "StatefulSet" not in {d["kind"] for d in docs}
    assert set(by_kind(docs, "Secret")) == {"rel-orchestrator"}
    server = by_kind(docs, "Deployment")["rel-orchestrator-server"]
    assert "initContainers" not in server["spec"]["template"]["spec"]
    assert env_of(server)["ORCH_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "rel-orchestrator"


@pytest.mark.parametrize(("version", "pdb", "hpa"), [("1.20.0", "policy/v1beta1", "autoscaling/v2beta2"),
                                                     ("1.30.0", "policy/v1", "autoscaling/v2")])
def test_server_autoscaler_takes_over_the_replicas(helm: str, version: str, pdb: str, hpa: str) -> None:
    docs = render(helm, "--kube-version", version, "--set", "server.autoscaling.enabled=true",
                  "--set", "server.autoscaling.maxReplicas=6")
    (autoscaler,) = by_kind(docs, "HorizontalPodAutoscaler").values()
    assert autoscaler["apiVersion"] == hpa
    assert autoscaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                    "name": "rel-orchestrator-server"}
    assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (1, 6)
    assert "replicas" not in by_kind(docs, "Deployment")["rel-orchestrator-server"]["spec"]
    assert by_kind(docs, "PodDisruptionBudget")["rel-orchestrator-server"]["apiVersion"] == pdb
    assert "PodDisruptionBudget" not in {d["kind"] for d in render(
        helm, "--set", "server.podDisruptionBudget.enabled=false")}


def test_keda_scales_each_worker_on_the_lists_its_runs_are_pushed_to(helm: str) -> None:
    docs = render(helm, "--values", str(CI_VALUES))  # workers local (all queues) and k8s (default, high)
    scaled = by_kind(docs, "ScaledObject")
    deployments = by_kind(docs, "Deployment")
    assert set(scaled) == {"rel-orchestrator-worker-local", "rel-orchestrator-worker-k8s"}
    expected_lists = {"rel-orchestrator-worker-local": [run_queue("local", "default")],
                      "rel-orchestrator-worker-k8s": [run_queue("kubernetes", "default"),
                                                      run_queue("kubernetes", "high")]}
    for name, obj in scaled.items():
        assert obj["spec"]["scaleTargetRef"]["name"] == name and name in deployments
        assert "replicas" not in deployments[name]["spec"]  # KEDA owns them
        assert obj["spec"]["minReplicaCount"] == 0
        triggers = obj["spec"]["triggers"]
        assert [t["metadata"]["listName"] for t in triggers] == expected_lists[name]
        for trigger in triggers:
            assert trigger["type"] == "redis"
            assert trigger["metadata"]["address"] == "rel-orchestrator-redis.ns.svc:6379"
            assert trigger["metadata"]["databaseIndex"] == "0"
            assert trigger["authenticationRef"] == {"name": "rel-orchestrator-redis"}
    (auth,) = by_kind(docs, "TriggerAuthentication").values()
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "rel-orchestrator-generated",
                                                "key": "redis-password"}]
    # an external Redis: its host, port, database and password from broker.url
    docs = render(helm, *EXTERNAL, "--set", "broker.url=rediss://:s3cret@cache.internal:6380/3",
                  "--set", "keda.enabled=true")
    (trigger,) = by_kind(docs, "ScaledObject")["rel-orchestrator-worker-default"]["spec"]["triggers"]
    assert trigger["metadata"] == {"address": "cache.internal:6380", "listName": "orch/pool/default/default",
                                        "listLength": "5", "activationListLength": "0", "databaseIndex": "3",
                                        "enableTLS": "true"}
    assert by_kind(docs, "Secret")["rel-orchestrator"]["stringData"]["broker-password"] == "s3cret"


def test_keda_list_name_is_the_key_a_published_run_lands_on(helm: str) -> None:
    """The trigger's listName, read back on a real Redis after the dispatcher's publisher pushed a
    run for that pool and queue: KEDA would count exactly that list."""
    import redis

    from pools.publish import RedisTaskPublisher

    pool = f"keda-{uuid.uuid4().hex[:8]}"
    docs = render(helm, "--set", "keda.enabled=true", "--set", "workers[0].name=w", "--set", f"workers[0].pool={pool}",
                  "--set", "workers[0].queues={high}")
    (trigger,) = by_kind(docs, "ScaledObject")["rel-orchestrator-worker-w"]["spec"]["triggers"]
    client = redis.Redis.from_url(DEPLOY_REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        missing_service(f"Redis at {DEPLOY_REDIS_URL} ({type(error).__name__})")
    publisher = RedisTaskPublisher(DEPLOY_REDIS_URL)
    try:
        publisher.publish(run_queue(pool, "high"), uuid.uuid4())
        assert client.llen(trigger["metadata"]["listName"]) == 1
    finally:
        publisher.close()
        client.delete(run_queue(pool, "high"))
        client.close()


def test_network_policies_admit_only_the_services_users(helm: str) -> None:
    docs = render(helm, "--values", str(CI_VALUES))
    policies = by_kind(docs, "NetworkPolicy")
    assert set(policies) == {"rel-orchestrator-postgresql", "rel-orchestrator-redis"}

    def admitted(policy: dict[str, Any]) -> list[dict[str, Any]]:
        (rule,) = policy["spec"]["ingress"]
        return [peer["podSelector"] for peer in rule["from"]]

    def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
        exprs = selector.get("matchExpressions", [])
        return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()) and all(
            e["key"] in labels for e in exprs if e["operator"] == "Exists")

    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for d in docs if d["kind"] in ("Deployment", "Job", "StatefulSet")}
    for service, users in (("postgresql", {"rel-orchestrator-server", "rel-orchestrator-migrate-1"}),
                           ("redis", {"rel-orchestrator-server", "rel-orchestrator-worker-local",
                                      "rel-orchestrator-worker-k8s"})):
        policy = policies[f"rel-orchestrator-{service}"]
        assert matches(policy["spec"]["podSelector"], pods[f"rel-orchestrator-{service}"])
        reached = {name for name, labels in pods.items() if any(matches(s, labels) for s in admitted(policy))}
        assert reached == users, service


# --- installed on the real API server ----------------------------------------------------------

KEDA_CRDS = {"scaledobjects": "ScaledObject", "triggerauthentications": "TriggerAuthentication"}


@pytest.fixture
def quiet_namespace(kubeconfig: str) -> Iterator[tuple[str, Any]]:
    """A namespace whose ResourceQuota admits no pod (the stand-in kubelet would run the images'
    commands on this machine), with KEDA's CRDs present in the cluster."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    core, extensions = client.CoreV1Api(api), client.ApiextensionsV1Api(api)
    made = []
    for plural, kind in KEDA_CRDS.items():
        name = f"{plural}.keda.sh"
        try:
            extensions.read_custom_resource_definition(name)
        except client.ApiException as error:
            if error.status != 404:
                raise
            extensions.create_custom_resource_definition({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": name},
                "spec": {"group": "keda.sh", "scope": "Namespaced",
                         "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
                         "versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": {
                             "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}})
            made.append(name)
    namespace = f"orch-helm-defaults-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}})
    try:
        # helm finds the new kinds only once the API server serves them
        wait_for("KEDA's CRDs to be served", lambda: all(
            any(c.type == "Established" and c.status == "True"
                for c in extensions.read_custom_resource_definition(f"{p}.keda.sh").status.conditions or [])
            for p in KEDA_CRDS), 30)
        yield namespace, api
    finally:
        # The StatefulSets' claims carry the pvc-protection finalizer, which only a controller this
        # cluster does not run removes: drop it, or the namespace would never finish terminating.
        for claim in core.list_namespaced_persistent_volume_claim(namespace).items:
            core.patch_namespaced_persistent_volume_claim(claim.metadata.name, namespace,
                                                          {"metadata": {"finalizers": None}})
        core.delete_namespace(namespace)
        for name in made:
            extensions.delete_custom_resource_definition(name)
        api.close()


def test_install_with_no_values_then_upgrade_keeps_the_passwords(helm: str, kubeconfig: str,
                                                                 quiet_namespace: tuple[str, Any]) -> None:
    from kubernetes import client

    namespace, api = quiet_namespace
    core, apps, objects = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([helm, *args, "--namespace", namespace, "--kubeconfig", kubeconfig],
                              capture_output=True, text=True, timeout=180, check=False)

    installed = run("install", "orch", str(CHART))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    sets = {s.metadata.name: s for s in apps.list_namespaced_stateful_set(namespace).items}
    assert set(sets) == {"orch-orchestrator-postgresql", "orch-orchestrator-redis"}
    assert sets["orch-orchestrator-postgresql"].spec.template.spec.containers[0].image == "postgres:16"
    assert [c.metadata.name for c in sets["orch-orchestrator-redis"].spec.volume_claim_templates] == ["data"]
    assert {d.metadata.name for d in apps.list_namespaced_deployment(namespace).items} == {
        "orch-orchestrator-server", "orch-orchestrator-worker-default"}
    assert {s.metadata.name for s in core.list_namespaced_service(namespace).items} == {
        "orch-orchestrator-server", "orch-orchestrator-postgresql", "orch-orchestrator-redis"}
    # the chart chose the budget's version this API server serves (1.20: policy/v1beta1; the Python
    # client no longer has the beta APIs, hence the generic calls)
    budgets = objects.list_namespaced_custom_object("policy", "v1beta1", namespace, "poddisruptionbudgets")["items"]
    assert [(b["metadata"]["name"], b["spec"]["maxUnavailable"]) for b in budgets] == [("orch-orchestrator-server", 1)]

    def passwords() -> dict[str, str]:
        data = core.read_namespaced_secret("orch-orchestrator-generated", namespace).data
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    first = passwords()
    assert set(first) == {"postgres-password", "redis-password"} and all(len(p) == 32 for p in first.values())
    # an upgrade (here also switching on the autoscaler and KEDA) finds the same passwords
    upgraded = run("upgrade", "orch", str(CHART), "--set", "server.autoscaling.enabled=true",
                   "--set", "keda.enabled=true")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert passwords() == first
    hpa = objects.get_namespaced_custom_object("autoscaling", "v2beta2", namespace, "horizontalpodautoscalers",
                                               "orch-orchestrator-server")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "orch-orchestrator-server"
    scaled = objects.list_namespaced_custom_object("keda.sh", "v1alpha1", namespace, "scaledobjects")["items"]
    assert [(s["metadata"]["name"], s["spec"]["triggers"][0]["metadata"]["listName"]) for s in scaled] == [
        ("orch-orchestrator-worker-default", run_queue("default", "default"))]
    # uninstall keeps the generated Secret (the volumes' data was made with it): a reinstall reuses it
    assert run("uninstall", "orch", "--wait", "--timeout", "60s").returncode == 0
    assert passwords() == first
    reinstalled = run("install", "orch", str(CHART))
    assert reinstalled.returncode == 0, reinstalled.stdout + reinstalled.stderr
    assert passwords() == first
