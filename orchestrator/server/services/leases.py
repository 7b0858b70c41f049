"""Connection leases: a faster death notice than heartbeat silence.

A worker keeps a request open at all times (its cancellation long-poll), and so does a flow-run
process (its held heartbeat). When such a process dies, its kernel closes the connection and the
API sees the client leave at once. A heartbeat only says "alive"; a dropped connection says
"probably dead": the API backdates the holder's last heartbeat so that, unless it reconnects
within a short grace (a live client re-opens its request at once), the reaper judges it silent
``grace`` seconds from now instead of a whole silence period (3 heartbeats) later -- also just
after the server started, when the reaper does not trust silence yet (``Dropped``). A crash of a
machine or a network partition sends no such notice; heartbeat silence still covers those.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, false, or_, select, update
from sqlalchemy.orm import Session

from orchestrator.errors import OrchestratorError, ServiceUnavailable
from orchestrator.server.db import models as m
from orchestrator.server.services import run_columns


@contextlib.contextmanager
def recording(refused: Callable[[], None]) -> Iterator[None]:
    """Around a heartbeat's database work: a failure answered with a server error (the database
    down or refusing, the pool exhausted, a bug) is told to ``refused`` (``Reaper.beat_refused``)
    before it is raised -- the holder's beat was lost by the server, so its silence is not the
    holder's. An error about the request itself (an unknown run: 404) is not a refusal."""
    try:
        yield
    except OrchestratorError as error:
        if isinstance(error, ServiceUnavailable):
            refused()
        raise
    except Exception:
        refused()
        raise


def grace_seconds(silence: dt.timedelta) -> float:
    """How long a dropped holder has to reconnect before it counts as gone."""
    return min(2.0, silence.total_seconds() / 2)


def lapsed(now: dt.datetime, silence: dt.timedelta) -> dt.datetime:
    """The heartbeat time that makes the reaper judge its owner silent ``grace`` after ``now``."""
    return now - silence + dt.timedelta(seconds=grace_seconds(silence))


def lapse_worker(session: Session, at: dt.datetime, *, pool_name: str, worker_name: str,
                 instance: uuid.UUID | None = None) -> None:
    """Backdate a worker's heartbeat to ``at`` (never forward: a newer beat stays), if the process
    ``instance`` (None: a worker that sends no id) still holds the name: a connection of a process
    that lost its name does not lapse the new holder's."""
    pool_id = select(m.WorkPool.id).where(m.WorkPool.name == pool_name).scalar_subquery()
    holder = m.Worker.instance_id.is_(None) if instance is None else m.Worker.instance_id == instance
    session.execute(update(m.Worker)
                    .where(m.Worker.pool_id == pool_id, m.Worker.name == worker_name, holder,
                           m.Worker.last_heartbeat > at)
                    .values(last_heartbeat=at))


@dataclass(frozen=True)
class WorkerHolder:
    """A worker's connection lease: its cancellation long-poll (``instance``: the process's id)."""

    pool_name: str
    worker_name: str
    instance: uuid.UUID | None = None

    def lapse(self, session: Session, at: dt.datetime) -> bool:
        """Backdate the worker's heartbeat (above). True: a worker seen leaving is always judged."""
        lapse_worker(session, at, pool_name=self.pool_name, worker_name=self.worker_name, instance=self.instance)
        return True


@dataclass(frozen=True)
class RunHolder:
    """A flow-run process's connection lease: its held heartbeat."""

    run_id: uuid.UUID

    def lapse(self, session: Session, at: dt.datetime) -> bool:
        """Backdate the process's heartbeat; whether its run is still worth judging (False: the
        run is final, every run's normal end: its process drops the held beat as it exits)."""
        return run_columns.lapse_heartbeat(session, self.run_id, at)


Holder = WorkerHolder | RunHolder


class Dropped:
    """The holders this server saw drop their connection (thread-safe).

    The reaper does not trust heartbeat silence for a while after it starts (a holder could not
    beat while the server was down), but a connection that this server saw open and then close
    is news, not silence: in that while, these holders -- and only these -- are judged, so a
    worker and its flow-run process killed just after a server start are not given ten more
    seconds. A holder that reconnected has a fresh heartbeat again and is not silent anyway."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: set[tuple[str, str]] = set()
        self._runs: set[uuid.UUID] = set()

    def add(self, holder: Holder) -> None:
        with self._lock:
            if isinstance(holder, WorkerHolder):
                self._workers.add((holder.pool_name, holder.worker_name))
            else:
                self._runs.add(holder.run_id)

    def clear(self) -> None:
        with self._lock:
            self._workers.clear()
            self._runs.clear()

    def __contains__(self, holder: Holder) -> bool:
        with self._lock:
            if isinstance(holder, WorkerHolder):
                return (holder.pool_name, holder.worker_name) in self._workers
            return holder.run_id in self._runs

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._workers or self._runs)

    def worker_dropped(self) -> ColumnElement[bool]:
        """Flow runs whose worker was seen dropping (a condition on ``flow_runs``)."""
        with self._lock:
            pairs = sorted(self._workers)
        return or_(false(), *(and_(m.FlowRun.work_pool_name == pool, m.FlowRun.worker_name == name)
                              for pool, name in pairs))

    def process_dropped(self) -> ColumnElement[bool]:
        """Flow runs whose flow-run process was seen dropping."""
        with self._lock:
            runs = sorted(self._runs)
        return m.FlowRun.id.in_(runs) if runs else false()
