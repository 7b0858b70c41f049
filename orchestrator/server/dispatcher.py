"""The dispatcher: puts due runs on their pool's broker queue.

A run created through the API for "now" is published by the API itself right after its commit
(``publish_created``); everything else -- runs scheduled for later, runs whose publish failed,
runs published but never claimed (a lost message, a flushed Redis) -- is found here in the
database and published again. Publishing twice is harmless: the claim settles who runs a run.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.hub import DISPATCH, REFUSED, SLOT_FREED, Hub, Subscription, run_events
from orchestrator.server.service import Service
from orchestrator.server.services import admission, run_columns, slots, transitions
from orchestrator.states import StateType
from pools.broker import BrokerUnavailable, RunBroker
from pools.names import run_queue

log = logging.getLogger("orchestrator.dispatcher")

BATCH = 500
# Bound on how late we notice runs created through another replica when no hub event says so
# (``hub.reread_seconds``: this on SQLite, a long safety re-read with the PostgreSQL hub).
MAX_IDLE_SECONDS = 2.0
# After a refused claim: re-plan this soon. Not at once: should this plan and the claim's check
# disagree, the run would bounce between publish and refusal as fast as they go.
REFUSED_REPLAN_SECONDS = 1.0


class Dispatcher(Service):
    name = "dispatcher"

    def __init__(self, sessions: sessionmaker[Session], broker: RunBroker, *, redispatch_seconds: float,
                 hub: Hub | None = None, idle_seconds: float = MAX_IDLE_SECONDS) -> None:
        super().__init__()
        from orchestrator.server.hub.local import LocalHub

        self.sessions = sessions
        # Told of new and ended runs (``DISPATCH``); told of runs it renamed or cancelled itself.
        self.hub = hub or LocalHub()
        self.idle_seconds = idle_seconds
        self._changed: list[m.FlowRun] = []
        self.broker = broker
        self.redispatch = dt.timedelta(seconds=redispatch_seconds)
        # Whether the last pass left runs waiting for a concurrency slot: only then does a run's end
        # need a pass at once (other replicas' waiting runs are seen within MAX_IDLE_SECONDS).
        self._runs_await_slots = False

    # --- called by the API after it committed new runs --------------------------------------

    def publish_created(self, runs: Sequence[m.FlowRun]) -> None:
        """Publish runs the API just created with ``dispatched_at`` set; on failure un-mark them
        so the loop retries, and wake the loop for runs scheduled in the future. The broker's word
        on a message is not waited for (``RunBroker.send``): a message it refused or may have lost
        is found at a later publish or the loop's next pass (``lost``), and un-marked then."""
        failed = []
        for run in runs:
            if run.dispatched_at is None:
                continue
            try:
                self.broker.send(run_queue(run.work_pool_name or "", run.work_queue_name or ""), run.id)
            except BrokerUnavailable as error:
                log.warning("publish of run %s failed, will retry: %s", run.id, error)
                failed.append(run.id)
        failed += self._lost()
        if failed:
            with self.sessions.begin() as session:
                run_columns.unmark_published(session, failed)
        if failed or any(run.dispatched_at is None for run in runs):
            self.wake()

    def _lost(self) -> list[uuid.UUID]:
        """The runs of earlier sends the broker refused or may have lost (``RunBroker.lost``)."""
        lost = self.broker.lost()
        for run_id, reason in lost:
            log.warning("publish of run %s failed, will retry: %s", run_id, reason)
        return [run_id for run_id, _ in lost]

    # --- the loop ----------------------------------------------------------------------------

    def step(self) -> float:
        return self.tick()

    def tick(self, now: dt.datetime | None = None) -> float:
        """Publish every due, unclaimed run not published recently. Returns seconds until the
        next run becomes due (or until a published one should be re-published)."""
        now = now or utcnow()
        self._changed = []
        self.broker.settle()  # the API's sends not confirmed yet: those lost are planned in this pass
        lost = self._lost()
        with self.sessions.begin() as session:
            run_columns.unmark_published(session, lost)
            due = self._mark_due(session, now)
        for run in self._changed:
            self.hub.publish(*run_events(run))
        for run_id, pool, queue in due:
            try:
                self.broker.publish(run_queue(pool, queue), run_id)
            except BrokerUnavailable as error:
                log.warning("publish failed, will retry: %s", error)
                with self.sessions.begin() as session:
                    run_columns.unmark_published(session, [r[0] for r in due])
                return 1.0
        if len(due) == BATCH:
            return 0.0
        with self.sessions() as session:
            return self._seconds_until_next(session, now)

    def _mark_due(self, session: Session, now: dt.datetime) -> list[tuple[uuid.UUID, str, str]]:
        decided = admission.plan_due(session, now, self.redispatch, BATCH)
        self._runs_await_slots = bool(decided.wait)
        for run in decided.wait:
            if session.scalar(select(m.FlowRun.state_name).where(m.FlowRun.id == run.run_id)) != slots.AWAITING_SLOT:
                self._changed.append(transitions.transition(
                    session, run.run_id, StateType.SCHEDULED, name=slots.AWAITING_SLOT, only_from=[StateType.SCHEDULED],
                    guards=[transitions.UNHELD],
                    message="waiting for a free slot of the deployment's concurrency limit", now=now))
        for run in decided.cancel:
            self._changed.append(transitions.transition(
                session, run.run_id, StateType.CANCELLED, only_from=[StateType.SCHEDULED], now=now,
                message="cancelled: the deployment's concurrency limit is reached (collision strategy CANCEL_NEW)"))
        ids = [c.run_id for c in decided.publish]
        queued = self._still_queued(session, ids)
        # Marked all the same: a run whose message still waits is looked at again one redispatch later.
        return [due for due in run_columns.mark_published(session, ids, now) if due[0] not in queued]

    def _still_queued(self, session: Session, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        """Of the runs about to be published again (published before, still unclaimed), those
        whose message is probably still on the queue. Re-publishing exists for lost messages, but
        a queue longer than the redispatch period (workers busier than the runs arriving) would get
        one more copy of every waiting run per period: a backlog growing without end, whose stale
        copies a new run then waits behind (issue 20: a run Late for 60 s after a burst). So a
        queue holding ``depth`` messages for ``unclaimed`` published runs gets only the
        ``unclaimed - depth`` oldest again: at least one message per run, never a copy on top."""
        rows = session.execute(
            select(m.FlowRun.id, m.FlowRun.work_pool_name, m.FlowRun.work_queue_name, m.FlowRun.dispatched_at)
            .where(m.FlowRun.id.in_(ids), m.FlowRun.dispatched_at.is_not(None))).all()
        by_queue: dict[tuple[str, str], list[tuple[dt.datetime, uuid.UUID]]] = defaultdict(list)
        for run_id, pool, queue, published in rows:
            by_queue[(pool or "", queue or "")].append((published, run_id))
        skipped: set[uuid.UUID] = set()
        for (pool, queue), again in by_queue.items():
            try:
                depth = self.broker.depth(run_queue(pool, queue))
            except BrokerUnavailable:
                depth = None  # the publish says so, and is retried
            if not depth:
                continue
            unclaimed = session.scalar(select(func.count()).select_from(m.FlowRun).where(
                transitions.SCHEDULED_FREE, m.FlowRun.dispatched_at.is_not(None),
                m.FlowRun.work_pool_name == pool, m.FlowRun.work_queue_name == queue)) or 0
            again.sort()
            skipped.update(run_id for _, run_id in again[max(0, unclaimed - depth):])
        return skipped

    def _seconds_until_next(self, session: Session, now: dt.datetime) -> float:
        scheduled = transitions.SCHEDULED_FREE
        next_due = session.scalar(
            select(func.min(m.FlowRun.expected_start_time)).where(
                scheduled, m.FlowRun.dispatched_at.is_(None), m.FlowRun.expected_start_time > now
            )
        )
        next_redispatch = session.scalar(
            select(func.min(m.FlowRun.dispatched_at)).where(
                and_(scheduled, m.FlowRun.dispatched_at.is_not(None))
            )
        )
        waits = [self.idle_seconds]
        if next_due is not None:
            waits.append((next_due - now).total_seconds())
        if next_redispatch is not None:
            waits.append((next_redispatch + self.redispatch - now).total_seconds())
        return max(0.0, min(waits))

    def subscribe(self) -> list[Subscription]:
        return [self.hub.subscribe(DISPATCH, self._told)]

    def _told(self, key: str) -> None:
        if key == SLOT_FREED:
            self.slot_freed()
        elif key == REFUSED:
            self.wake_after(REFUSED_REPLAN_SECONDS)
        else:  # DUE, or RESYNC: anything may have changed
            self.wake()

    def slot_freed(self) -> None:
        """A run ended: its concurrency slot may let a waiting run go."""
        if self._runs_await_slots:
            self.wake()
