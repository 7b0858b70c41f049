"""Runs a ``BaseWorker`` as a Celery worker consuming its pool's queues.

Celery's thread pool gives ``limit`` concurrent runs; each task blocks while its run's
infrastructure lives, so the broker never hands this worker more runs than it can start.
"""

from __future__ import annotations

import logging
import uuid

from celery.signals import worker_shutting_down

from pools.broker import celery_app
from pools.names import RUN_FLOW_TASK, run_queue
from workers.base import BaseWorker

log = logging.getLogger("orchestrator.worker")


def serve(worker: BaseWorker, *, broker_url: str, queue_names: list[str], loglevel: str = "WARNING") -> None:
    """Consume ``queue_names`` of ``worker.pool`` until interrupted (SIGINT/SIGTERM: warm shutdown)."""
    app = celery_app(broker_url, name=f"orchestrator-worker-{worker.pool}")

    @app.task(name=RUN_FLOW_TASK, ignore_result=True)
    def run_flow(run_id: str) -> None:
        worker.handle(uuid.UUID(run_id))

    @worker_shutting_down.connect(weak=False)
    def on_shutdown(**_: object) -> None:
        worker.shutting_down()

    queues = [run_queue(worker.pool, name) for name in queue_names]
    worker.start_heartbeat()
    try:
        recovery = worker.recover()
        if recovery.adopted or recovery.finished or recovery.cleaned:
            log.warning("recovered from a previous life: adopted %d, finished %d, cleaned %d",
                        len(recovery.adopted), len(recovery.finished), len(recovery.cleaned))
    except Exception:  # recovery is best effort: the reaper still settles what it misses
        log.exception("recovery of a previous life's infrastructure failed")
    celery_worker = app.Worker(
        queues=queues,
        concurrency=worker.limit,
        pool="threads",
        hostname=f"{worker.name}@orchestrator",
        loglevel=loglevel,
        quiet=True,
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        optimization="fair",
    )
    try:
        celery_worker.start()
    finally:
        worker.stop()
