"""One loop for every background service of the server (dispatcher, reaper, scheduler).

A service is one method, ``step()``: it makes one pass and returns how many seconds may pass
before the next one. The loop adds what every service needs and used to write by hand:

* ``start()`` / ``stop()``: one daemon thread; ``stop`` wakes it and joins it.
* ``wake()``: a pass now (something changed -- usually told by the event hub, ``orchestrator/hub``).
* ``wake_at(t)`` / ``wake_after(s)``: a pass no later than that (the earliest request wins).
* back-off: a pass that raises is logged and retried after 1 s, 2 s, 4 s ... up to
  ``MAX_BACKOFF_SECONDS`` (the database may be down for a while: no log flood, and a recovery is
  still noticed within seconds), and at 1 s again after a success.
* ``min_gap``: a burst of wake-ups (an API creating hundreds of deployments a second) becomes a few
  passes, not one per change.

Why one thread per service and not one loop for all: every pass is blocking database I/O
(synchronous SQLAlchemy), and a long scheduler pass (creating thousands of runs) must not delay the
dispatcher publishing a run that is due now, nor the reaper. Three threads cost nothing here; one
shared loop would need a pool of threads anyway to keep them independent.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

log = logging.getLogger("orchestrator.service")

MAX_BACKOFF_SECONDS = 5.0


class Closable(Protocol):
    def close(self) -> None: ...


class Service:
    """Subclasses implement ``step``; everything else is the loop's."""

    name = "service"
    min_gap = 0.0  # seconds between the starts of two passes, however often woken

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: float | None = None  # monotonic time of the next pass asked for by wake/wake_at
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._subscriptions: list[Closable] = []
        self.passes = 0  # completed passes (tests wait on it instead of sleeping)

    def step(self) -> float:
        """One pass. Returns seconds until the next pass is needed if nothing wakes the service.
        May raise: the loop logs it and backs off."""
        raise NotImplementedError

    def subscribe(self) -> list[Closable]:
        """Called by ``start``: subscribe to what wakes this service (hub subscriptions); ``stop``
        closes them."""
        return []

    def failed(self, error: Exception) -> None:
        """Called after ``step`` raised (after logging), before the back-off; a hook for services
        whose judgement depends on having been healthy for a while (the reaper)."""

    # --- asking for a pass -------------------------------------------------------------------

    def wake(self) -> None:
        """A pass as soon as possible. Thread-safe, cheap, never blocks on a pass."""
        self.wake_at(time.monotonic())

    def wake_after(self, seconds: float) -> None:
        self.wake_at(time.monotonic() + seconds)

    def wake_at(self, moment: float) -> None:
        """A pass no later than ``moment`` (``time.monotonic()`` clock); an earlier request stands."""
        with self._cond:
            if self._due is None or moment < self._due:
                self._due = moment
                self._cond.notify()

    # --- the loop ----------------------------------------------------------------------------

    def run_forever(self) -> None:
        failures = 0
        while True:
            began = time.monotonic()
            with self._cond:
                if self._stopping:
                    return
                if self._due is not None and self._due <= began:
                    self._due = None  # this pass answers every request made before it
            try:
                wait = self.step()
                failures = 0
                self.passes += 1
            except Exception as error:  # the database may be down for a while: keep trying
                log.exception("%s pass failed", self.name)
                failures += 1
                self.failed(error)
                wait = min(MAX_BACKOFF_SECONDS, 2.0 ** (failures - 1))
            self._sleep(began, began + max(0.0, wait) if failures == 0 else time.monotonic() + wait)

    def _sleep(self, began: float, until: float) -> None:
        earliest = began + self.min_gap
        with self._cond:
            while not self._stopping:
                due = until if self._due is None else min(until, self._due)
                now = time.monotonic()
                if due <= now and earliest <= now:
                    return
                self._cond.wait(max(due, earliest) - now)

    def start(self) -> None:
        self._subscriptions = self.subscribe()
        with self._cond:
            self._stopping = False
        self._thread = threading.Thread(target=self.run_forever, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions = []
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None


__all__ = ["Service", "MAX_BACKOFF_SECONDS"]
