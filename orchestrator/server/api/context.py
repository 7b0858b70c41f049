"""What every request handler needs, built once per app by ``create_app``."""

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from orchestrator.server.api.gate import Gate
from orchestrator.server.api.ingest import EventWriter
from orchestrator.server.api.latency import Latencies
from orchestrator.server.api.notify import RunNotifier
from orchestrator.server.db import models as m
from orchestrator.server.db.session import OneWrite, commit_owed
from orchestrator.server.db.types import utcnow
from orchestrator.server.dispatcher import Dispatcher
from orchestrator.server.hub import CANCELLATIONS, DISPATCH, DUE, REFUSED, Event, Hub, run_events
from orchestrator.server.hub import worker_key as hub_worker_key
from orchestrator.server.reaper import Reaper
from orchestrator.server.services import leases
from orchestrator.server.services.events import Counts as EventCounts
from orchestrator.server.services.run_groups import RunGroups
from orchestrator.server.services.run_statements import RunRow
from orchestrator.settings import Settings
from pools.broker import RunBroker

T = TypeVar("T")


def worker_key(pool: str, worker_name: str) -> tuple[str, str]:
    """Notifier key of one worker's cancellation requests."""
    return (CANCELLATIONS, hub_worker_key(pool, worker_name))


class LateBeats:
    """The heartbeats being recorded (``AppContext.record_beat``): ``refused`` is told of each one
    not done a period after it began, and again each period it is still not done. One timer of the
    event loop for them all, armed at the earliest of their deadlines and re-armed only when it
    fires, in place of a timer made and cancelled for every beat (bench/RESULTS.md, issue 22,
    branch h5). On the event loop only."""

    def __init__(self, period: float, refused: Callable[[], None]) -> None:
        self._period = period
        self._refused = refused
        self._deadlines: dict[object, float] = {}  # a beat in flight: when it is late (the loop's time)
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the timer's

    def begin(self, loop: asyncio.AbstractEventLoop) -> object:
        """A beat's recording begins; ``end`` it with what this returns."""
        beat = object()
        self._deadlines[beat] = loop.time() + self._period
        # An armed timer is never later than this deadline: every other beat's began earlier, and a
        # late one's next deadline is within a period of its last, which has passed. One armed on
        # another loop (an app served again, as tests do) may never run.
        if self._timer is None or self._loop is not loop:
            if self._timer is not None:
                self._timer.cancel()
            self._loop = loop
            self._timer = loop.call_at(min(self._deadlines.values()), self._check, loop)
        return beat

    def end(self, beat: object) -> None:
        """A beat's recording is done (a timer armed for it finds it gone)."""
        del self._deadlines[beat]

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._timer is not None
        now = self._timer.when()  # the loop runs a timer up to its clock's resolution early
        self._timer = None
        for beat, deadline in self._deadlines.items():
            if deadline <= now:
                self._refused()
                self._deadlines[beat] = deadline + self._period
        if self._deadlines:
            self._timer = loop.call_at(min(self._deadlines.values()), self._check, loop)


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    broker: RunBroker
    dispatcher: Dispatcher
    notifier: RunNotifier
    latencies: Latencies
    hub: Hub
    gate: Gate  # who a request is (API keys)
    event_writer: EventWriter  # POST /api/events' group commit
    reaper: Reaper | None = None
    event_counts: EventCounts = field(default_factory=EventCounts)  # for /metrics
    run_groups: RunGroups = field(default_factory=RunGroups)  # the create-run route's group commit
    late_beats: LateBeats = field(init=False)  # the heartbeats being recorded (``record_beat``)

    def __post_init__(self) -> None:
        self.late_beats = LateBeats(self.settings.worker_heartbeat_seconds, self.beat_refused)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on error."""
        with self.sessions.begin() as session:
            yield session

    @contextlib.contextmanager
    def single_write(self) -> Iterator[Session]:
        """A session for work whose one write is one statement (a run's infrastructure report and
        heartbeats, a connection lease's lapse; the create-run route has ``one_write``) or that only reads: on
        PostgreSQL its connection is in autocommit for the block, so each statement is its own
        transaction and neither a BEGIN nor a COMMIT round trip is sent (about a tenth of a create's
        CPU, server and PostgreSQL; ~0.13 ms of the server's CPU per heartbeat or infrastructure
        report: bench/RESULTS.md, issue 22); elsewhere ``transaction()``. psycopg's own switch, not
        SQLAlchemy's ``isolation_level`` option, whose set and reset at each checkout cost more than
        the two round trips; switched back before the connection returns to the pool. Its statements
        being committed already, the session is committed only when that does more
        (``commit_owed``: ORM changes to flush, a mark for an after-commit hook), else closed."""
        if self.dialect != "postgresql":
            with self.transaction() as session:
                yield session
            return
        with self.sessions() as session:
            connection = session.connection()
            dbapi = _autocommit_on(connection)
            try:
                yield session
                if commit_owed(session):
                    session.commit()
            finally:
                _autocommit_off(connection, dbapi)

    @contextlib.contextmanager
    def one_write(self) -> Iterator[Session | OneWrite]:
        """``single_write`` for the create-run route: on PostgreSQL a ``OneWrite`` (a Core connection
        in autocommit, an ORM session on it only if asked for) in place of an ORM session, whose own
        checkout, transaction and close cost more than the route's statement (bench/RESULTS.md,
        issue 22, "round 6"); elsewhere ``transaction()``."""
        if self.dialect != "postgresql":
            with self.transaction() as session:
                yield session
            return
        with self.engine.connect() as connection:
            dbapi = _autocommit_on(connection)
            write = OneWrite(connection, self.sessions)
            try:
                yield write
                write.finish()
            finally:
                try:
                    write.close()
                finally:
                    _autocommit_off(connection, dbapi)

    def state_changed(self, run: m.FlowRun | RunRow, *also: Event) -> None:
        """Call after a run's state change is committed: wakes whoever waits on it, on every
        replica (waiters of the run, its worker's cancellation channel, the dispatchers). ``also``:
        hub events the same commit owes (``events.take_announcement``), sent in the same
        publication: one notification to the other replicas instead of two."""
        self.hub.publish(*run_events(run), *also)

    def runs_due(self) -> None:
        """Call after a commit that may make runs startable (a pool or queue resumed, a
        backfill): the dispatchers plan again."""
        self.hub.publish((DISPATCH, DUE))

    def claim_refused(self) -> None:
        """Call after a refused claim un-published its run: the dispatchers plan it again soon."""
        self.hub.publish((DISPATCH, REFUSED))

    def beat_refused(self) -> None:
        """A heartbeat was not recorded: the reapers must not take the silence it causes for the
        holder's (``Reaper.beat_refused``). Never blocks (the event loop calls it)."""
        if self.reaper is not None:
            self.reaper.beat_refused()

    async def record_beat(self, work: Callable[[], T]) -> T:
        """A heartbeat's database work, on the thread pool. Failing with a server error
        (``leases.recording``), or not done within one heartbeat period -- and again each period
        it is still not done: waiting for a connection of a spent pool (30 s before it fails), a
        stalled database -- it is a refused beat, told while the reapers can still wait
        (``LateBeats``)."""
        late = self.late_beats.begin(asyncio.get_running_loop())
        try:
            with leases.recording(self.beat_refused):
                return await run_in_threadpool(work)
        finally:
            self.late_beats.end(late)

    def client_gone(self, holder: leases.Holder) -> None:
        """A worker or flow-run process left while holding its request open, so it has probably
        died: its heartbeat is backdated, and the reaper judges it once the grace for a
        reconnect has passed (``services/leases.py``). Blocking: call from the thread pool.
        A flow-run process whose run is final wakes no reaper (every run's normal end: it leaves
        after its final report): nothing to judge, and a reaper pass per run was ~1 ms of the
        server's CPU a run (bench/RESULTS.md, issue 22, "The server's CPU
        outside its routes")."""
        if self.reaper is None:
            return
        with self.single_write() as session:  # the lapse is one UPDATE
            lapsed = holder.lapse(session, leases.lapsed(utcnow(), self.reaper.silence))
        if lapsed:
            self.reaper.holder_dropped(holder)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name


def _autocommit_on(connection: Connection) -> Any:
    """psycopg's autocommit on for ``connection`` (``single_write``, ``one_write``); its DB-API connection."""
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    dbapi.autocommit = True
    return dbapi


def _autocommit_off(connection: Connection, dbapi: Any) -> None:
    """Switched back before the connection returns to the pool."""
    try:
        dbapi.autocommit = False
    except Exception:  # noqa: BLE001 - a broken connection: never back in the pool as it is
        connection.invalidate()


async def _context(request: Request) -> AppContext:
    # async: FastAPI would run a plain ``def`` dependency on the thread pool, one hop per request.
    return request.app.state.ctx  # type: ignore[no-any-return]


Ctx = Annotated[AppContext, Depends(_context)]
