"""A worker's name and its presence at the API: the name claimed by its first heartbeat, the
heartbeats that keep it (and renew the lease on every run it holds), and the cancellation channel,
a long-poll the API answers the moment a run is cancelled. Refused as another process's, the name
is lost, and the worker stops as a warm shutdown does (``Liveness._name_lost``).

``BaseWorker`` (``workers/base.py``) is a ``Liveness``: what this part needs of the worker -- its
client and pool, the runs it holds, how it cancels one and shuts down -- is listed on the class.
"""

from __future__ import annotations

import abc
import logging
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.errors import OrchestratorError, WorkerNameTaken

if TYPE_CHECKING:
    from orchestrator.client import Client

log = logging.getLogger("orchestrator.worker")


class Liveness(abc.ABC):
    # What of the worker this part uses, set up by ``BaseWorker.__init__``.
    client: Client
    pool: str
    _lock: threading.Lock
    _cancel_requested: set[uuid.UUID]

    def __init__(self, name: str, heartbeat_seconds: float) -> None:
        self.name = name
        # This process's id, sent with each heartbeat: the API refuses the beats of a process that
        # no longer holds its name (``lost_name``), so two processes never serve under one name.
        self.instance = uuid.uuid4()
        self.lost_name: WorkerNameTaken | None = None
        # Called once when the name is lost (``serve`` stops Celery's consumer from there).
        self.on_name_lost: Callable[[], None] | None = None
        self.heartbeat_seconds = heartbeat_seconds
        self._stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        # Called on the heartbeat thread after each heartbeat the API took (the Celery worker
        # follows its pool's new work queues from there).
        self.after_beat: Callable[[], None] | None = None

    @abc.abstractmethod
    def running(self) -> list[uuid.UUID]:
        """Runs whose infrastructure this worker is watching now: each heartbeat names them."""

    @abc.abstractmethod
    def cancel(self, run_id: uuid.UUID) -> None:
        """Stop the run's infrastructure: the cancellation channel heard the run was cancelled."""

    @abc.abstractmethod
    def shutting_down(self) -> None:
        """Shutdown has begun (here: the name was lost)."""

    def claim_name(self) -> None:
        """The worker's first heartbeat: the name is this process's from here on, or
        ``WorkerNameTaken`` when a worker of the pool that is ONLINE holds it."""
        self.client.heartbeat(self.pool, self.name, starting=True, instance=self.instance)

    def start_heartbeat(self) -> None:
        """Start the liveness threads: heartbeats (which renew the lease on every run held) and
        the cancellation listener (a long-poll the API answers the moment a run is cancelled)."""
        self.beat()
        self._heartbeat_thread = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._heartbeat_thread.start()
        threading.Thread(target=self._cancellation_loop, name="cancellations", daemon=True).start()

    def beat(self) -> bool:
        try:
            self.client.heartbeat(self.pool, self.name, self.running(), instance=self.instance)
            return True
        except WorkerNameTaken as error:
            self._name_lost(error)
            return False
        except OrchestratorError as error:
            log.warning("heartbeat failed: %s", error)
            return False

    def _name_lost(self, error: WorkerNameTaken) -> None:
        """Another process holds this worker's name now (this one was cut off from the API while
        the name went OFFLINE, and a worker started under it). Two processes must not serve under
        one name -- runs, cancellations and restart recovery all go by it -- so this one stops as a
        warm shutdown does: no more claims or heartbeats, the runs it started finish and are
        reported, then ``orch worker start`` exits 1 (``start_worker``)."""
        with self._lock:
            if self.lost_name is not None:
                return
            self.lost_name = error
        log.error("%s; this worker stops: it claims no more runs, lets the runs it started finish, then exits. "
                  "Give each worker process its own --name", error.detail)
        self._stop.set()
        self.shutting_down()
        if self.on_name_lost is not None:
            self.on_name_lost()

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            if self.beat() and self.after_beat is not None:
                try:
                    self.after_beat()
                except Exception:  # noqa: BLE001 - must not end the heartbeats
                    log.exception("after-heartbeat hook failed")

    def _cancellation_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                handled = list(self._cancel_requested)
            try:
                requested = self.client.wait_for_cancellations(self.pool, self.name, timeout=30, exclude=handled,
                                                               instance=self.instance)
            except WorkerNameTaken as error:
                self._name_lost(error)
                return
            except OrchestratorError as error:
                log.warning("cancellation channel: %s", error)
                self._stop.wait(1.0)
                continue
            for run_id in requested:
                self.cancel(run_id)
