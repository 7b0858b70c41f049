"""What retention deletes, one batch per call: finished runs, logs, events older than a cutoff.

Shared by the ``Retention`` service (``orchestrator/server/retention.py``) and ``orch db prune``.
Each call deletes at most ``batch`` rows of its kind and returns a ``Cursor``, the (time, key) of
the last row it chose: the next call starts after it, walking the time index (keyset), so a long
prune never re-reads the index entries of rows it already deleted. The caller commits between
calls: no transaction holds locks on more than one batch.

* ``runs``: runs in a final state (COMPLETED, FAILED, CANCELLED, CRASHED) whose ``end_time`` is
  older than the cutoff, with everything that belongs to one: its state history, logs, task runs
  and its own API key. A final state is never left (``orchestrator/states.py``), so a run that is
  not final is never touched, and neither the dispatcher, the concurrency slots nor a deployment's
  recent runs (which read unfinished or newest runs) can miss one they need.
* ``task_runs``: task runs of tasks called outside any flow (``flow_run_id`` NULL) in a final state
  whose ``end_time`` is older than the cutoff: the runs' rule (``ORCH_RUNS_RETENTION``, ``orch db prune
  --runs``) for the task runs no flow run takes with it. They are walked by ``created`` along the
  ``(flow_run_id, created)`` index (a task run ends after it is created, so one that ended before
  the cutoff was created before it), which bounds the walk to the standalone task runs created
  before the cutoff instead of every task run of every flow.
* ``logs``: log lines older than the cutoff (by their ``timestamp``), whatever their run; the runs stay.
* ``events``: events that occurred before the cutoff, with their related-resource rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select, tuple_
from sqlalchemy.orm import Session

from orchestrator.server.db import models as m
from orchestrator.states import FINAL_STATES

KINDS = ("runs", "task_runs", "logs", "events")
FINAL = sorted(s.value for s in FINAL_STATES)


@dataclass(frozen=True)
class Cursor:
    """Where the next batch starts: after the row with this time and key."""

    time: dt.datetime
    key: Any


@dataclass(frozen=True)
class _Kind:
    time: Any  # the column the cutoff applies to
    key: Any  # the primary key: ties on time are ordered by it
    where: tuple[ColumnElement[bool], ...]  # besides "older than the cutoff"
    remove: Callable[[Session, list[Any]], int]  # delete the chosen rows (and what hangs on them)
    ended: Any = None  # a column that must be older than the cutoff too (the walk is along ``time``)

    def older(self, before: dt.datetime) -> tuple[ColumnElement[bool], ...]:
        also = () if self.ended is None else (self.ended < before,)
        return (self.time < before, *also, *self.where)


def _remove_runs(session: Session, ids: list[Any]) -> int:
    # Children first, set-wise: PostgreSQL would cascade row by row, and SQLite enforces no
    # foreign keys here (the explicit deletes are what clean up there).
    for model, column in ((m.FlowRunState, m.FlowRunState.flow_run_id), (m.Log, m.Log.flow_run_id),
                          (m.TaskRun, m.TaskRun.flow_run_id), (m.ApiKey, m.ApiKey.run_id)):
        session.execute(delete(model).where(column.in_(ids)))
    # The state is checked again: what was chosen must still be final (it always is: final states
    # are never left; the check costs nothing and keeps the promise local).
    return session.execute(
        delete(m.FlowRun).where(m.FlowRun.id.in_(ids), m.FlowRun.state_type.in_(FINAL))
    ).rowcount or 0


def _remove_task_runs(session: Session, ids: list[Any]) -> int:
    # Checked again, as for runs: still outside any flow and final (both always hold: a report
    # never moves a task run to a flow run, and a final state is the last one reported).
    return session.execute(
        delete(m.TaskRun).where(m.TaskRun.id.in_(ids), m.TaskRun.flow_run_id.is_(None),
                                m.TaskRun.state_type.in_(FINAL))
    ).rowcount or 0


def _remove_logs(session: Session, ids: list[Any]) -> int:
    return session.execute(delete(m.Log).where(m.Log.id.in_(ids))).rowcount or 0


def _remove_events(session: Session, seqs: list[Any]) -> int:
    session.execute(delete(m.EventResource).where(m.EventResource.event_seq.in_(seqs)))
    return session.execute(delete(m.Event).where(m.Event.seq.in_(seqs))).rowcount or 0


_KINDS: dict[str, _Kind] = {
    # (end_time, id), (timestamp, id), (occurred, seq): each pair has its index (migration 0010, 0005).
    "runs": _Kind(m.FlowRun.end_time, m.FlowRun.id, (m.FlowRun.state_type.in_(FINAL),), _remove_runs),
    # (created, id) within flow_run_id IS NULL: the (flow_run_id, created) index (migration 0004).
    "task_runs": _Kind(m.TaskRun.created, m.TaskRun.id,
                       (m.TaskRun.flow_run_id.is_(None), m.TaskRun.state_type.in_(FINAL)), _remove_task_runs,
                       ended=m.TaskRun.end_time),
    "logs": _Kind(m.Log.timestamp, m.Log.id, (), _remove_logs),
    "events": _Kind(m.Event.occurred, m.Event.seq, (), _remove_events),
}


def _kind(name: str) -> _Kind:
    if name not in _KINDS:
        raise ValueError(f"unknown retention kind {name!r}: one of {', '.join(KINDS)}")
    return _KINDS[name]


def delete_batch(session: Session, kind: str, before: dt.datetime, batch: int,
                 after: Cursor | None = None) -> tuple[int, Cursor | None]:
    """Delete up to ``batch`` of the oldest rows of ``kind`` older than ``before`` (after ``after``).
    Returns how many went and the cursor for the next call, None when nothing was left to choose.
    The caller commits."""
    spec = _kind(kind)
    chosen = select(spec.time, spec.key).where(*spec.older(before))
    if after is not None:
        chosen = chosen.where(tuple_(spec.time, spec.key) > tuple_(after.time, after.key))
    chosen = chosen.order_by(spec.time, spec.key).limit(batch)
    if session.get_bind().dialect.name == "postgresql":
        # Two replicas pruning at once split the rows instead of queueing on each other's locks.
        chosen = chosen.with_for_update(skip_locked=True)
    rows = session.execute(chosen).all()
    if not rows:
        return 0, None
    return spec.remove(session, [row[1] for row in rows]), Cursor(rows[-1][0], rows[-1][1])


def count_older(session: Session, kind: str, before: dt.datetime) -> int:
    """How many rows ``delete_batch`` would delete (for ``orch db prune --dry-run``)."""
    spec = _kind(kind)
    return session.scalar(select(func.count()).select_from(spec.key.table).where(*spec.older(before))) or 0
