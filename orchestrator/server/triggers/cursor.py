"""Which stored events the trigger evaluator has handled, kept in the database so any replica
carries on where another stopped (table ``trigger_cursors``, one row).

On PostgreSQL an event's ``seq`` is taken when its row is inserted, not when its transaction
commits: seq 8 can be visible before seq 7. So the cursor is a ``floor`` (every seq at or below it
handled), the seqs ``handled`` above it, and the gaps between them, each ``missing`` since the
wall-clock time it was first seen missing. A gap is looked for on every pass until it appears
(then it is evaluated, late but once) or ``GAP_GRACE_SECONDS`` pass (then it is given up: a
rolled-back transaction or an event dropped as a duplicate, both of which use up sequence values).
Events are evaluated as they become visible, so a gap delays nothing behind it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow

NAME = "triggers"
GAP_GRACE_SECONDS = 5.0
MAX_GAPS = 5_000  # gaps kept open at once (the oldest are given up beyond)


@dataclass
class Cursor:
    floor: int
    handled: set[int] = field(default_factory=set)
    missing: dict[int, float] = field(default_factory=dict)  # gap seq -> epoch first seen missing
    read_at: dt.datetime | None = None  # the row's ``updated`` as read: the guard of the write-back

    @property
    def top(self) -> int:
        return max(self.handled, default=self.floor)

    def is_handled(self, seq: int) -> bool:
        return seq <= self.floor or seq in self.handled

    def add(self, seq: int) -> None:
        if seq > self.floor:
            self.handled.add(seq)
            self.missing.pop(seq, None)
            self._roll()

    def gaps(self) -> list[int]:
        if not self.handled:
            return []
        return [seq for seq in range(self.floor + 1, self.top) if seq not in self.handled][:MAX_GAPS]

    def expire(self, now: float, grace: float = GAP_GRACE_SECONDS) -> float | None:
        """Give up gaps missing ``grace`` seconds; the epoch when the next open one expires."""
        deadline: float | None = None
        gaps = self.gaps()
        for seq in gaps:
            since = self.missing.setdefault(seq, now)
            if now - since >= grace:
                self.add(seq)
            else:
                deadline = since + grace if deadline is None else min(deadline, since + grace)
        open_gaps = set(gaps)
        self.missing = {seq: t for seq, t in self.missing.items() if seq in open_gaps and not self.is_handled(seq)}
        return deadline

    def _roll(self) -> None:
        while self.floor + 1 in self.handled:
            self.floor += 1
            self.handled.discard(self.floor)


def lock(session: Session) -> Cursor | None:
    """The cursor, locked for this transaction; None when another evaluator holds it (PostgreSQL:
    ``FOR UPDATE SKIP LOCKED``; SQLite has one writer, and the guarded write-back in ``save``
    refuses a pass that raced another)."""
    row = session.scalar(select(m.TriggerCursor).where(m.TriggerCursor.name == NAME)
                         .with_for_update(skip_locked=True))
    if row is None:
        if session.get(m.TriggerCursor, NAME) is not None:
            return None  # it exists: locked by another evaluator
        # Migration 0007 creates it, but a new database gets the models' schema without it (and it
        # may have been deleted since): evaluate from now on. Replicas starting together race to
        # create it; the one that loses leaves this pass to the winner.
        top = session.scalar(select(func.max(m.Event.seq))) or 0
        created = utcnow()
        values = {"name": NAME, "floor": top, "handled": [], "missing": {}, "updated": created}
        if session.get_bind().dialect.name == "postgresql":
            insert = postgresql.insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # here: a PostgreSQL server never loads it
        made = session.execute(insert(m.TriggerCursor).values(values).on_conflict_do_nothing()
                               .returning(m.TriggerCursor.name)).first()
        return Cursor(top, read_at=created) if made is not None else None
    return Cursor(row.floor, {int(s) for s in row.handled}, {int(k): float(v) for k, v in row.missing.items()},
                  read_at=row.updated)


def save(session: Session, cursor: Cursor) -> bool:
    """Write the cursor back, only if no other evaluator moved it meanwhile (False: roll back)."""
    result = session.execute(
        update(m.TriggerCursor)
        .where(m.TriggerCursor.name == NAME, m.TriggerCursor.updated == cursor.read_at)
        .values(floor=cursor.floor, handled=sorted(cursor.handled),
                missing={str(k): v for k, v in cursor.missing.items()}, updated=utcnow())
        .execution_options(synchronize_session=False))
    return result.rowcount == 1  # type: ignore[attr-defined]


def now_epoch() -> float:
    return utcnow().timestamp()


def age_seconds(moment: dt.datetime) -> float:
    return (utcnow() - moment).total_seconds()
