"""The reaper: recovers runs whose holders went silent. Safe with several server replicas: every
recovery is a guarded transition, so of two reapers racing one wins and the other does nothing.

A worker's heartbeat is the lease on every run it holds; the flow-run process heartbeats too. A
holder whose connection drops is judged sooner (``services/leases.py``): ``wake_after`` asks for
that pass.
* PENDING (claimed, infrastructure not running yet) and the worker is gone -> SCHEDULED again, so
  another worker runs it;
* RUNNING / PAUSED and both the worker and the flow-run process are silent -> CRASHED, saying why
  (or restarted, when the deployment allows crash restarts);
* AwaitingRetry (held between in-process retries) and both are silent -> AwaitingRestart, for anyone;
* CANCELLING and the worker is gone, or it did not confirm in time -> CANCELLED;
* a task run outside any flow still open and the program running it silent -> CRASHED
  (``services/task_run_leases.py``).

Silence is trusted only while heartbeats could be recorded: not for a while after a start, a
failed pass (the database was down for the reaper), or a heartbeat that an API of any replica
answered with a server error or did not record within one period (its database down or stalled,
its pool spent -- for it alone; ``beat_refused``).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from sqlalchemy import ColumnElement, and_, exists, or_, select, true
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import InvalidTransition
from orchestrator.retries import RETRY_DELAY_MAX_SECONDS
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.hub import BEATS_REFUSED, Hub, Subscription, run_events
from orchestrator.server.service import Service
from orchestrator.server.services import leases, task_run_leases, transitions, work_pools
from orchestrator.states import StateType

log = logging.getLogger("orchestrator.reaper")
MISSED_HEARTBEATS = 3
# Refused heartbeats are announced to the other replicas at most once in this long (a thousand
# holders refused at once are not a thousand notifications); their distrust lasts this much longer.
ANNOUNCE_GAP_SECONDS = 0.2
CANDIDATES = 500  # runs a pass reads per rule (it comes back for the rest)


class Reaper(Service):
    name = "reaper"

    def __init__(self, sessions: sessionmaker[Session], *, heartbeat_seconds: float, interval_seconds: float,
                 cancelling_timeout_seconds: float, hub: Hub | None = None) -> None:
        super().__init__()
        from orchestrator.server.hub.local import LocalHub

        self.sessions = sessions
        self.heartbeat = dt.timedelta(seconds=heartbeat_seconds)
        self.silence = dt.timedelta(seconds=MISSED_HEARTBEATS * heartbeat_seconds)
        self.interval = interval_seconds
        self.cancelling_timeout = dt.timedelta(seconds=cancelling_timeout_seconds)
        self.hub = hub or LocalHub()  # told of every run it recovers
        # Heartbeats could not be recorded while this server (or its database) was down: silence
        # from that time is not the holders' fault. Every live holder beats again within one
        # heartbeat period plus one retry delay of the API being back (a failed heartbeat is
        # retried after up to RETRY_DELAY_MAX_SECONDS), so judge only after that long of being up
        # and healthy. (Without the retry delay, short heartbeat periods crashed live runs.)
        self._trust_after = (self.heartbeat.total_seconds() + RETRY_DELAY_MAX_SECONDS
                             + leases.grace_seconds(self.silence))
        # When silence counts (monotonic): ``_trust_after`` from the first pass that reached the
        # database after a start or a failed pass -- not from the failure itself, as a database
        # down longer than that would otherwise be trusted the moment it answers, before any
        # holder could beat again (a live run was crashed so, after a PostgreSQL restart).
        self._trusted_from: float | None = None
        # Until when (monotonic) a heartbeat refused by an API keeps silence untrusted: the same
        # while, counted from the last refusal heard of (then the API records beats again). The
        # reaper's own database access may work meanwhile (another replica's API failing, or this
        # one's pool exhausted), and a database outage shorter than one reaper interval fails no
        # pass: the refusals are then the only sign that silence is not the holders' fault.
        self._distrusted_until = 0.0
        self._announced = -ANNOUNCE_GAP_SECONDS  # when this replica last told the others
        self._said = False  # the current while of distrust for refused beats was logged
        self.dropped = leases.Dropped()  # judged even before silence is trusted (see Dropped)

    def holder_dropped(self, holder: leases.Holder) -> None:
        """A holder's connection dropped (its heartbeat is lapsed): judge it after the grace."""
        self.dropped.add(holder)
        self.wake_after(leases.grace_seconds(self.silence) + 0.05)

    def beat_refused(self) -> None:
        """An API answered a heartbeat with a server error, or has not recorded it within one period
        (``AppContext.record_beat``): silence is not trusted until every live holder could beat
        again; every replica's reaper is told. Never blocks (called on the API's event loop)."""
        now = time.monotonic()
        self.distrust()
        if now - self._announced >= ANNOUNCE_GAP_SECONDS:
            self._announced = now
            self.hub.publish((BEATS_REFUSED, ""))  # this replica's subscription hears it too: harmless

    def distrust(self, _key: str = "") -> None:
        """Silence counts again ``_trust_after`` from now at the earliest. Also called when the
        hub's connection to the database dropped (``RESYNC``): refusals may have been missed."""
        until = time.monotonic() + self._trust_after + ANNOUNCE_GAP_SECONDS
        self._distrusted_until = max(self._distrusted_until, until)  # a racing call sets nearly the same

    def subscribe(self) -> list[Subscription]:
        return [self.hub.subscribe(BEATS_REFUSED, self.distrust)]

    def start(self) -> None:
        self._trusted_from = None
        super().start()

    def step(self) -> float:
        now = time.monotonic()
        refused = now < self._distrusted_until
        if refused and not self._said:
            log.warning("heartbeats went unrecorded (an API refused or delayed them): silence is not judged "
                        "for %.1f s", self._distrusted_until - now)
        self._said = refused
        if self._trusted_from is None or now < self._trusted_from or refused:
            # Each pass of the while reaches the database (raising while it is down: ``failed``
            # starts the while again once it answers).
            if self.dropped:
                self.tick(dropped=self.dropped)
            else:
                with self.sessions() as session:
                    session.execute(select(1))
            if self._trusted_from is None:  # it answers: silence counts that long from now
                self._trusted_from = time.monotonic() + self._trust_after
            trusted_at = max(self._trusted_from, self._distrusted_until)
            return min(self.interval, trusted_at - time.monotonic())  # and a pass when it is
        self.dropped.clear()  # from now on silence covers them
        self.tick(offline=True)  # silence is trusted: workers gone are OFFLINE too
        return self.interval

    def failed(self, error: Exception) -> None:
        self._trusted_from = None  # the database may be down: trusted again only once it answers

    def _worker_alive(self, cutoff: dt.datetime):  # type: ignore[no-untyped-def]
        return (
            exists()
            .where(
                m.Worker.name == m.FlowRun.worker_name,
                m.Worker.last_heartbeat >= cutoff,
                m.Worker.pool_id == m.WorkPool.id,
                m.WorkPool.name == m.FlowRun.work_pool_name,
            )
            .correlate(m.FlowRun)
        )

    def tick(self, now: dt.datetime | None = None, *, dropped: leases.Dropped | None = None,
             offline: bool = False) -> list[m.FlowRun]:
        """One pass. Returns the runs it changed. With ``dropped``, only runs whose holders were
        all seen dropping their connection are judged (silence itself is not trusted yet).
        ``offline``: workers silent that long are also marked OFFLINE (not with ``dropped``)."""
        now = now or utcnow()
        cutoff = now - self.silence
        worker_gone = ~self._worker_alive(cutoff)
        process_silent = or_(m.FlowRun.heartbeat_at.is_(None), m.FlowRun.heartbeat_at < cutoff)
        scope = true()
        if dropped is not None:
            scope, process_silent = dropped.worker_dropped(), and_(process_silent, dropped.process_dropped())
        changed: list[m.FlowRun] = []
        rules: list[tuple[ColumnElement[bool], Callable[[Session, m.FlowRun], m.FlowRun]]] = [
            (and_(m.FlowRun.state_type == StateType.PENDING, worker_gone),
             lambda s, r: transitions.reschedule(
                 s, r.id, name="Scheduled", only_from=[StateType.PENDING], now=now,
                 message=f"worker {r.worker_name} went silent before the run started; rescheduled")),
            (and_(m.FlowRun.state_type.in_([StateType.RUNNING, StateType.PAUSED]), worker_gone, process_silent),
             lambda s, r: transitions.crash(
                 s, r.id, only_from=[StateType(r.state_type)], now=now,
                 message=f"{_holders(r)} stopped reporting (last heartbeat {_when(r.heartbeat_at)}); the run is lost")),
            (and_(transitions.SCHEDULED_HELD, worker_gone, process_silent),
             lambda s, r: transitions.give_back_retry(
                 s, r.id, now=now,
                 message=f"{_holders(r)} went silent between retries"
                         + ("; rescheduled for any worker" if r.deployment_id is not None else ""))),
            (and_(m.FlowRun.state_type == StateType.CANCELLING,
                  or_(worker_gone, m.FlowRun.state_timestamp < now - self.cancelling_timeout)),
             lambda s, r: transitions.transition(
                 s, r.id, StateType.CANCELLED, only_from=[StateType.CANCELLING], now=now,
                 message=f"cancelled: worker {r.worker_name} did not confirm the cancellation" if r.worker_name
                 else "cancelled: no worker holds the run to confirm it (a directly called flow's program "
                      "is not stopped)")),
        ]
        # One read for every rule (each a column saying whether it applies to the row; they exclude
        # each other by state), not a session and a statement per rule: an idle server's reaper
        # pass was ~8 ms of CPU, mostly the round trips of finding nothing (bench/RESULTS.md,
        # issue 22, "The server's CPU outside its routes").
        with self.sessions() as session:
            found = session.execute(select(m.FlowRun, *(rule.label(f"rule_{i}") for i, (rule, _) in enumerate(rules)))
                                    .where(or_(*(rule for rule, _ in rules)), scope)
                                    .limit(CANDIDATES * len(rules))).all()
        for run, *applies in found:
            action = next(action for (_, action), applies_ in zip(rules, applies, strict=True) if applies_)
            try:
                with self.sessions.begin() as session:
                    changed.append(action(session, run))
            except InvalidTransition:
                pass  # it moved on by itself, or another replica recovered it first
        for run in changed:
            log.warning("recovered run %s: %s %s", run.id, run.state_type, run.state_message)
            self.hub.publish(*run_events(run))
        if dropped is None:  # task runs outside flows have no connection lease: silence alone judges them
            with self.sessions.begin() as session:
                crashed = task_run_leases.crash_silent(session, now, self.silence)
                if offline:  # workers gone are OFFLINE (events), in the same transaction
                    work_pools.mark_offline(session, self.heartbeat.total_seconds(), now)
            if crashed:
                log.warning("marked %d task runs outside flows CRASHED: the programs running them went silent",
                            crashed)
        return changed


def _holders(run: m.FlowRun) -> str:
    """Who should have reported: a worker and its flow-run process, or the program that called the
    flow directly (a run with no deployment, ``services/direct_runs.py``)."""
    if run.deployment_id is None and run.worker_name is None:
        return "the program running this directly called flow"
    return f"worker {run.worker_name} and the flow-run process"


def _when(moment: dt.datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "never"


__all__ = ["Reaper"]
