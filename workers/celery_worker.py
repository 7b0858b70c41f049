"""Runs a ``BaseWorker`` as a Celery worker consuming its pool's queues.

Celery's thread pool gives ``limit`` concurrent runs; each task blocks while its run's
infrastructure lives, so the broker never hands this worker more runs than it can start.

A worker serving all of its pool's work queues also serves the queues created after it started:
after each heartbeat it lists the pool's queues and subscribes to the new ones (``QueueFollower``).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery.signals import worker_shutting_down

from orchestrator.errors import OrchestratorError
from pools.broker import celery_app
from pools.names import RUN_FLOW_TASK, run_queue
from workers.base import BaseWorker

log = logging.getLogger("orchestrator.worker")


class QueueFollower:
    """Subscribes a running Celery worker to the work queues created in its pool since it started.

    Called on the worker's heartbeat thread; the subscription itself runs on Celery's consumer
    thread (``call_soon``, as Celery's own ``add_consumer`` remote command does). A new queue is
    consumed after the existing ones: the dispatcher, which publishes the highest-priority queue's
    runs first when slots are scarce, keeps priorities strict either way."""

    def __init__(self, worker: BaseWorker, celery_worker: Any, serving: list[str]) -> None:
        self.worker = worker
        self.celery_worker = celery_worker
        self.serving = set(serving)

    def __call__(self) -> None:
        consumer = getattr(self.celery_worker, "consumer", None)
        if consumer is None:  # Celery has not started consuming yet: the next heartbeat will do
            return
        try:
            names = [queue.name for queue in self.worker.client.list_work_queues(self.worker.pool)]
        except OrchestratorError as error:
            log.warning("could not list the pool's work queues: %s", error)
            return
        for name in names:
            if name not in self.serving:
                self.serving.add(name)
                queue = run_queue(self.worker.pool, name)
                # the same exchange and routing key Celery gives the queues it was started with
                consumer.call_soon(consumer.add_task_queue, queue, queue, "direct", queue)
                print(f"worker {self.worker.name} now also serving work queue '{name}' (created in pool "
                      f"'{self.worker.pool}' after it started)", flush=True)


def serve(worker: BaseWorker, *, broker_url: str, queue_names: list[str], follow_new_queues: bool = False,
          loglevel: str = "WARNING") -> None:
    """Consume ``queue_names`` of ``worker.pool`` until interrupted (SIGINT/SIGTERM: warm shutdown).
    With ``follow_new_queues``, queues created in the pool later are consumed too."""
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
    if follow_new_queues:
        worker.after_beat = QueueFollower(worker, celery_worker, queue_names)
    try:
        celery_worker.start()
    finally:
        worker.stop()
