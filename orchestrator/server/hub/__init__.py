"""The event hub: how the server's services and waiting requests learn that something changed,
on this replica and on every other replica sharing the database.

The contract (``Hub``), the same for both implementations:

* **Publish after commit.** ``publish`` is called once the change it announces is committed
  (``orchestrator.server.db.session.on_commit`` defers it to the commit of a transaction that is still
  open, and drops it on rollback). A change that was rolled back is never announced.
* **Subscribe by topic**, optionally by key (a run's id, a worker). The callback runs on a hub
  thread or the publisher's own; it must be quick and must not block (set an event, wake a
  ``Service``).
* **A wake-up signal, not a message.** An event says "re-read this", never what the new value is:
  the database stays the truth. Each subscriber is called at most once per published event (no
  duplicates, in publish order per publisher), but an event can be lost -- the publishing process
  died between its commit and its publish, or a replica's listening connection dropped. After
  such a gap a cross-replica hub calls every subscriber once with ``RESYNC`` ("anything may have
  changed"); readers also keep a long safety re-read (``Settings.hub_reread_seconds``).

Implementations: ``LocalHub`` (``hub/local.py``, in-process, the embedded default: SQLite means
one server) and ``PostgresHub`` (``hub/postgres.py``, LISTEN/NOTIFY, chosen when the database is
PostgreSQL -- see there why not Redis).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from orchestrator.settings import Settings

log = logging.getLogger("orchestrator.hub")

Event = tuple[str, str]  # (topic, key)
Callback = Callable[[str], None]  # receives the event's key, or RESYNC

RESYNC = "*"  # the key a subscriber receives when events may have been lost
# Readers' re-read when the hub reaches every replica. Kept, long, because one loss is not
# announced: a process that dies between its commit and its publish.
SAFETY_REREAD_SECONDS = 30.0

# Topics, and what their key is.
RUNS = "flow_run"  # a run's state changed; key: the run's id
CANCELLATIONS = "cancellation"  # a worker has a run to cancel; key: worker_key(pool, worker)
DISPATCH = "dispatch"  # key DUE: runs to (re)plan; SLOT_FREED: a run ended, a slot may be free;
# REFUSED: a claim was refused and the run un-published (re-plan soon, not at once: no hot loop)
SCHEDULES = "schedules"  # a schedule or deployment changed: the scheduler re-plans; key ""
EVENTS = "events"  # events were recorded (services/events.py): stream readers re-read, trigger evaluators pass; key: their names, one per line ("" = unknown)
AUTOMATIONS = "automations"  # automations changed (services/automations.py): evaluators re-read; key ""
API_KEYS = "api_keys"  # API keys created or revoked (services/api_keys.py): key caches forget; key ""
BEATS_REFUSED = "beats_refused"  # an API answered a heartbeat with a server error: reapers distrust silence; key ""
DUE, SLOT_FREED, REFUSED = "due", "slot", "refused"


def worker_key(pool: str, worker_name: str) -> str:
    return f"{pool}\t{worker_name}"


class _StateBearer(Protocol):
    id: object
    state_type: str
    worker_name: str | None
    work_pool_name: str | None
    dispatched_at: object


def run_events(run: _StateBearer) -> list[Event]:
    """What a committed state change of ``run`` announces."""
    from orchestrator.states import FINAL_STATES, StateType

    events: list[Event] = [(RUNS, str(run.id))]
    if run.state_type == StateType.CANCELLING and run.worker_name:
        events.append((CANCELLATIONS, worker_key(run.work_pool_name or "", run.worker_name)))
    if run.state_type == StateType.SCHEDULED and run.dispatched_at is None:
        events.append((DISPATCH, DUE))  # a run to publish now or later (one already published needs nothing)
    elif run.state_type in FINAL_STATES:
        events.append((DISPATCH, SLOT_FREED))
    return events


class Subscription:
    """Returned by ``Hub.subscribe``; ``close()`` (or leaving the ``with`` block) unsubscribes."""

    def __init__(self, hub: Hub, topic: str, key: str | None, callback: Callback) -> None:
        self.hub, self.topic, self.key, self.callback = hub, topic, key, callback

    def close(self) -> None:
        self.hub._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Hub:
    """The contract (module docstring). Subclasses implement ``_send``: carry events to the other
    replicas. The subscriber table and local delivery are shared."""

    cross_replica = False  # whether a publish on another replica reaches this one's subscribers

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # topic -> key (None: every key) -> subscriptions; a state change is one dict lookup
        # however many requests wait on other runs. Copy on write: delivery reads without the lock.
        self._subs: dict[str, dict[str | None, tuple[Subscription, ...]]] = {}

    def publish(self, *events: Event) -> None:
        """Announce committed changes to every subscriber on every replica. Never raises: a signal
        that cannot be sent is logged and lost (readers re-read)."""
        if not events:
            return
        self._deliver(events)
        try:
            self._send(events)
        except Exception as error:  # noqa: BLE001 -- a lost signal is allowed; a failed request is not
            log.warning("event hub: could not announce %s to other replicas: %s", events, error)

    def subscribe(self, topic: str, callback: Callback, key: str | None = None) -> Subscription:
        """Call ``callback(key)`` for each event on ``topic`` (only those with ``key``, if given),
        and ``callback(RESYNC)`` after events may have been lost."""
        sub = Subscription(self, topic, key, callback)
        with self._lock:
            by_key = dict(self._subs.get(topic, {}))
            by_key[key] = (*by_key.get(key, ()), sub)
            self._subs[topic] = by_key
        return sub

    def subscriber_count(self, topic: str, key: str | None = None) -> int:
        """How many subscriptions listen to ``topic`` (to ``key`` among them, if given): lets a
        test or a metric see that a waiter is waiting."""
        by_key = self._subs.get(topic, {})
        return sum(len(subs) for k, subs in by_key.items() if key is None or k == key)

    def start(self) -> None:
        """Begin receiving other replicas' events (a no-op for ``LocalHub``)."""

    def close(self) -> None:
        """Stop receiving; later publishes only reach this replica. Idempotent."""

    # --- for implementations -----------------------------------------------------------------

    def _send(self, events: tuple[Event, ...]) -> None:
        """Carry ``events`` to the other replicas (they are already delivered here)."""

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            by_key = dict(self._subs.get(sub.topic, {}))
            left = tuple(s for s in by_key.get(sub.key, ()) if s is not sub)
            if left:
                by_key[sub.key] = left
            else:
                by_key.pop(sub.key, None)
            self._subs[sub.topic] = by_key

    def _deliver(self, events: Iterable[Event]) -> None:
        for topic, key in events:
            by_key = self._subs.get(topic)
            if not by_key:
                continue
            if key == RESYNC:
                subs: tuple[Subscription, ...] = tuple(s for group in by_key.values() for s in group)
            else:
                subs = by_key.get(None, ()) + by_key.get(key, ())
            for sub in subs:
                _call(sub, key)

    def _resync(self) -> None:
        for by_key in list(self._subs.values()):
            for group in by_key.values():
                for sub in group:
                    _call(sub, RESYNC)


def _call(sub: Subscription, key: str) -> None:
    try:
        sub.callback(key)
    except Exception:  # one broken subscriber must not starve the others
        log.exception("event hub subscriber of %s failed", sub.topic)


def reread_seconds(hub: Hub, settings: Settings, local: float) -> float:
    """How often a reader re-reads the database: the setting if set; else ``SAFETY_REREAD_SECONDS``
    when the hub reaches every replica, ``local`` (short: another server on the same SQLite file
    is seen no other way) when it does not."""
    if settings.hub_reread_seconds is not None:
        return settings.hub_reread_seconds
    return SAFETY_REREAD_SECONDS if hub.cross_replica else local


def hub_for(settings: Settings) -> Hub:
    """The hub a server uses: PostgreSQL's LISTEN/NOTIFY when the database is PostgreSQL (several
    replicas may share it), else the in-process one."""
    url = settings.resolved_database_url
    if url.startswith("postgresql"):
        from orchestrator.server.hub.postgres import PostgresHub

        return PostgresHub(url)
    from orchestrator.server.hub.local import LocalHub

    return LocalHub()


__all__ = ["Hub", "Subscription", "Event", "RESYNC", "BEATS_REFUSED", "RUNS", "CANCELLATIONS", "DISPATCH", "SCHEDULES", "DUE",
           "SLOT_FREED", "REFUSED", "EVENTS", "API_KEYS", "worker_key", "run_events", "hub_for", "reread_seconds", "SAFETY_REREAD_SECONDS"]
