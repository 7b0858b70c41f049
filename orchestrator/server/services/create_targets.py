"""What a new run needs of its deployment, the deployment's pool and the run's queue (``flow_runs.create``),
read once and kept on PostgreSQL: the create-run route is the API's busiest, and these rows hardly
ever change.

A kept target carries its rows' versions: PostgreSQL's ``xmin``, the transaction that wrote each row
version (any ``UPDATE``, or a delete and a new row, gives a new one; the row locks claims and
foreign keys take do not). The run's ``INSERT`` writes only while the three rows are still those
versions (``guard_sql``, evaluated in that statement), so a target that changed in between (a
pause, a new limit, new default parameters, a deleted deployment, a queue created) writes nothing,
and ``flow_runs.create`` reads the target again and writes with what it reads, as it did before
targets were kept. What a kept target saves is the SELECT, its round trip and the parsing of its
JSON columns (bench/RESULTS.md, issue 22, "Create-run API: one statement per create").

A kept target also remembers that its job variables (the pool's defaults and the deployment's)
passed the pool's schema (``checked``, ``mark_checked``): a create that adds no job variables of
its own then skips that check (~70 µs of jsonschema, a twentieth of the route's CPU), as the rows it
depends on are the very ones checked; a changed row is read again, as a new target, unchecked.

Entries are kept ``TTL_SECONDS`` (a bound on memory for deployments no longer run, and on the age
of a kept ``xmin``, far from any wraparound of transaction ids). SQLite reads the target each time.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Engine, Row, Select, String, and_, bindparam, cast, func, literal_column, select
from sqlalchemy.orm import Session

from orchestrator.server.db import models as m

TTL_SECONDS = 60.0
SIZE = 2000  # targets kept per database; past that the cache starts again empty


class Versions(NamedTuple):
    """The ``xmin`` of the deployment, its pool and the run's queue as read (None: no such row)."""

    deployment: str
    pool: str | None
    queue: str | None


class Stale(Exception):
    """A kept target's rows changed before the insert guarded by its ``Versions``: nothing was written."""


@dataclass
class _Kept:
    until: float  # time.monotonic()
    row: Row[Any]
    versions: Versions
    checked: bool = False  # the row's job variables passed the pool's schema (``mark_checked``)


_kept: weakref.WeakKeyDictionary[Engine, dict[tuple[uuid.UUID, str | None], _Kept]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def read(session: Session, deployment_id: uuid.UUID, queue: str | None, *,
         fresh: bool = False) -> tuple[Row[Any] | None, Versions | None]:
    """The target of a run of ``deployment_id`` asked for ``queue`` (None if the deployment does not
    exist), and the ``Versions`` its insert must be guarded by: None when it was just read (nothing
    to guard, as before targets were kept) or on SQLite. ``fresh``: read it even if kept."""
    bind = session.get_bind()
    if not isinstance(bind, Engine) or bind.dialect.name != "postgresql":
        return session.execute(_select(False), {"deployment_id": deployment_id, "queue": queue}).first(), None
    found = None if fresh else _entry(bind, deployment_id, queue)
    if found is not None and found.until > time.monotonic():
        return found.row, found.versions
    row = session.execute(_select(True), {"deployment_id": deployment_id, "queue": queue}).first()
    if row is not None:
        with _lock:
            kept = _kept.setdefault(bind, {})
            if len(kept) >= SIZE:
                kept.clear()
            kept[(deployment_id, queue)] = _Kept(time.monotonic() + TTL_SECONDS, row,
                                                 Versions(row.deployment_xmin, row.pool_xmin, row.queue_xmin))
    return row, None


def checked(session: Session, deployment_id: uuid.UUID, queue: str | None, target: Row[Any]) -> bool:
    """Whether ``target`` (as ``read`` gave it) is kept and its own job variables, the pool's
    defaults merged with the deployment's, were found valid (``mark_checked``). Never on SQLite."""
    found = _entry(session.get_bind(), deployment_id, queue)
    return found is not None and found.row is target and found.checked


def mark_checked(session: Session, deployment_id: uuid.UUID, queue: str | None, target: Row[Any]) -> None:
    """``target``'s job variables (without a run's) passed the pool's schema: remembered while it
    is kept. Its rows' later versions are read as another target, unchecked."""
    found = _entry(session.get_bind(), deployment_id, queue)
    if found is not None and found.row is target:  # the object itself: a row read since is not
        found.checked = True


def _entry(bind: Any, deployment_id: uuid.UUID, queue: str | None) -> _Kept | None:
    kept = _kept.get(bind) if isinstance(bind, Engine) else None
    return kept.get((deployment_id, queue)) if kept is not None else None


@functools.cache
def _select(postgres: bool, *, versions_only: bool = False) -> Select[Any]:
    """The deployment's columns a run uses, its pool's, and those of the queue the run goes to (the
    one asked for, else the deployment's, else the pool's default); on PostgreSQL the rows'
    ``xmin`` too (``versions_only``: those alone, for ``guard_sql``). Core columns, so the rows are
    plain tuples; built once, parameters bound at each call."""
    d, p, q = m.Deployment.__table__.c, m.WorkPool.__table__.c, m.WorkQueue.__table__.c
    queue_wanted = func.coalesce(bindparam("queue", type_=String), d.work_queue_name, p.default_queue_name)
    versions = [cast(literal_column(f"{table.name}.xmin"), String).label(f"{label}_xmin")
                for table, label in ((m.Deployment.__table__, "deployment"), (m.WorkPool.__table__, "pool"),
                                     (m.WorkQueue.__table__, "queue"))] if postgres else []
    columns = [] if versions_only else [
        d.name, d.flow_id, d.version, d.parameters, d.parameter_openapi_schema, d.enforce_parameter_schema,
        d.tags, d.work_pool_name, d.work_queue_name, d.job_variables, d.concurrency_limit,
        p.name.label("pool_name"), p.base_job_template, p.paused.label("pool_paused"),
        p.concurrency_limit.label("pool_limit"), p.default_queue_name,
        q.name.label("queue_name"), q.paused.label("queue_paused"), q.concurrency_limit.label("queue_limit"),
    ]
    return (
        select(*columns, *versions)
        .select_from(m.Deployment.__table__)
        .outerjoin(m.WorkPool.__table__, p.name == d.work_pool_name)
        .outerjoin(m.WorkQueue.__table__, and_(q.pool_id == p.id, q.name == queue_wanted))
        .where(d.id == bindparam("deployment_id"))
    )


@functools.cache
def guard_sql() -> str:
    """A query with a row while the target of (``:deployment_id``, ``:queue``) still has the
    versions ``:deployment_xmin``, ``:pool_xmin``, ``:queue_xmin``; none once one of its rows changed
    or went (for ``new_runs``' guarded insert). The target's rows joined as ``read`` joins them, their
    versions alone selected: the other columns are not compared, and the shorter text keeps the
    create's statement under the length psycopg caches the parsing of (``new_runs._postgres_sql``)."""
    from sqlalchemy.engine.default import DefaultDialect

    # Plain ``:name`` parameters (PostgreSQL's compiler adds ``::TYPE`` casts, which ``text`` would
    # not read as parameters); psycopg sends the values typed anyway.
    target = str(_select(True, versions_only=True).compile(dialect=DefaultDialect(paramstyle="named")))
    return (f"SELECT 1 FROM ({target}) AS t WHERE t.deployment_xmin = :deployment_xmin "
            "AND t.pool_xmin IS NOT DISTINCT FROM :pool_xmin AND t.queue_xmin IS NOT DISTINCT FROM :queue_xmin")


def guard_parameters(deployment_id: uuid.UUID, queue: str | None, versions: Versions) -> dict[str, Any]:
    return {"deployment_id": deployment_id, "queue": queue, "deployment_xmin": versions.deployment,
            "pool_xmin": versions.pool, "queue_xmin": versions.queue}
