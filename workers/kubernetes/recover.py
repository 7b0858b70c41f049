"""The Jobs a previous life of a Kubernetes worker left behind, as leftovers for the shared
restart-recovery policy (``workers/recovery.py``): the Jobs labelled with the worker's pool and
name, each with its handle rebuilt from the Job itself, running while the Job has no outcome."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

from job_templates.kubernetes import (
    ANNOTATION_POD_TIMEOUT,
    DEFAULT_POD_WATCH_TIMEOUT,
    LABEL_POOL,
    LABEL_RUN,
    LABEL_WORKER,
    label_value,
)
from workers.kubernetes import status as kstatus
from workers.kubernetes.job import RunJob
from workers.recovery import Leftover

log = logging.getLogger("orchestrator.worker.kubernetes")


def job_leftovers(batch: Any, pool: str, worker_name: str, namespaces: list[str]) -> Iterator[Leftover]:
    """The Jobs in ``namespaces`` labelled with ``pool`` and ``worker_name``, read with ``batch`` (a
    ``BatchV1Api``)."""
    selector = f"{LABEL_POOL}={label_value(pool)},{LABEL_WORKER}={label_value(worker_name)}"
    for namespace in namespaces:
        for job in batch.list_namespaced_job(namespace, label_selector=selector, _request_timeout=30).items:
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
