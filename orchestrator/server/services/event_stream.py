"""The live stream's reading: which stored events a subscriber has not been sent yet, with a cursor
that lets it resume on any replica with no gap and no duplicate.

Why a cursor is more than "the last seq sent": on PostgreSQL ``seq`` is taken from a sequence when
a row is inserted, not when its transaction commits. Transaction A takes seq 7, B takes 8, B commits
first: a reader that sees 8 and moves its mark past 7 never sends A's event. So a cursor is

* ``floor``: every seq at or below it is handled (sent, or not matching, or known never to come);
* ``ranges``: the handled seqs above the floor (sorted, disjoint ``[first, last]`` runs);

and the seqs between them are *gaps*: not committed yet, or never to be (a rolled-back transaction,
a duplicate dropped by ``ON CONFLICT``, both of which use up sequence values). A gap is looked for
again on every read until it appears (then it is sent) or ``GAP_GRACE_SECONDS`` have passed since
this reader first saw it missing (then it is given up and the floor moves past it). An event whose
transaction stays open longer than the grace after a later one committed is therefore not streamed
(it is still stored and paged); in practice a recorder's transaction lasts milliseconds.

The cursor's text (``floor`` or ``floor:a-b,c``) is the SSE ``id`` of each event: the state after
that event, so resuming from it (``Last-Event-ID``) reads exactly what came after. It holds no
clock: a resumed reader times the open gaps afresh, which can only delay the floor, never lose an
event. On SQLite (one writer at a time, seq assigned in commit order) gaps are only rollbacks.
"""

from __future__ import annotations

import bisect
import re
import time

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import InvalidInput
from orchestrator.schemas.event_queries import Event, EventFilter
from orchestrator.server.db import models as m
from orchestrator.server.services.event_pages import conditions

GAP_GRACE_SECONDS = 5.0
READ_BATCH = 1000  # seqs looked at in one read
MAX_GAPS_CHECKED = 10_000  # open gaps re-checked in one read (the lowest first)
MAX_CURSOR_CHARS = 4000  # fits a Last-Event-ID header
_CURSOR = re.compile(r"^(\d{1,19})(?::(\d{1,19}(?:-\d{1,19})?(?:,\d{1,19}(?:-\d{1,19})?)*))?$")


class Cursor:
    """Where a subscriber is (module docstring)."""

    def __init__(self, floor: int, ranges: list[list[int]] | None = None) -> None:
        self.floor = floor
        self.ranges: list[list[int]] = ranges or []
        self._missing_since: dict[int, float] = {}  # gap seq -> when this reader first saw it missing
        self._roll()

    @classmethod
    def parse(cls, text: str) -> Cursor:
        match = _CURSOR.match(text) if len(text) <= MAX_CURSOR_CHARS else None
        if match is None:
            raise InvalidInput("Last-Event-ID / after: not a cursor of this stream (use the id of an event it sent)")
        floor, ranges = int(match.group(1)), []
        previous = floor
        for part in (match.group(2) or "").split(",") if match.group(2) else []:
            first, _, last = part.partition("-")
            low, high = int(first), int(last or first)
            if low <= previous or high < low:
                raise InvalidInput("Last-Event-ID / after: the cursor's runs are out of order")
            ranges.append([low, high])
            previous = high
        return cls(floor, ranges)

    def text(self) -> str:
        if not self.ranges:
            return str(self.floor)
        return f"{self.floor}:" + ",".join(str(a) if a == b else f"{a}-{b}" for a, b in self.ranges)

    @property
    def top(self) -> int:
        """The highest handled seq."""
        return self.ranges[-1][1] if self.ranges else self.floor

    def handled(self, seq: int) -> bool:
        if seq <= self.floor:
            return True
        at = bisect.bisect_right(self.ranges, [seq, float("inf")]) - 1
        return at >= 0 and self.ranges[at][0] <= seq <= self.ranges[at][1]

    def add(self, seq: int) -> bool:
        """Mark ``seq`` handled; False if it already was (it must not be sent again)."""
        if self.handled(seq):
            return False
        at = bisect.bisect_left(self.ranges, [seq, seq])
        self.ranges.insert(at, [seq, seq])
        if at + 1 < len(self.ranges) and self.ranges[at + 1][0] == seq + 1:  # joins the run after
            self.ranges[at][1] = self.ranges.pop(at + 1)[1]
        if at > 0 and self.ranges[at - 1][1] == seq - 1:  # joins the run before
            self.ranges[at - 1][1] = self.ranges.pop(at)[1]
        self._missing_since.pop(seq, None)
        self._roll()
        return True

    def gaps(self, most: int = MAX_GAPS_CHECKED) -> list[int]:
        """Seqs between the floor and the top not handled yet, the lowest first."""
        out: list[int] = []
        previous = self.floor
        for first, last in self.ranges:
            out.extend(range(previous + 1, min(first, previous + 1 + most - len(out))))
            if len(out) >= most:
                break
            previous = last
        return out

    def expire(self, now: float, grace: float = GAP_GRACE_SECONDS) -> float | None:
        """Give up gaps missing for ``grace`` seconds; returns when the next open gap expires (the
        reader re-reads then even if nothing wakes it), or None when there is none."""
        deadline: float | None = None
        for seq in self.gaps():
            since = self._missing_since.setdefault(seq, now)
            if now - since >= grace:
                self.add(seq)
            else:
                deadline = since + grace if deadline is None else min(deadline, since + grace)
        return deadline

    def _roll(self) -> None:
        while self.ranges and self.ranges[0][0] <= self.floor + 1:
            self.floor = max(self.floor, self.ranges.pop(0)[1])


def start_cursor(session: Session, recent: int = READ_BATCH) -> Cursor:
    """A cursor for a subscriber that starts now: the latest stored events count as handled, and
    the gaps among them stay open, so an event already numbered but committed after this moment is
    still sent."""
    seqs = session.scalars(select(m.Event.seq).order_by(m.Event.seq.desc()).limit(recent)).all()
    if not seqs:
        return Cursor(0)
    cursor = Cursor(min(seqs) - 1)
    for seq in sorted(seqs):
        cursor.add(seq)
    return cursor


class StreamReader:
    """Reads, for one subscriber, the events after its cursor that match its filter."""

    def __init__(self, sessions: sessionmaker[Session], where: EventFilter, cursor: Cursor,
                 grace: float = GAP_GRACE_SECONDS) -> None:
        self.sessions, self.where, self.cursor, self.grace = sessions, where, cursor, grace
        self.more = False  # the last read stopped at READ_BATCH: read again at once
        self.recheck_at: float | None = None  # monotonic time an open gap expires

    def read(self) -> list[tuple[Event, str]]:
        """The matching events not sent yet, in seq order, each with the cursor after it."""
        now = time.monotonic()
        with self.sessions() as session:
            dialect = session.get_bind().dialect.name
            new = session.scalars(select(m.Event.seq).where(m.Event.seq > self.cursor.top)
                                  .order_by(m.Event.seq).limit(READ_BATCH)).all()
            gaps = self.cursor.gaps()
            filled = session.scalars(select(m.Event.seq).where(m.Event.seq.in_(gaps))).all() if gaps else []
            arrived = sorted({*new, *filled})
            # The filter's SQL part on exactly these seqs (a seq that committed between the two
            # queries is not among them: it is read next time, once).
            rows = {row.seq: row for row in session.scalars(
                select(m.Event).where(m.Event.seq.in_(arrived), *conditions(self.where, dialect)))} if arrived else {}
            out: list[tuple[Event, str]] = []
            for seq in arrived:
                if not self.cursor.add(seq):
                    continue
                row = rows.get(seq)
                if row is not None:
                    event = Event.model_validate(row)
                    if self.where.matches(event):
                        out.append((event, self.cursor.text()))
        self.recheck_at = self.cursor.expire(now, self.grace)
        self.more = len(new) == READ_BATCH
        return out
