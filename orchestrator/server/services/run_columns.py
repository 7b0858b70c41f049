"""A run's lifecycle columns written without a change of state: its heartbeat, where it runs
(``infrastructure_id``) and its publication mark (``dispatched_at``). ``transitions.py`` is the one
writer of a run's state; this module writes the rest of what a run's path updates, with the same
kept statements (``run_statements``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import case, update
from sqlalchemy.orm import Session

from orchestrator.errors import NotFound
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import run_statements
from orchestrator.server.services.run_statements import NOW, RunRow
from orchestrator.states import FINAL_STATES, StateType


def heartbeat(session: Session, run_id: uuid.UUID, *, now: dt.datetime | None = None,
              infrastructure_id: str | None = None) -> RunRow:
    """The flow-run process is alive. Answers with the run, so it learns of a cancellation.

    Not written while the run is PENDING (the process's first beat, sent as it starts): nothing
    reads a PENDING run's heartbeat (its worker's lease covers it) and the RUNNING report sets
    it, so that beat neither writes a row version nor holds the row the RUNNING report updates.
    The run is read first: that first beat, which lands beside the claim and the RUNNING report,
    is then one statement, not a write of no row and a read.

    ``infrastructure_id``: where the process runs, said by the process itself with its first beat
    (a process worker's forked flow-run process of an older SDK; this one says it with its RUNNING
    report, ``transitions.located``), in place of its worker's infrastructure report, a request and a transaction fewer per run. Set while the run has none
    and is not final (``set_infrastructure`` otherwise); for that first beat of a PENDING run this
    one ``UPDATE ... RETURNING`` is the beat's one statement."""
    if infrastructure_id is not None:
        run = run_statements.run_row(session, run_statements.first_infrastructure(), run_statements.parameters(
            run_id, {"infrastructure_id": infrastructure_id}, {NOW: now or utcnow()}))
        if run is not None and run.state_type == StateType.PENDING:
            return run
    run = run_statements.read(session, run_id)
    if run.state_type == StateType.PENDING:
        return run
    beaten = run_statements.run_row(session, run_statements.beat(), run_statements.parameters(
        run_id, {"heartbeat_at": now or utcnow()}))
    return beaten or run


def lapse_heartbeat(session: Session, run_id: uuid.UUID, at: dt.datetime) -> bool:
    """Backdate a flow-run process's heartbeat to ``at`` (never forward): its connection dropped
    (``services/leases.py``). Not for a final run: its process held its heartbeat until it exited
    after reporting, which is every run's normal end, and a final run's heartbeat means nothing.
    Whether the run is not final (its holder is worth judging: the reaper is not asked for a pass
    for a final run's, ~1 ms of the server's CPU a run, bench/RESULTS.md, issue 22)."""
    later = case((m.FlowRun.heartbeat_at > at, at), else_=m.FlowRun.heartbeat_at)
    return bool(session.execute(update(m.FlowRun)
                                .where(m.FlowRun.id == run_id, m.FlowRun.state_type.not_in(list(FINAL_STATES)))
                                .values(heartbeat_at=later)).rowcount)  # type: ignore[attr-defined]


def set_infrastructure(session: Session, run_id: uuid.UUID, infrastructure_id: str) -> RunRow:
    """Where the run's worker started it (a process, container or Job), for recovery and people."""
    # One UPDATE ... RETURNING, not a read and a flush: a round trip fewer in every run's path.
    run = run_statements.run_row(session, run_statements.infrastructure(), run_statements.parameters(
        run_id, {"infrastructure_id": infrastructure_id}, {NOW: utcnow()}))
    if run is None:
        raise NotFound(f"flow run {run_id} not found")
    return run


def mark_published(session: Session, run_ids: Sequence[uuid.UUID], now: dt.datetime) -> list[tuple[uuid.UUID, str, str]]:
    """``dispatched_at``: mark runs still SCHEDULED as published ("handed to the broker, not
    claimed yet") at ``now``; returns (id, pool, queue) of each. The dispatcher re-publishes a run
    whose mark is older than ``redispatch_seconds``. A run's creation writes the first value
    (``new_runs.run_values``) and a return to SCHEDULED clears it (``released``)."""
    if not run_ids:
        return []
    rows = session.execute(
        update(m.FlowRun)
        .where(m.FlowRun.id.in_(list(run_ids)), m.FlowRun.state_type == StateType.SCHEDULED)
        .values(dispatched_at=now)
        .returning(m.FlowRun.id, m.FlowRun.work_pool_name, m.FlowRun.work_queue_name)
    ).all()
    return [(r[0], r[1] or "", r[2] or "") for r in rows]


def unmark_published(session: Session, run_ids: Sequence[uuid.UUID]) -> None:
    """The runs were not published after all (the broker failed) or a claim refused them: the
    dispatcher's next pass plans them again."""
    if run_ids:
        session.execute(update(m.FlowRun).where(m.FlowRun.id.in_(list(run_ids))).values(dispatched_at=None)
                        .execution_options(synchronize_session=False))
