"""A run's Secret: its secret job variables and its own API key, never in the Job's spec.

Created before the Job (``create``), owned by the Job once it exists (``own``: Kubernetes' garbage
collector deletes it with the Job), deleted when the Job could not be created (``delete``). ``core``
is the worker's ``CoreV1Api``.
"""

from __future__ import annotations

import logging
from typing import Any

from job_templates import LABEL_RUN
from workers.base import InfrastructureError
from workers.kubernetes import status as kstatus

log = logging.getLogger("orchestrator.worker.kubernetes")


def create(core: Any, namespace: str, name: str, data: dict[str, str], run_id: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    body = {"metadata": {"name": name, "namespace": namespace, "labels": {LABEL_RUN: str(run_id)}},
            "type": "Opaque", "stringData": data}
    try:
        core.create_namespaced_secret(namespace, body, _request_timeout=30)
    except ApiException as error:
        if error.status == 409:  # a retried start of the same run: hold the current values
            core.replace_namespaced_secret(name, namespace, body, _request_timeout=30)
            return
        hint = " (the worker's Role needs create, patch and delete on secrets)" if error.status == 403 else ""
        raise InfrastructureError(f"cannot create the run's Secret {namespace}/{name}: "
                                  f"{kstatus.explain(error)}{hint}") from error


def own(core: Any, namespace: str, name: str, job: Any) -> None:
    """The Job owns the Secret: Kubernetes' garbage collector deletes it with the Job."""
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": job.name, "uid": job.uid}
    try:
        core.patch_namespaced_secret(name, namespace, {"metadata": {"ownerReferences": [owner]}},
                                     _request_timeout=30)
    except Exception as error:  # noqa: BLE001 - the run goes on; the Secret then outlives its Job
        log.warning("Secret %s/%s: could not make Job %s its owner: %s", namespace, name, job.name, error)


def delete(core: Any, namespace: str, name: str | None) -> None:
    if not name:
        return
    try:
        core.delete_namespaced_secret(name, namespace, _request_timeout=30)
    except Exception as error:  # noqa: BLE001 - best effort after a failed start
        log.warning("Secret %s/%s: could not delete it: %s", namespace, name, error)
