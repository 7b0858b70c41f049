"""Runs a ``BaseWorker`` as a Celery worker consuming its pool's queues.

Celery's thread pool gives ``limit`` concurrent runs; each task blocks while its run's
infrastructure lives. A message is acknowledged as its task starts (``pools/broker.py``), so a
worker whose every slot is busy may still take up to ``limit`` more; they wait for its next free
slot, or are published again by the dispatcher (``dispatcher_redispatch_seconds``) for another worker.

A worker serving all of its pool's work queues also serves the queues created after it started:
after each heartbeat it lists the pool's queues and has Celery's consumer add the new ones
(``QueueFollower``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid
import warnings
from typing import TYPE_CHECKING, Any

from celery import bootsteps
from celery.apps.worker import install_worker_term_handler
from celery.exceptions import SecurityWarning
from celery.signals import worker_shutting_down

from orchestrator.errors import OrchestratorError
from pools.broker import celery_app
from pools.names import RUN_FLOW_TASK, run_queue
from workers.base import BaseWorker

if TYPE_CHECKING:
    from celery.worker.consumer import Consumer

log = logging.getLogger("orchestrator.worker")


class QueueFollower:
    """Subscribes a running Celery worker to the work queues created in its pool since it started.

    Called on the worker's heartbeat thread. It reaches the worker's consumer through Celery's
    documented extension point, a consumer bootstep (``bootstep()``, "Extensions and Bootsteps" in
    Celery's guide), and adds each new queue with the consumer's documented
    ``add_task_queue``, handed to the consumer's own thread with ``call_soon`` -- what Celery's
    ``add_consumer`` remote control command does, with the exchange and routing key Celery gives
    the queues a worker starts with. (The remote control command itself is not used: it travels
    as a broadcast, which kombu's SQLAlchemy transport, the embedded broker, does not carry.) A new
    queue is consumed after the existing ones: the dispatcher, which publishes the highest-priority
    queue's runs first when slots are scarce, keeps priorities strict either way."""

    def __init__(self, worker: BaseWorker, serving: list[str]) -> None:
        self.worker = worker
        self.serving = set(serving)
        self.consumer: Consumer | None = None  # while Celery's consumer runs (bootstep)

    def bootstep(self) -> type[bootsteps.StartStopStep]:
        """A consumer bootstep lending this follower the consumer from its start to its stop
        (``app.steps["consumer"].add(...)``); it starts after the task consumer it adds queues to."""
        follower = self

        class LendConsumer(bootsteps.StartStopStep):
            requires = ("celery.worker.consumer.tasks:Tasks",)

            def start(self, parent: Consumer) -> None:
                follower.consumer = parent

            def stop(self, parent: Consumer) -> None:
                follower.consumer = None

        return LendConsumer

    def __call__(self) -> None:
        consumer = self.consumer
        if consumer is None:  # Celery is not consuming (yet, or between connections): next heartbeat
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
                # added to the app's queues too, so it is consumed again after a reconnection
                consumer.call_soon(consumer.add_task_queue, queue, exchange=queue, exchange_type="direct",
                                   routing_key=queue)
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
    def on_shutdown(how: str = "", **_: object) -> None:
        say_stopping(worker.name, waits=how == "Warm")  # Celery's own line is left out: ``_quiet_stop``
        worker.shutting_down()

    def stop_consuming() -> None:  # the name was lost: a warm shutdown, as SIGTERM's (Celery's own flag)
        from celery.worker import state

        state.should_stop = 1

    worker.on_name_lost = stop_consuming
    queues = [run_queue(worker.pool, name) for name in queue_names]
    worker.start_heartbeat()
    try:
        recovery = worker.recover()
        if recovery.adopted or recovery.finished or recovery.cleaned:
            log.warning("recovered from a previous life: adopted %d, finished %d, cleaned %d",
                        len(recovery.adopted), len(recovery.finished), len(recovery.cleaned))
    except Exception:  # recovery is best effort: the reaper still settles what it misses
        log.exception("recovery of a previous life's infrastructure failed")
    follower = QueueFollower(worker, queue_names) if follow_new_queues else None
    if follower is not None:
        app.steps["consumer"].add(follower.bootstep())
    # Celery warns a worker run as root, for the pickle messages it would then unpickle as root,
    # telling the user to "specify a different user using the --uid option": an option `orch worker
    # start` does not have, about a risk this app does not take (it accepts JSON only,
    # pools/broker.py). Which user runs the flows is the deployment's choice (the image's USER).
    warnings.filterwarnings("ignore", message="You're running the worker with superuser privileges",
                            category=SecurityWarning)
    celery_worker = _quiet_stop(app.Worker)(
        queues=queues,
        concurrency=worker.limit,
        pool="threads",
        hostname=f"{worker.name}@orchestrator",
        loglevel=loglevel,
        quiet=True,
        # Off, each for its reason: Celery's worker-heartbeat events (every 2 s) feed monitors such
        # as Flower, which nothing here runs; this worker's liveness is its heartbeat to the API and
        # the request it holds there, which the reaper acts on. Gossip consumes every other
        # worker's events (CPU growing with the number of workers) for Celery's clock and leader
        # election, which nothing here uses. Mingle asks the other workers, at start, for the
        # tasks revoked through Celery, waiting up to 1 s for their replies; runs are cancelled
        # through the API, never revoked. (On the embedded broker Celery turns all three off by
        # itself: they need broadcasts, which kombu's SQLAlchemy transport does not carry.)
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        optimization="fair",
    )
    if follower is not None:
        worker.after_beat = follower
    try:
        celery_worker.start()
    finally:
        worker.stop()


def _quiet_stop(worker_class: type[Any]) -> type[Any]:
    """Celery's worker class, its SIGTERM handler installed without its line ``worker: Warm
    shutdown (MainProcess)``: the worker says it stops in its own words (``serve``'s
    ``on_shutdown``); a Ctrl-C keeps Celery's warning that a second one stops the running flow runs."""

    class QuietStop(worker_class):  # type: ignore[misc, valid-type]
        def install_platform_tweaks(self, worker: Any) -> None:
            super().install_platform_tweaks(worker)
            install_worker_term_handler(worker, verbose=False)

    return QuietStop


def say_stopping(name: str, *, waits: bool = True) -> None:
    """The one line a worker prints when a signal stops it. Plain stderr, as Celery's own line:
    it is said in the signal's handler."""
    print(f"worker {name} stopping" + (": its running flow runs finish first" if waits else ""),
          file=sys.stderr, flush=True)


def stop_before_serving(name: str) -> None:
    """Until ``serve`` has Celery install its handlers, SIGTERM ends the worker the same way, with
    the same line (nothing runs yet), not silently by the signal's default action."""

    def stop(_signum: int, _frame: object) -> None:
        say_stopping(name)
        # Not ``raise SystemExit(0)``: raised by a signal's handler, it lands wherever the main thread
        # is, and in a weakref callback or a ``__del__`` Python only prints it and goes on (seen in
        # SQLAlchemy's ``_collection_gced``): the worker then served on, deaf to the SIGTERM. Nothing
        # an exit must wait for runs yet: no flow run is started before serving, and the fork server
        # leaves when its socket closes with this process.
        sys.stdout.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
