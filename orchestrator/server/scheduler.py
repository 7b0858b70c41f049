"""The scheduler service: one pass creates each active schedule's runs ahead
(``orchestrator/server/runs_ahead.py``: the horizon, safe with any number of replicas), names
overdue runs ``Late`` and applies each deployment's catch-up policy
(``orchestrator/server/catchup.py``).

It sleeps until the next run turns Late, a schedule needs more runs or ``loop_seconds`` passed, and
wakes at once when a committed transaction changed a schedule or a deployment
(``services.schedules.mark_changed``), on any replica: ``announce_changes`` publishes those commits
on the event hub's ``SCHEDULES``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import InvalidTransition, NotFound
from orchestrator.schedules.horizon import Horizon
from orchestrator.server import catchup
from orchestrator.server.catchup import LATE, skip_locked
from orchestrator.server.db import models as m
from orchestrator.server.db.session import on_commit
from orchestrator.server.db.types import utcnow
from orchestrator.server.hub import SCHEDULES, Hub, Subscription
from orchestrator.server.runs_ahead import RunsAhead
from orchestrator.server.service import Service
from orchestrator.server.services import schedules as svc
from orchestrator.server.services import transitions
from orchestrator.settings import Settings
from orchestrator.states import DEFAULT_NAMES, StateType

log = logging.getLogger("orchestrator.scheduler")

CHUNK = 500  # runs named Late or cancelled by catch-up in one pass
MIN_GAP_SECONDS = 0.2
SCHEDULED = DEFAULT_NAMES[StateType.SCHEDULED]


@dataclass
class PassResult:
    created: int = 0
    late: int = 0
    skipped: int = 0
    seconds: float = 0.0
    fill_seconds: float = 0.0  # creating runs ahead, without Late and catch-up


class Scheduler(Service):
    name = "scheduler"
    # Coalesce a burst of changes (an API creating hundreds of deployments a second) into a few
    # passes instead of one per commit.
    min_gap = MIN_GAP_SECONDS

    def __init__(self, sessions: sessionmaker[Session], *, horizon: Horizon | None = None, late_after: float = 15.0,
                 loop_seconds: float = 5.0, on_created: Callable[[], None] | None = None,
                 hub: Hub | None = None) -> None:
        super().__init__()
        from orchestrator.server.hub.local import LocalHub

        self.sessions = sessions
        self.hub = hub or LocalHub()
        self.ahead = RunsAhead(sessions, horizon or Horizon())
        self.late_after = dt.timedelta(seconds=late_after)
        self.loop_seconds = loop_seconds
        self.on_created = on_created

    @classmethod
    def from_settings(cls, sessions: sessionmaker[Session], settings: Settings,
                      on_created: Callable[[], None] | None = None, hub: Hub | None = None) -> Scheduler:
        return cls(sessions, horizon=Horizon.from_settings(settings), late_after=settings.scheduler_late_after_seconds,
                   loop_seconds=settings.scheduler_loop_seconds, on_created=on_created, hub=hub)

    # --- one pass ----------------------------------------------------------------------------

    def run_once(self, now: dt.datetime | None = None) -> PassResult:
        began = time.perf_counter()
        now = now or utcnow()
        result = PassResult(late=self.mark_late(now))
        filling = time.perf_counter()
        result.created = self.fill(now)
        result.fill_seconds = time.perf_counter() - filling
        result.skipped = self.apply_catchup(now)
        if result.created and self.on_created is not None:
            self.on_created()
        result.seconds = time.perf_counter() - began
        return result

    def mark_late(self, now: dt.datetime) -> int:
        """SCHEDULED runs more than ``late_after`` past their time become ``Late`` (any run, as in
        Prefect; other SCHEDULED names such as AwaitingConcurrencySlot are left alone). At most
        ``CHUNK`` per pass, oldest first, so a pile of overdue runs never makes one pass long;
        the loop comes back at once for the rest."""
        run = m.FlowRun
        marked = 0
        with self.sessions.begin() as session:
            query = (select(run.id).where(run.state_type == StateType.SCHEDULED, run.state_name == SCHEDULED,
                                          run.expected_start_time < now - self.late_after)
                     .order_by(run.expected_start_time).limit(CHUNK))
            for run_id in list(session.scalars(skip_locked(session, query))):
                try:  # guarded on the name too: a run just named AwaitingConcurrencySlot stays so
                    transitions.transition(session, run_id, StateType.SCHEDULED, name=LATE,
                                           only_from=[StateType.SCHEDULED], guards=[transitions.named(SCHEDULED)],
                                           now=now)
                    marked += 1
                except (InvalidTransition, NotFound):
                    pass
        return marked

    def fill(self, now: dt.datetime) -> int:
        """Create the runs each active schedule of an unpaused deployment lacks within the horizon."""
        return self.ahead.fill(now)

    def apply_catchup(self, now: dt.datetime) -> int:
        """Cancel the Late auto-scheduled runs each deployment's catch-up policy does not want."""
        return catchup.apply(self.sessions, now, chunk=CHUNK)

    def seconds_until_next(self, now: dt.datetime) -> float:
        """Until the next run turns Late or a schedule needs more runs, at most ``loop_seconds``."""
        run = m.FlowRun
        with self.sessions() as session:
            oldest = session.scalar(select(func.min(run.expected_start_time)).where(
                run.state_type == StateType.SCHEDULED, run.state_name == SCHEDULED))
        waits = [self.loop_seconds]
        if oldest is not None:
            waits.append((oldest + self.late_after - now).total_seconds() + 0.01)
        recheck = self.ahead.next_recheck()
        if recheck is not None:
            waits.append((recheck - now).total_seconds())
        return max(0.05, min(waits))

    # --- the loop ----------------------------------------------------------------------------

    def step(self) -> float:
        result = self.run_once()
        if result.created or result.late or result.skipped:
            log.info("scheduler: %d runs created, %d late, %d skipped in %.2f s", result.created,
                     result.late, result.skipped, result.seconds)
        return self.seconds_until_next(utcnow())

    def subscribe(self) -> list[Subscription]:
        return [self.hub.subscribe(SCHEDULES, lambda _key: self.wake())]


def announce_changes(sessions: sessionmaker[Session], hub: Hub) -> Callable[[], None]:
    """Publish ``SCHEDULES`` after every commit that changed a schedule or a deployment through
    ``sessions`` (whoever runs the scheduler, here or on another replica, re-plans). Returns the
    function that stops it."""
    return on_commit(sessions, svc.CHANGED, lambda: hub.publish((SCHEDULES, "")))
