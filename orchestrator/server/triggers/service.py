"""The trigger service: evaluates new events against the enabled automations on the server's
``Service`` loop.

Woken by the hub: ``EVENTS`` (events were recorded, on any replica) runs a pass when one of the
recorded names may concern an enabled trigger, ``AUTOMATIONS`` re-reads the automations first (and
``RESYNC`` both). Events no trigger looks at (most of a busy server's: every run's state changes)
are passed over ``IDLE_PASS_SECONDS`` later, together: they advance the cursor and nothing else, and
a pass per commit for them was a transaction per run state change for nothing. Between events it sleeps until the earliest
thing the clock owes: a Proactive window's end, an open gap's grace, a held event's wait, the
sweep of expired buckets -- never a poll. After a pass commits it publishes what it created (runs
to the broker, hub events) and wakes the webhook caller.

The webhook caller (``calls.py``: its thread, its pool and urllib) starts with the first pass that
queued a call, or that finds calls left to make (``pending``, or ``calling`` by a server that
stopped: another replica's, or this one's before a restart); until then the pass looks for those
every ``CALLS_CHECK_SECONDS``, as often as the caller would. A server whose automations call no
webhook never starts it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.hub import AUTOMATIONS, EVENTS, RESYNC, Hub
from orchestrator.server.service import Closable, Service
from orchestrator.server.services.events import recorded_names
from orchestrator.server.triggers.evaluator import Evaluator, Raced

if TYPE_CHECKING:
    from orchestrator.server.triggers.calls import Caller

log = logging.getLogger("orchestrator.triggers")
RACED_RETRY_SECONDS = 0.05
IDLE_PASS_SECONDS = 1.0
CALLS_CHECK_SECONDS = 30.0  # how often a server without a caller looks for calls left to make


class TriggerService(Service):
    name = "triggers"
    # Events arrive one commit at a time (a POST each, every state change): a pass per 10 ms at most
    # evaluates a burst together instead of paying a transaction per commit; an event waits 10 ms at worst.
    min_gap = 0.01

    def __init__(self, sessions: sessionmaker[Session], hub: Hub, *, make_calls: bool = True,
                 publish_runs: Callable[[Sequence[m.FlowRun]], None] | None = None,
                 reread_seconds: float = 30.0) -> None:
        super().__init__()
        self.sessions, self.hub = sessions, hub
        self.make_calls = make_calls  # this server makes the webhook calls of firings (its caller, when needed)
        self.caller: Caller | None = None
        self._calls_looked_for = -CALLS_CHECK_SECONDS  # monotonic
        self._caller_lock = threading.Lock()  # ``stop`` (another thread) against a pass starting it
        self._stopped = False
        self.publish_runs = publish_runs
        self.reread_seconds = reread_seconds
        self.evaluator = Evaluator(sessions)
        self.evaluated = 0  # events evaluated (tests and the benchmark read it)
        self.firings = 0

    def subscribe(self) -> list[Closable]:
        return [self.hub.subscribe(EVENTS, self._recorded),
                self.hub.subscribe(AUTOMATIONS, self._automations_changed)]

    def _recorded(self, key: str) -> None:
        if self.evaluator.may_cover(recorded_names(key)):
            self.wake()
        else:
            self.wake_after(IDLE_PASS_SECONDS)

    def _automations_changed(self, key: str) -> None:
        self.evaluator.reload()
        self.wake()

    def step(self) -> float:
        self._look_for_calls()
        try:
            work, next_at = self.evaluator.run_pass()
        except Raced:
            return RACED_RETRY_SECONDS
        if work is not None:
            self.evaluated += work.evaluated
            self.firings += work.firings
            after = work.after
            if after.runs and self.publish_runs is not None:
                self.publish_runs(after.runs)
            from orchestrator.server.hub import run_events

            hub_events = [*after.hub, *(e for run in after.runs for e in run_events(run))]
            if hub_events:
                self.hub.publish(*hub_events)
            if after.calls:
                self._call()
        seconds = (next_at - utcnow()).total_seconds() if next_at else self.reread_seconds
        return max(0.0, min(seconds, self.reread_seconds))

    def failed(self, error: Exception) -> None:
        self.evaluator.reload()  # a failed pass rolled back: re-read everything next time

    def _look_for_calls(self) -> None:
        """Start the caller if calls are left to make (at the first pass, then every
        ``CALLS_CHECK_SECONDS`` until it runs)."""
        if self.caller is not None or not self.make_calls:
            return
        now = time.monotonic()
        if now - self._calls_looked_for < CALLS_CHECK_SECONDS:
            return
        with self.sessions() as session:
            left = session.scalar(select(exists().where(m.AutomationCall.state.in_(("pending", "calling")))))
        self._calls_looked_for = now
        if left:
            self._call()

    def _call(self) -> None:
        """Have the caller make the calls queued: started now if it is not running yet."""
        if not self.make_calls:
            return
        with self._caller_lock:
            if self.caller is None and not self._stopped:
                from orchestrator.server.triggers.calls import Caller

                self.caller = Caller(self.sessions)
                self.caller.start()  # its first pass claims what is pending
                return
            caller = self.caller
        if caller is not None:
            caller.wake()

    def start(self) -> None:
        with self._caller_lock:
            self._stopped = False
        super().start()

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        with self._caller_lock:
            self._stopped = True
            caller, self.caller = self.caller, None
        if caller is not None:
            caller.stop(timeout)


__all__ = ["RESYNC", "TriggerService"]
