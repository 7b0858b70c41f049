"""One evaluation pass: the events stored since the last pass, through the enabled automations'
triggers, into buckets and firings -- one transaction that also advances the cursor.

Why one evaluator at a time (the cursor row's ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a guarded
write-back of the cursor everywhere) rather than per-bucket guarded updates: a bucket's count
depends on every event before it, so "each event counted once" and "each window fires once" are
one fact about the cursor; two replicas counting disjoint events into the same bucket would need
the events partitioned anyway. A pass is short (a batch of events, a few statements), the other
replicas skip it rather than wait, and one evaluator does thousands of events a second (see
bench/triggers.py), so nothing is lost by not evaluating in parallel; a replica killed mid-pass
rolls back, and the next pass on any replica evaluates the same events, once.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import logging
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import events
from orchestrator.server.triggers import buckets as state
from orchestrator.server.triggers import cursor as cursors
from orchestrator.server.triggers import evaluation as ev
from orchestrator.server.triggers.after_commit import AfterCommit

if TYPE_CHECKING:
    from orchestrator.schemas.automations import Automation
    from orchestrator.schemas.triggers import CompoundTrigger, EventTrigger, SequenceTrigger
    from orchestrator.server.triggers.firing import Own

# The automations' service and schemas (the triggers' models among them), and the firing's actions,
# are imported by the first pass that finds an enabled automation (``load``) or fires (``_fired``): a
# server with none starts and passes over events without them (~60 ms of a start's CPU, 6 % of it).

log = logging.getLogger("orchestrator.triggers")

BATCH = 1000  # events evaluated in one pass (those some trigger names)
SCAN = 5000  # event names read in one pass: most name no trigger and cost one row of two columns
FOLLOWS_WAIT = dt.timedelta(minutes=15)  # Prefect's: an event waits this long for the one it follows
MAX_FOLLOW_DEPTH = 20
SWEEP_SECONDS = 10.0  # how often expired Reactive buckets are dropped
_GLOB = set("*?[")
NAMES_REMEMBERED = 10_000  # event names whose candidate triggers an Index keeps


@dataclass
class Loaded:
    """An enabled automation as the evaluator uses it."""

    automation: Automation
    leaves: list[EventTrigger]
    parents: dict[uuid.UUID, CompoundTrigger | SequenceTrigger]
    own: Own  # the automation's labels as its events' resource


def _parents(trigger: EventTrigger | CompoundTrigger | SequenceTrigger,
             out: dict[uuid.UUID, CompoundTrigger | SequenceTrigger]) -> None:
    if trigger.type != "event":
        for child in trigger.triggers:
            out[child.id] = trigger
            _parents(child, out)


@dataclass(frozen=True)
class Candidate:
    """A trigger that names an event's name: whether it expects it and whether it opens a window
    on it (worked out once per name, not once per event)."""

    item: Loaded
    leaf: EventTrigger
    expected: bool
    opens: bool


class Index:
    """Which triggers name an event, by its name: exact names in a dict, the rest tried."""

    def __init__(self, loaded: Iterable[Loaded]) -> None:
        self.exact: dict[str, list[tuple[Loaded, EventTrigger]]] = {}
        self.other: list[tuple[list[str] | None, Loaded, EventTrigger]] = []
        loaded_list = list(loaded)
        for item in loaded_list:
            for leaf in item.leaves:
                names = [*leaf.expect, *leaf.after] if leaf.expect else None  # None: any event
                if names is not None and not any(_GLOB & set(n) or n.startswith("!") for n in names):
                    for name in dict.fromkeys(names):
                        self.exact.setdefault(name, []).append((item, leaf))
                else:
                    self.other.append((names, item, leaf))

        self._by_name: dict[str, list[Candidate]] = {}
        self.composites = [item.automation.id for item in loaded_list if item.parents]

    def candidates(self, name: str) -> list[Candidate]:
        """The triggers that expect an event of this name or open a window on it (remembered: a
        burst repeats few names)."""
        found = self._by_name.get(name)
        if found is None:
            maybe = list(self.exact.get(name, ()))
            for names, item, leaf in self.other:
                if names is None or any(n.startswith("!") or fnmatch.fnmatchcase(name, n) for n in names):
                    maybe.append((item, leaf))
            found = []
            for item, leaf in maybe:
                expected, opens = leaf.expects(name), ev.starts_after(leaf, name)
                if expected or opens:
                    found.append(Candidate(item, leaf, expected, opens))
            if len(self._by_name) >= NAMES_REMEMBERED:
                self._by_name.clear()
            self._by_name[name] = found
        return found


def load(session: Session) -> list[Loaded]:
    if session.scalar(select(m.Automation.id).where(m.Automation.enabled).limit(1)) is None:
        return []  # none enabled: nothing to import (a query at each re-read, rare, for ~45 ms of a start)
    from orchestrator.schemas.triggers import leaves
    from orchestrator.server.services import automations as automation_service
    from orchestrator.server.triggers.firing import Own

    out = []
    for row in automation_service.list_(session, enabled=True, limit=100_000):
        automation = automation_service.definition(row)
        parents: dict[uuid.UUID, CompoundTrigger | SequenceTrigger] = {}
        _parents(automation.trigger, parents)
        out.append(Loaded(automation, list(leaves(automation.trigger)), parents, Own.of(automation)))
    return out


class Raced(Exception):
    """Another evaluator moved the cursor during this pass: roll it back."""


@dataclass
class Pass:
    session: Session
    cursor: cursors.Cursor
    buckets: state.Buckets
    children: state.ChildFirings
    after: AfterCommit = field(default_factory=AfterCommit)
    evaluated: int = 0
    firings: int = 0
    holding: bool = False  # some event is held (else no follower to look for: no query per event)


_SEEN = (m.Event.seq, m.Event.id, m.Event.occurred, m.Event.event, m.Event.resource, m.Event.related,
         m.Event.payload, m.Event.follows, m.Event.received)


def _read_seen(session: Session, seqs: list[int]) -> list[tuple[int, ev.Seen]]:
    """The events of ``seqs`` as triggers read them, in seq order (plain rows: no ORM objects)."""
    out: list[tuple[int, ev.Seen]] = []
    for start in range(0, len(seqs), BATCH):
        rows = session.execute(select(*_SEEN).where(m.Event.seq.in_(seqs[start:start + BATCH])))
        out += [(seq, ev.Seen(id=id_, occurred=occurred, event=event, resource=resource, related=related,
                              payload=payload, follows=follows, received=received))
                for seq, id_, occurred, event, resource, related, payload, follows, received in rows]
    return sorted(out, key=lambda pair: pair[0])


class Evaluator:
    """Holds the automations (re-read when told) and the Proactive clock between passes."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.loaded: list[Loaded] | None = None
        self.index = Index([])
        self.proactive_due: dict[tuple[uuid.UUID, uuid.UUID], dt.datetime] = {}
        self.next_sweep = utcnow()
        self.last_batch = 0  # events read by the last pass
        self.generation = 0  # of the automations: ``reload`` (another thread) counts it up
        self._lock = threading.Lock()

    def reload(self) -> None:
        with self._lock:  # a pass loading now may have read them before the change: it keeps nothing
            self.generation += 1
            self.loaded = None

    def may_cover(self, names: set[str] | None) -> bool:
        """Whether an event named one of ``names`` (None: unknown) may concern an enabled trigger
        (called from the hub's thread: reads what the last pass loaded)."""
        index = self.index
        if self.loaded is None or names is None or index.other:
            return True  # not loaded yet, names unknown, or a trigger not keyed by exact names
        return any(name in index.exact for name in names)

    def run_pass(self, now: dt.datetime | None = None) -> tuple[Pass | None, dt.datetime | None]:
        """One pass; returns it (None when another evaluator holds the cursor) and when the next is
        needed without any new event. Raises ``Raced`` after rolling back."""
        now = now or utcnow()
        with self.sessions.begin() as session:
            cursor = cursors.lock(session)
            if cursor is None:
                return None, now + dt.timedelta(seconds=0.2)
            if self.loaded is None:
                generation = self.generation
                loaded = load(session)
                self.index = Index(loaded)  # before ``loaded``: ``may_cover`` reads them on another thread
                with self._lock:
                    if generation == self.generation:  # else told of a change while reading: read again next pass
                        self.loaded = loaded
                state.drop_unknown(session, {(i.automation.id, leaf.id) for i in loaded for leaf in i.leaves})
            work = Pass(session, cursor, state.Buckets(session), state.ChildFirings(session, self.index.composites))
            work.holding = state.oldest_hold(session) is not None
            rows, more = self._new_events(session, cursor)
            self.last_batch = self._evaluate(work, rows, now)
            self._held(work, now)
            wake = self._clock(work, now)
            work.buckets.flush()
            work.children.flush()
            if work.after.events:
                events.record_encoded(session, work.after.events, work.after.names)
            reactive = self._reactive()
            if reactive and now >= self.next_sweep:
                self._sweep(session, reactive, now)
                self.next_sweep = now + dt.timedelta(seconds=SWEEP_SECONDS)
            gap_deadline = cursor.expire(cursors.now_epoch())
            if not cursors.save(session, cursor):
                raise Raced()
            # Holds are only made by a pass, under the cursor's lock: none before and none made means none.
            oldest = state.oldest_hold(session) if work.holding else None
        nexts = [wake, self.next_sweep] if reactive else [wake]  # no Reactive trigger: no sweep to wake for
        if gap_deadline is not None:
            nexts.append(dt.datetime.fromtimestamp(gap_deadline, dt.timezone.utc))
        if oldest is not None:
            nexts.append(oldest + FOLLOWS_WAIT)
        if self.last_batch < len(rows) or more:  # more are waiting
            nexts.append(now)
        return work, min(nexts)

    # --- events ---------------------------------------------------------------------------

    def _new_events(self, session: Session, cursor: cursors.Cursor) -> tuple[list[tuple[int, str]], bool]:
        """The next events' seqs and names only (most events, among them the firings' own, name
        no trigger, and reading their labels and payloads would cost more than evaluating), and
        whether more may be waiting after them.

        Read from a bounded range of seqs after the top (``seq <= top + 2 * SCAN`` as well as
        ``LIMIT SCAN``): on a table whose statistics lag its growth (a new or fast-growing
        ``events``, before autovacuum analyses it) PostgreSQL plans the open-ended form as a scan
        of the whole table and a sort, so every pass cost more as the table grew and the backlog
        of a sustained load grew with it (bench/triggers.py --sustained). A range with no event
        (seqs used up by rolled-back inserts) jumps to the next stored one."""
        top = cursor.top
        names = self._range(session, top)
        if not names:
            following = session.scalar(select(func.min(m.Event.seq)).where(m.Event.seq > top))
            names = self._range(session, following - 1) if following is not None else []
        more = len(names) == SCAN or bool(names) and names[-1][0] >= top + SCAN  # a full range: look again
        gaps = cursor.gaps()
        for start in range(0, len(gaps), BATCH):
            names += [(seq, name) for seq, name in session.execute(select(m.Event.seq, m.Event.event).where(
                m.Event.seq.in_(gaps[start:start + BATCH])))]
        return sorted(names), more

    @staticmethod
    def _range(session: Session, after: int) -> list[tuple[int, str]]:
        return [(seq, name) for seq, name in session.execute(select(m.Event.seq, m.Event.event).where(
            m.Event.seq > after, m.Event.seq <= after + 2 * SCAN).order_by(m.Event.seq).limit(SCAN))]

    def _evaluate(self, work: Pass, rows: list[tuple[int, str]], now: dt.datetime) -> int:
        """Evaluates the first of ``rows`` (up to ``BATCH`` that some trigger names); returns how many."""
        named: list[int] = []
        taken = 0
        for seq, name in rows:
            if len(named) == BATCH:
                break
            taken += 1
            work.cursor.add(seq)
            if self.index.candidates(name):
                named.append(seq)
        wanted: list[tuple[int, ev.Seen, list[Candidate]]] = []
        for seq, seen in _read_seen(work.session, named) if named else []:
            covering = self._covering(seen)
            if covering:
                wanted.append((seq, seen, covering))
        if not wanted:
            return taken
        work.buckets.load((c.item.automation.id, c.leaf.id, ev.bucket_key(c.leaf, seen))
                          for _, seen, covering in wanted for c in covering)
        follows = {seen.follows for _, seen, _ in wanted if seen.follows and seen.follows != seen.id}
        known = dict(work.session.execute(select(m.Event.id, m.Event.seq).where(m.Event.id.in_(follows))).all()
                     ) if follows else {}
        waiting = {seq for seq, _, _ in wanted}  # in this batch, not evaluated yet
        for seq, seen, covering in wanted:
            waiting.discard(seq)
            leader = seen.follows
            if (leader is not None and leader != seen.id and (seen.received or now) > now - FOLLOWS_WAIT
                    and (leader not in known or known[leader] in waiting
                         or not work.cursor.is_handled(known[leader]))):
                state.hold(work.session, seq, leader)  # evaluated when its leader is, or after the wait
                work.holding = True
                continue
            self._one(work, seen, covering, now, depth=0)
        return taken

    def _covering(self, seen: ev.Seen) -> list[Candidate]:
        return [c for c in self.index.candidates(seen.event) if ev.matches_resources(c.leaf, seen)]

    def _one(self, work: Pass, seen: ev.Seen, covering: list[Candidate], now: dt.datetime, depth: int) -> None:
        work.evaluated += 1
        for c in covering:
            key = (c.item.automation.id, c.leaf.id, ev.bucket_key(c.leaf, seen))
            bucket, fired = ev.on_event(c.leaf, key[2], work.buckets.get(key), seen, expected=c.expected,
                                        opens=c.opens)
            work.buckets.put(key, bucket)
            for one in fired:
                self._fired(work, c.item, one, now)
        if work.holding and depth < MAX_FOLLOW_DEPTH:
            self._release(work, state.release_followers(work.session, [seen.id]), now, depth + 1)

    def _release(self, work: Pass, seqs: list[int], now: dt.datetime, depth: int) -> None:
        if not seqs:
            return
        for _, seen in sorted(_read_seen(work.session, seqs), key=lambda pair: pair[1].occurred):
            self._one(work, seen, self._covering(seen), now, depth)

    def _held(self, work: Pass, now: dt.datetime) -> None:
        """Followers whose leader never came within the wait: evaluated as if in order."""
        if not work.holding:
            return
        self._release(work, state.release_expired(work.session, now - FOLLOWS_WAIT), now, 0)

    # --- firing ---------------------------------------------------------------------------

    def _fired(self, work: Pass, item: Loaded, fired: ev.Fired, now: dt.datetime) -> None:
        child, labels = fired.trigger_id, fired.labels
        automation_id = item.automation.id
        while child in item.parents:
            parent = item.parents[child]
            stored = work.children.get(automation_id, parent.id)
            kept, fires = ev.compose(parent, stored, ev.ChildFiring(child, uuid.uuid4(), now, fired.event))
            if kept != stored:
                work.children.put(automation_id, parent.id, kept)
            if not fires:
                return
            child, labels = parent.id, {}
        from orchestrator.server.triggers.firing import Firing, record

        work.firings += 1
        record(work.session, Firing(uuid.uuid4(), item.automation, now, labels, fired.event, item.own), work.after)

    # --- the clock ------------------------------------------------------------------------

    def _clock(self, work: Pass, now: dt.datetime) -> dt.datetime:
        """Proactive windows that ended short fire; expired Reactive buckets go. Returns when the
        clock must look again."""
        wake = now + dt.timedelta(hours=1)
        for item in self.loaded or []:
            for leaf in item.leaves:
                if leaf.posture != "Proactive":
                    continue
                pair = (item.automation.id, leaf.id)
                due = self.proactive_due.get(pair, now)
                if due > now:
                    wake = min(wake, due)
                    continue
                current = work.buckets.of_trigger(*pair)
                opened = ev.always_open(leaf, now)
                if opened is not None and "[]" not in current:
                    work.buckets.put((*pair, "[]"), opened)
                    current["[]"] = opened
                left: list[ev.Bucket] = []
                for key, bucket in current.items():
                    after, fired = ev.on_clock(leaf, key, bucket, now)
                    work.buckets.put((*pair, key), after)
                    if after is not None:
                        left.append(after)
                    for one in fired:
                        self._fired(work, item, one, now)
                self.proactive_due[pair] = ev.next_check(leaf, left, now)
                wake = min(wake, self.proactive_due[pair])
        return wake

    def _reactive(self) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """The (automation, trigger) pairs of the Reactive triggers loaded: whose expired buckets
        the sweep drops."""
        return [(i.automation.id, leaf.id) for i in self.loaded or [] for leaf in i.leaves if leaf.posture == "Reactive"]

    def _sweep(self, session: Session, reactive: list[tuple[uuid.UUID, uuid.UUID]], now: dt.datetime) -> None:
        cutoff = now - ev.EXPIRED_BUFFER
        for start in range(0, len(reactive), 500):
            pairs = reactive[start:start + 500]
            session.execute(delete(m.AutomationBucket).where(
                m.AutomationBucket.window_end <= cutoff,
                or_(*[and_(m.AutomationBucket.automation_id == a, m.AutomationBucket.trigger_id == t)
                      for a, t in pairs])).execution_options(synchronize_session=False))
