"""The evaluation's state in the database: buckets (``automation_buckets``), the latest firings
of the triggers inside compound and sequence triggers (``automation_child_firings``), and events
held until the event they follow is evaluated (``automation_held_events``).

Everything here runs inside the evaluator's transaction, which holds the cursor's lock
(``cursor.lock``): one evaluator at a time changes this state, and its changes, the firings they
cause and the cursor's advance commit together or not at all. So a replica killed mid-pass leaves
the state as it was, and the next pass (on any replica) evaluates the same events again, once.

``Buckets`` reads each bucket once per pass and writes back the changed ones at the end: a burst
of events for one trigger costs one read and one write, not one per event.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, insert, select, tuple_, update
from sqlalchemy.orm import Session

from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.triggers.evaluation import Bucket, ChildFiring, Seen

Key = tuple[uuid.UUID, uuid.UUID, str]  # automation, trigger, bucket key
_ABSENT = object()


def _bucket(row: m.AutomationBucket) -> Bucket:
    return Bucket(row.window_start, row.window_end, row.count,
                  Seen.from_json(row.last_event) if row.last_event else None)


class Buckets:
    """The buckets one pass reads and changes."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._read: dict[Key, Bucket | None] = {}
        self._changed: dict[Key, Bucket | None] = {}

    def get(self, key: Key) -> Bucket | None:
        if key in self._changed:
            return self._changed[key]
        if key not in self._read:
            self.load([key])
        return self._read[key]

    def load(self, keys: Iterable[Key]) -> None:
        """Read these buckets in one query (those not read yet)."""
        wanted = [k for k in dict.fromkeys(keys) if k not in self._read and k not in self._changed]
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            for key in chunk:
                self._read[key] = None
            rows = self.session.scalars(select(m.AutomationBucket).where(tuple_(
                m.AutomationBucket.automation_id, m.AutomationBucket.trigger_id, m.AutomationBucket.bucket_key,
            ).in_(chunk)))
            for row in rows:
                self._read[(row.automation_id, row.trigger_id, row.bucket_key)] = _bucket(row)

    def of_trigger(self, automation_id: uuid.UUID, trigger_id: uuid.UUID) -> dict[str, Bucket]:
        """Every bucket of one trigger (for the clock's pass)."""
        rows = self.session.scalars(select(m.AutomationBucket).where(
            m.AutomationBucket.automation_id == automation_id, m.AutomationBucket.trigger_id == trigger_id))
        out: dict[str, Bucket] = {}
        for row in rows:
            key = (automation_id, trigger_id, row.bucket_key)
            self._read.setdefault(key, _bucket(row))
        for key in [k for k in (*self._read, *self._changed) if k[:2] == (automation_id, trigger_id)]:
            bucket = self.get(key)
            if bucket is not None:
                out[key[2]] = bucket
        return out

    def put(self, key: Key, bucket: Bucket | None) -> None:
        if key not in self._read:
            self.load([key])
        self._changed[key] = bucket

    def flush(self) -> None:
        """Write the changed buckets (a bucket equal to what was read is not written): a statement
        for the deleted, one for the new and one for the changed, whatever their number. Not
        through ORM objects: the session holds the ones ``load`` read only weakly, so each
        ``session.get`` read its row again (half of a short pass, bench/triggers.py --per-pass)."""
        now = utcnow()
        gone: list[Key] = []
        new: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        for key, bucket in self._changed.items():
            before = self._read.get(key)
            if bucket == before:
                continue
            if bucket is None:
                gone.append(key)
                continue
            automation_id, trigger_id, bucket_key = key
            values = {"automation_id": automation_id, "trigger_id": trigger_id, "bucket_key": bucket_key,
                      "window_start": bucket.start, "window_end": bucket.end, "count": bucket.count,
                      "last_event": bucket.last_event.as_json() if bucket.last_event else None, "updated": now}
            (new if before is None else changed).append(values)
        b = m.AutomationBucket
        for start in range(0, len(gone), 500):
            self.session.execute(delete(b).where(tuple_(b.automation_id, b.trigger_id, b.bucket_key).in_(
                gone[start:start + 500])).execution_options(synchronize_session=False))
        if new:
            self.session.execute(insert(b), new)
        if changed:  # by primary key, as one executemany
            self.session.execute(update(b), changed)
        self._read.update(self._changed)
        self._changed.clear()


def drop_unknown(session: Session, known: set[tuple[uuid.UUID, uuid.UUID]]) -> None:
    """Delete buckets of triggers no longer in any enabled automation (a changed trigger has new
    ids: its old state must never count)."""
    pairs = session.execute(select(m.AutomationBucket.automation_id, m.AutomationBucket.trigger_id).distinct()).all()
    for automation_id, trigger_id in pairs:
        if (automation_id, trigger_id) not in known:
            session.execute(delete(m.AutomationBucket).where(m.AutomationBucket.automation_id == automation_id,
                                                             m.AutomationBucket.trigger_id == trigger_id))


# --- compound and sequence ----------------------------------------------------------------------


class ChildFirings:
    """The child firings of the composite triggers one pass reads and changes: those of every
    composite automation read in one query when the first is wanted, the changed ones written
    back at the end in two statements (a pass fires the children of many composites: a query and a
    delete-then-insert per parent was most of a short pass)."""

    def __init__(self, session: Session, composites: Iterable[uuid.UUID]) -> None:
        self.session = session
        self.composites = list(composites)  # the automations with a compound or sequence trigger
        self._firings: dict[tuple[uuid.UUID, uuid.UUID], list[ChildFiring]] | None = None
        self._changed: set[tuple[uuid.UUID, uuid.UUID]] = set()

    def get(self, automation_id: uuid.UUID, parent_id: uuid.UUID) -> list[ChildFiring]:
        if self._firings is None:
            self._firings = self._read([*self.composites, automation_id])
        return self._firings.get((automation_id, parent_id), [])

    def _read(self, automation_ids: list[uuid.UUID]) -> dict[tuple[uuid.UUID, uuid.UUID], list[ChildFiring]]:
        out: dict[tuple[uuid.UUID, uuid.UUID], list[ChildFiring]] = {}
        wanted = list(dict.fromkeys(automation_ids))
        for start in range(0, len(wanted), 500):
            c = m.AutomationChildFiring
            for automation_id, parent_id, child_id, firing_id, fired_at, event in self.session.execute(
                    select(c.automation_id, c.parent_id, c.child_id, c.firing_id, c.fired_at, c.event)
                    .where(c.automation_id.in_(wanted[start:start + 500]))):
                out.setdefault((automation_id, parent_id), []).append(
                    ChildFiring(child_id, firing_id, fired_at, Seen.from_json(event) if event else None))
        return out

    def put(self, automation_id: uuid.UUID, parent_id: uuid.UUID, firings: list[ChildFiring]) -> None:
        if self._firings is None:
            self._firings = self._read([*self.composites, automation_id])
        self._firings[(automation_id, parent_id)] = firings
        self._changed.add((automation_id, parent_id))

    def flush(self) -> None:
        if not self._changed or self._firings is None:
            return
        changed = sorted(self._changed)
        for start in range(0, len(changed), 500):
            self.session.execute(delete(m.AutomationChildFiring).where(tuple_(
                m.AutomationChildFiring.automation_id, m.AutomationChildFiring.parent_id,
            ).in_(changed[start:start + 500])).execution_options(synchronize_session=False))
        rows = [{"automation_id": automation_id, "parent_id": parent_id, "child_id": f.child_id,
                 "firing_id": f.firing_id, "fired_at": f.fired_at, "event": f.event.as_json() if f.event else None}
                for automation_id, parent_id in changed for f in self._firings[(automation_id, parent_id)]]
        if rows:
            self.session.execute(insert(m.AutomationChildFiring), rows)
        self._changed.clear()


# --- held events --------------------------------------------------------------------------------


def hold(session: Session, seq: int, follows: uuid.UUID) -> None:
    if session.get(m.AutomationHeldEvent, seq) is None:
        session.add(m.AutomationHeldEvent(event_seq=seq, follows=follows, held_at=utcnow()))
        session.flush()


def release_followers(session: Session, event_ids: Iterable[uuid.UUID]) -> list[int]:
    """The held events that follow any of ``event_ids`` (no longer held)."""
    ids = list(event_ids)
    if not ids:
        return []
    rows = list(session.scalars(select(m.AutomationHeldEvent).where(m.AutomationHeldEvent.follows.in_(ids))))
    for row in rows:
        session.delete(row)
    session.flush()
    return [row.event_seq for row in rows]


def release_expired(session: Session, before: dt.datetime) -> list[int]:
    """Held events whose wait is over: evaluated as if in order."""
    rows = list(session.scalars(select(m.AutomationHeldEvent).where(m.AutomationHeldEvent.held_at < before)
                                .order_by(m.AutomationHeldEvent.held_at).limit(1000)))
    for row in rows:
        session.delete(row)
    session.flush()
    return [row.event_seq for row in rows]


def oldest_hold(session: Session) -> dt.datetime | None:
    return session.scalar(select(m.AutomationHeldEvent.held_at).order_by(m.AutomationHeldEvent.held_at).limit(1))
