"""Group commit for the create-run route: creates that arrive together are written in one statement.

On PostgreSQL a create with a kept target (``create_targets``) and no idempotency key is one guarded
``INSERT`` (``new_runs.insert_runs``), its own transaction: with many clients, PostgreSQL's
per-statement and per-commit work (a WAL flush each) is most of its CPU. That statement takes any
number of rows, so the runs of one kept target that wait together share it (bench/RESULTS.md,
issue 22, "Create-run API: a group commit of the creates arriving together").

No writer thread and no timer: a create's own thread writes (the leader), taking with its run every
run queued meanwhile; a create arriving while ``LEADERS`` are writing queues and waits. A leader
done with its group hands the lead to the first create still queued (whose thread writes the next
group), or stops when none is. So a lone create is written at once by its own thread, as before,
and a group grows with the load. Each statement is written on the leader's session (autocommit on
PostgreSQL: the statement is the transaction); a create answers only once its run is committed.

One statement per kept target (its guard): a target that changed meanwhile writes nothing and its
creates get ``create_targets.Stale``, as a lone create would (``flow_runs.create`` reads again and
writes alone). A statement that fails otherwise is written again run by run, so that a run the
database refuses fails alone, with its own error. Refusals decided before the write (unknown
parameters, a missing queue...) never reach a group.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from orchestrator.server.services import create_targets, events
from orchestrator.server.services.new_runs import Row, insert_runs

LEADERS = 2  # statements in flight: one commits (a WAL flush) while the next is written
MAX_GROUP = 200  # runs in one group (below ``new_runs.CHUNK``: one statement per kept target)
_LEAD = object()  # a queued create's outcome when it is handed the lead


@dataclass(eq=False)
class _Create:
    session: Session  # the create's own: its commit announces the run's event (``events.announce``)
    row: Row
    guard: dict[str, Any]
    done: threading.Event | None = None  # set once settled; made only for a create that queues
    outcome: Any = None  # True once committed, an exception, or ``_LEAD``


class RunGroups:
    """The queue of creates waiting for a leader (one per app: ``AppContext.run_groups``)."""

    def __init__(self, leaders: int = LEADERS) -> None:
        self._leaders = leaders
        self._lock = threading.Lock()
        self._queue: deque[_Create] = deque()
        self._leading = 0
        self.groups = 0  # statements that wrote runs (tests read it)

    @property
    def leaders(self) -> int:
        return self._leaders

    @property
    def waiting(self) -> int:
        """Creates queued for the next leader (tests read it)."""
        with self._lock:
            return len(self._queue)

    def insert(self, session: Session, row: Row, guard: dict[str, Any]) -> None:
        """Write ``row`` (a ``run_values`` row, no idempotency key) guarded by ``guard``
        (``create_targets.guard_parameters``); returns once it is committed. ``session``: on
        PostgreSQL, in autocommit (``AppContext.one_write``), as a group may be written on it. Raises
        ``create_targets.Stale`` when the target changed (nothing written), or what writing it raised."""
        create = _Create(session, row, guard)
        with self._lock:
            lead = self._leading < self._leaders
            if lead:
                self._leading += 1
                group = self._take(create)
            else:
                create.done = threading.Event()
                self._queue.append(create)
        if create.done is not None:
            create.done.wait()
            if create.outcome is not _LEAD:
                return self._outcome(create)
            with self._lock:
                group = self._take(create)
        try:
            self._write(session, group)
        except BaseException as error:  # never leave a queued create waiting for ever
            for other in group:
                if other.outcome in (None, _LEAD):
                    self._settle(other, error)
            raise
        finally:
            with self._lock:
                if self._queue:  # the next group's leader: its own thread writes it
                    following = self._queue.popleft()
                    following.outcome = _LEAD
                    following.done.set()  # type: ignore[union-attr]  # a queued create has one
                else:
                    self._leading -= 1
        return self._outcome(create)

    def _take(self, create: _Create) -> list[_Create]:
        group = [create]
        while self._queue and len(group) < MAX_GROUP:
            group.append(self._queue.popleft())
        return group

    def _write(self, session: Session, group: list[_Create]) -> None:
        by_target: dict[tuple[Any, ...], list[_Create]] = {}
        for create in group:
            by_target.setdefault(tuple(create.guard.values()), []).append(create)
        for creates in by_target.values():
            self._write_one_target(session, creates)

    def _write_one_target(self, session: Session, creates: list[_Create]) -> None:
        try:
            insert_runs(session, [create.row for create in creates], guard=creates[0].guard)
        except Exception as error:  # noqa: BLE001 -- answered to the create(s), which the handlers map
            if isinstance(error, create_targets.Stale):  # the target changed: nothing written
                for create in creates:
                    self._settle(create, create_targets.Stale())
            elif len(creates) == 1:
                self._settle(creates[0], error)
            else:
                for create in creates:
                    self._write_one_target(session, [create])
            return
        with self._lock:
            self.groups += 1
        names = session.info.get(events.RECORDED, set())
        for create in creates:
            if create.session is not session:
                events.announce(create.session, names)  # the run's event: its route announces it
            self._settle(create, True)

    @staticmethod
    def _settle(create: _Create, outcome: Any) -> None:
        create.outcome = outcome
        if create.done is not None:
            create.done.set()

    @staticmethod
    def _outcome(create: _Create) -> None:
        if isinstance(create.outcome, BaseException):
            raise create.outcome
        assert create.outcome is True, create.outcome
