"""The thread that ships what a flow-run process queues to the API in batches, so the flow never
waits on the network: its log lines (``logs.LogShipper``) and its task runs
(``task_runs.TaskRunShipper``). Each kind keeps its own queue and says how a batch is sent."""

from __future__ import annotations

import abc
import threading

FLUSH_SECONDS = 0.5  # the longest a queued item waits when the queue is not full
MAX_BATCH = 500  # items per request; a queue this long is sent at once


class BatchShipper(abc.ABC):
    def __init__(self, thread_name: str) -> None:
        self._lock = threading.Lock()  # guards the subclass's queue
        # Held while a batch is taken and sent: two flushes (this thread's and a state report's)
        # never send out of order, so an older item cannot land after a newer one.
        self._sending = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=thread_name, daemon=True)
        self._armed = False  # ``start`` was called: the thread starts with the first item queued
        self._thread_started = False
        self._start_lock = threading.RLock()  # re-entrant: a signal handler's print may queue a line

    @abc.abstractmethod
    def _ship(self) -> None:
        """Take everything queued (under ``self._lock``) and send it, ``MAX_BATCH`` at a time.
        Never raises: shipping must not break the flow."""

    def queued(self, size: int) -> None:
        """Call after queueing an item (outside ``self._lock``) with the queue's new size."""
        if self._armed and not self._thread_started:
            self._start_thread()
        if size >= MAX_BATCH:
            self._wake.set()

    def start(self) -> None:
        """Ship in the background from now on. The thread itself starts with the first item
        queued: a flow-run process that queues nothing before its RUNNING report (or at all) does
        not wait there for a thread to be scheduled, 1-3 ms each on a loaded machine
        (``bench/run_timeline.py``). Until then a state report's ``flush`` ships in its caller."""
        self._armed = True

    def _start_thread(self) -> None:
        with self._start_lock:
            if self._thread_started:
                return
            self._thread_started = True
        try:
            self._thread.start()
        except RuntimeError:  # started meanwhile by a re-entrant call, or no thread to be had: the reports flush
            pass

    def _loop(self) -> None:
        while not self._stopping:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Send everything queued so far; returns when it was sent (or given up on)."""
        with self._sending:
            self._ship()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.flush()
