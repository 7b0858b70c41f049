"""Retention: finished runs, logs and events older than their settings are deleted, on the
``Service`` loop (``ORCH_RUNS_RETENTION``, ``ORCH_LOGS_RETENTION``: unset, kept forever;
``ORCH_EVENTS_RETENTION``: 7 days). ``ORCH_RUNS_RETENTION`` also applies to the task runs of tasks
called outside any flow, which no flow run takes with it.

Deletion goes in batches (``BATCH`` rows per transaction, again until none is left; what a batch
deletes is in ``services/retention.py``), so a first pass over months of history never holds one
transaction's locks on millions of rows nor stalls the API's writers behind it: a request waits at
most for one batch's commit, and only when it writes a row that batch deletes (or, on SQLite, any
row: SQLite has one writer at a time). Several replicas may run it at once: on PostgreSQL each
batch skips the rows another replica's batch has locked, and a row deleted first elsewhere is
simply not counted twice.

``prune`` is the same loop for ``orch db prune``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from orchestrator.server.db.types import utcnow
from orchestrator.server.service import Service
from orchestrator.server.services import events
from orchestrator.server.services.retention import delete_batch
from orchestrator.settings import Settings

log = logging.getLogger("orchestrator.retention")

BATCH = 1000
# Between passes: old rows are not urgent, and a pass that finds nothing costs one indexed query per kind.
INTERVAL_SECONDS = 600.0


@dataclass(frozen=True)
class Ages:
    """How long each kind is kept; None: forever."""

    runs: dt.timedelta | None = None
    logs: dt.timedelta | None = None
    events: dt.timedelta | None = dt.timedelta(days=7)

    @classmethod
    def from_settings(cls, settings: Settings) -> Ages:
        return cls(runs=settings.runs_retention, logs=settings.logs_retention, events=settings.events_retention)

    def items(self) -> list[tuple[str, dt.timedelta]]:
        # Runs first: they take their own logs with them, leaving fewer for the logs' pass. Task runs
        # outside flows are runs to a user: the runs' age.
        return [(kind, age) for kind, age in (("runs", self.runs), ("task_runs", self.runs), ("logs", self.logs),
                                              ("events", self.events)) if age is not None]


def prune(sessions: sessionmaker[Session], kind: str, before: dt.datetime, *, batch: int = BATCH,
          on_batch: Callable[[int], None] | None = None, keep_going: Callable[[], bool] = lambda: True) -> int:
    """Delete every row of ``kind`` older than ``before``, one committed batch at a time; returns
    how many went. ``on_batch`` hears each batch's count after its commit; ``keep_going`` is asked
    before each batch (a stopping server ends a long first pass at the next batch)."""
    total, cursor = 0, None
    while keep_going():
        with sessions.begin() as session:
            gone, cursor = delete_batch(session, kind, before, batch, cursor)
        if cursor is None:
            return total
        total += gone
        if on_batch is not None:
            on_batch(gone)
    return total


class Retention(Service):
    name = "retention"

    def __init__(self, sessions: sessionmaker[Session], ages: Ages, counts: events.Counts | None = None,
                 *, batch: int = BATCH, interval_seconds: float = INTERVAL_SECONDS) -> None:
        super().__init__()
        self.sessions, self.ages, self.batch, self.interval = sessions, ages, batch, interval_seconds
        self.counts = counts or events.Counts()
        self.batches = 0  # transactions that deleted something (tests read it)
        # By kind, since start (/metrics: orch_retention_deleted_total).
        self.deleted = {"runs": 0, "task_runs": 0, "logs": 0, "events": 0}

    def step(self) -> float:
        now = utcnow()
        for kind, age in self.ages.items():
            cutoff = now - age

            def counted(gone: int, kind: str = kind) -> None:
                self.batches += 1
                self.deleted[kind] += gone
                if kind == "events":
                    self.counts.deleted(gone)

            deleted = prune(self.sessions, kind, cutoff, batch=self.batch, on_batch=counted,
                            keep_going=lambda: not self._stopping)
            if deleted:
                log.info("retention: deleted %d %s older than %s", deleted, kind, cutoff.isoformat())
        return self.interval


__all__ = ["BATCH", "Ages", "Retention", "prune"]
