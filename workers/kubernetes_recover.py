"""The Jobs a previous life of a Kubernetes worker left behind, as leftovers for the shared
restart-recovery policy (``workers/recovery.py``): the Jobs labelled with the worker's pool and
name, each with its handle rebuilt from the Job itself, running while the Job has no outcome."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

from job_templates.kubernetes import (
    ANNOTATION_POD_TIMEOUT,
    DEFAULT_POD_WATCH_TIMEOUT,
    LABEL_POOL,
    LABEL_RUN,
    LABEL_WORKER,
    label_value,
)
from workers import kubernetes_status as kstatus
from workers.recovery import Leftover

if TYPE_CHECKING:
    from workers.kubernetes import KubernetesWorker

log = logging.getLogger("orchestrator.worker.kubernetes")


def job_leftovers(worker: KubernetesWorker, namespaces: list[str] | None = None) -> Iterator[Leftover]:
    """``namespaces`` default to the pool template's namespace."""
    from job_templates.render import render
    from workers.kubernetes import RunJob

    if namespaces is None:
        template = worker.client.read_work_pool(worker.pool).base_job_template
        namespaces = [str(render(template, environ=os.environ).get("namespace") or "default")]
    selector = f"{LABEL_POOL}={label_value(worker.pool)},{LABEL_WORKER}={label_value(worker.name)}"
    for namespace in namespaces:
        for job in worker.batch.list_namespaced_job(namespace, label_selector=selector, _request_timeout=30).items:
            meta = job.metadata
            try:
                run_id = uuid.UUID(meta.labels.get(LABEL_RUN, ""))
            except ValueError:  # labelled by hand, not by ``start``
                log.warning("recover: Job %s/%s has no valid %s label", meta.namespace, meta.name, LABEL_RUN)
                continue
            timeout = float((meta.annotations or {}).get(ANNOTATION_POD_TIMEOUT, DEFAULT_POD_WATCH_TIMEOUT))
            handle = RunJob(run_id, meta.namespace, meta.name, meta.uid, job.spec.template.spec.containers[0].name,
                            meta.creation_timestamp.timestamp(), timeout, stream_output=False)
            yield Leftover(run_id, handle, running=kstatus.job_outcome(job) is None)
