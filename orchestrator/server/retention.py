"""Retention: events older than ``Settings.events_retention`` are deleted, on the ``Service`` loop.

Deletion goes in batches (``BATCH`` events per transaction, again until none is left), so a first
pass over months of history never holds one transaction's locks on millions of rows nor stalls the
writers behind it. Several replicas may run it at once: each batch deletes what it finds, and a row
another replica deleted first is simply not counted twice.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy.orm import Session, sessionmaker

from orchestrator.server.db.types import utcnow
from orchestrator.server.service import Service
from orchestrator.server.services import events

log = logging.getLogger("orchestrator.retention")

BATCH = 5000
# Between passes: old events are not urgent, and a pass that finds nothing costs one indexed query.
INTERVAL_SECONDS = 600.0


class Retention(Service):
    name = "retention"

    def __init__(self, sessions: sessionmaker[Session], retention: dt.timedelta, counts: events.Counts | None = None,
                 *, batch: int = BATCH, interval_seconds: float = INTERVAL_SECONDS) -> None:
        super().__init__()
        self.sessions, self.retention, self.batch, self.interval = sessions, retention, batch, interval_seconds
        self.counts = counts or events.Counts()
        self.batches = 0  # transactions that deleted something (tests read it)

    def step(self) -> float:
        cutoff = utcnow() - self.retention
        deleted = 0
        while True:
            with self.sessions.begin() as session:
                gone = events.delete_older(session, cutoff, self.batch)
            if not gone:
                break
            self.batches += 1
            deleted += gone
            self.counts.deleted(gone)
        if deleted:
            log.info("retention: deleted %d events older than %s", deleted, cutoff.isoformat())
        return self.interval
