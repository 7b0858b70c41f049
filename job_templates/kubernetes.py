"""Pure building of the Kubernetes Job a run is started as.

The pool's base job template (``defaults/kubernetes.json``) renders to a job configuration whose
``job_manifest`` is a batch/v1 Job: image, pull policy, resources, service account, deadlines and
labels come from it. ``build_job`` turns that rendered configuration into the manifest the worker
creates, adding what names the run:

* the namespace (the configuration's ``namespace``, else the manifest's, else ``default``) and a
  ``generateName`` when the manifest names no Job;
* ``orchestrator.*`` labels on the Job and its pod (run id, pool, worker: what ``recover`` and
  ``kubectl`` select by) and annotations (run name, pod watch timeout);
* on the first container: a name, ``command``/``args`` split like a shell would when given as text,
  the default command when neither is given, and ``env`` merged (the configuration's, then the
  run's, over the manifest's own).

No API call and no Kubernetes client here: the worker (``workers/kubernetes.py``) creates the Job.
"""

from __future__ import annotations

import copy
import re
import shlex
import uuid
from collections.abc import Mapping
from typing import Any

from job_templates import DEFAULT_COMMAND, LABEL_POOL, LABEL_RUN, LABEL_WORKER
from job_templates.secret_env import kubernetes_env_entry

ANNOTATION_RUN_NAME = "orchestrator.flow-run-name"
ANNOTATION_POD_TIMEOUT = "orchestrator.pod-watch-timeout-seconds"
DEFAULT_POD_WATCH_TIMEOUT = 300.0


class ManifestError(ValueError):
    """The rendered job configuration does not hold a usable Job manifest."""


def pod_watch_timeout(job: Mapping[str, Any]) -> float:
    """Seconds the pod may take to run before the run is CRASHED."""
    return float(job.get("pod_watch_timeout_seconds") or DEFAULT_POD_WATCH_TIMEOUT)


def build_job(job: Mapping[str, Any], *, pool: str, worker: str, run_id: uuid.UUID, run_name: str,
              run_env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Job manifest to create and its flow-run container (a part of it): the rendered
    ``job["job_manifest"]`` plus the run's labels, annotations, env and command."""
    manifest = copy.deepcopy(job.get("job_manifest"))
    if not isinstance(manifest, dict) or manifest.get("kind") != "Job" or manifest.get("apiVersion") != "batch/v1":
        raise ManifestError("the job's 'job_manifest' must be a batch/v1 Job manifest")
    metadata = manifest.setdefault("metadata", {})
    metadata["namespace"] = str(job.get("namespace") or metadata.get("namespace") or "default")
    if not metadata.get("name") and not metadata.get("generateName"):
        metadata["generateName"] = "orch-run-"
    ours = {LABEL_RUN: str(run_id), LABEL_POOL: label_value(pool), LABEL_WORKER: label_value(worker)}
    metadata["labels"] = {**(metadata.get("labels") or {}), **ours}
    annotations = metadata.setdefault("annotations", {})
    annotations[ANNOTATION_RUN_NAME] = run_name
    try:
        pod = manifest["spec"]["template"]
        containers = pod["spec"]["containers"]
        container = containers[0]
    except (KeyError, IndexError, TypeError):
        raise ManifestError("the Job manifest has no spec.template.spec.containers[0]") from None
    pod_meta = pod.setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **ours}
    container.setdefault("name", "flow-run")
    for key in ("command", "args"):
        if isinstance(container.get(key), str):
            container[key] = shlex.split(container[key])
    if not container.get("command") and not container.get("args"):
        container["args"] = list(DEFAULT_COMMAND)
    env = {e["name"]: e for e in container.get("env") or [] if isinstance(e, dict) and "name" in e}
    for name, value in {**(job.get("env") or {}), **run_env}.items():
        env[str(name)] = kubernetes_env_entry(str(name), value)  # a secret_ref: valueFrom.secretKeyRef
    container["env"] = list(env.values())
    # ``recover`` reads it back: a restarted worker keeps the run's own pending deadline.
    annotations[ANNOTATION_POD_TIMEOUT] = str(pod_watch_timeout(job))
    return manifest, container


def label_value(value: str) -> str:
    """A valid label value: 63 characters at most of [A-Za-z0-9._-], alphanumeric at both ends."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", value)[:63].strip("._-") or "none"


def secret_name(run_id: uuid.UUID) -> str:
    """The Secret that holds one run's secret env values (owned by its Job, deleted with it)."""
    return f"orch-run-{run_id}"


def move_secret_env(container: dict[str, Any], secrets: set[str], name: str) -> dict[str, str]:
    """Take every plain ``env`` value of ``container`` that holds one of ``secrets`` (the clear
    texts of the run's secret job variables) out of the manifest: the entry becomes a
    ``secretKeyRef`` to the Secret ``name``, and the returned ``{key: value}`` is that Secret's
    data. Nothing secret is then readable in the Job's spec (``kubectl get job -o yaml``)."""
    data: dict[str, str] = {}
    if not secrets:
        return data
    for entry in container.get("env") or []:
        value = entry.get("value")
        if isinstance(value, str) and any(secret in value for secret in secrets):
            key = re.sub(r"[^-._a-zA-Z0-9]", "_", entry["name"])  # a Secret key's alphabet
            data[key] = value
            entry.pop("value")
            entry["valueFrom"] = {"secretKeyRef": {"name": name, "key": key}}
    return data

