"""What a restarted Kubernetes worker does with the Jobs it left behind.

It finds the Jobs of its pool and name, and settles each by its run's state:
- the still-active Job of a run that is final, or no longer held by this worker, is deleted;
- a CANCELLING run's Job is deleted and the run CANCELLED;
- a live run's Job is watched again in a background thread (``Recovery.threads``), as if this
  worker had created it;
- a Job that ended unwatched ends its run the way ``KubernetesWorker.wait`` would.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import TYPE_CHECKING, Any

from job_templates.kubernetes import (
    ANNOTATION_POD_TIMEOUT,
    DEFAULT_POD_WATCH_TIMEOUT,
    LABEL_POOL,
    LABEL_RUN,
    LABEL_WORKER,
    label_value,
)
from orchestrator.errors import OrchestratorError
from orchestrator.states import FINAL_STATES, StateType
from workers import kubernetes_status as kstatus
from workers.base import InfrastructureResult, Recovery

if TYPE_CHECKING:
    from workers.kubernetes import KubernetesWorker

log = logging.getLogger("orchestrator.worker.kubernetes")


def recover_jobs(worker: KubernetesWorker, namespaces: list[str] | None = None) -> Recovery:
    """``namespaces`` default to the pool template's namespace."""
    from job_templates.render import render

    if namespaces is None:
        template = worker.client.read_work_pool(worker.pool).base_job_template
        namespaces = [str(render(template, environ=os.environ).get("namespace") or "default")]
    selector = f"{LABEL_POOL}={label_value(worker.pool)},{LABEL_WORKER}={label_value(worker.name)}"
    recovery = Recovery()
    for namespace in namespaces:
        for job in worker.batch.list_namespaced_job(namespace, label_selector=selector, _request_timeout=30).items:
            _recover_one(worker, job, recovery)
    return recovery


def _recover_one(worker: KubernetesWorker, job: Any, recovery: Recovery) -> None:
    from workers.kubernetes import RunJob

    meta = job.metadata
    try:
        run = worker.client.read_flow_run(uuid.UUID(meta.labels.get(LABEL_RUN, "")))
    except (ValueError, OrchestratorError) as error:
        log.warning("recover: Job %s/%s: %s", meta.namespace, meta.name, error)
        return
    containers = job.spec.template.spec.containers
    annotations = meta.annotations or {}
    timeout = float(annotations.get(ANNOTATION_POD_TIMEOUT, DEFAULT_POD_WATCH_TIMEOUT))
    handle = RunJob(run.id, meta.namespace, meta.name, meta.uid, containers[0].name,
                    meta.creation_timestamp.timestamp(), timeout, stream_output=False)
    active = kstatus.job_outcome(job) is None
    if run.state.type in FINAL_STATES or run.worker_name != worker.name:  # ended, or handed on meanwhile
        if active:
            worker.kill(handle, grace_seconds=10)
        recovery.cleaned.append(run.id)
    elif active and run.state.type != StateType.CANCELLING:
        recovery.adopted.append(run.id)
        recovery.threads.append(worker.adopt(run.id, handle))
    else:
        if active:  # CANCELLING: the cancellation was never carried out
            worker.kill(handle, grace_seconds=10)
            worker.settle(run.id, InfrastructureResult(-1, "Job deleted on cancellation"))
        else:
            worker.settle(run.id, worker.wait(handle))
        recovery.finished.append(run.id)
