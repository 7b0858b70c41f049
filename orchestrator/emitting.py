"""Sending events to the API from any process (a flow run, a script, a worker) without making the
caller wait: ``EventEmitter.put`` queues an event in memory and returns; one thread sends what is
queued in batches (``POST /api/events``), keeps a batch the API could not take (unreachable, 503)
and sends it again with back-off, and ``flush`` waits, bounded, until what was queued is sent.

Why not ``shipping.BatchShipper`` (the log and task-run shippers): it wakes every 0.5 s for the
life of the process and gives up a batch it could not send, where events must linger only ~50 ms,
cost nothing while none are emitted, and outlast an API restart.

Delivery is at least once: event ids are chosen by the client, so a batch sent again after an
answer was lost is stored once (the server drops ids it already has).

Memory is bounded: beyond ``MAX_BUFFERED`` events waiting for an API that is down, the oldest are
dropped, with a warning. Not spilled to a file: a file left by a process that has ended has no one
to send it, and writing it would put disk I/O and a replay protocol into a path that must stay
cheap; an outage long enough to fill the buffer is one where the newest events (what the automations
reacting to them need now) are worth more than the oldest.

Standard library only at import (and the client's transport): every flow-run process may load it.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orchestrator.errors import InvalidInput, NotFound, NotTheApi, Unauthorized

if TYPE_CHECKING:
    from orchestrator.client import Client

log = logging.getLogger("orchestrator.events")

MAX_BATCH = 1000  # events per POST at most (the API's bound): a backlog drains in large batches
FULL_BATCH = 100  # a batch this large is sent without waiting for more
LINGER_SECONDS = 0.05  # how long the first queued event waits for others to share its POST
MAX_BUFFERED = 10_000  # events kept while the API cannot take them; beyond, the oldest are dropped
BACKOFF_FIRST_SECONDS = 0.1  # after a failed send, doubling ...
BACKOFF_MAX_SECONDS = 2.0  # ... up to this (as the client's own retries)
EXIT_FLUSH_SECONDS = 10.0  # how long the interpreter's exit waits for queued events to be sent

# Answers that sending the same batch again cannot change: the events are dropped with a warning.
_REFUSED = (InvalidInput, Unauthorized, NotTheApi, NotFound)


class EventEmitter:
    """One queue of events and the thread that sends it. ``client_factory`` is called once, on
    that thread (reading the settings costs the caller nothing); its client should not retry by
    itself (``retry_seconds=0``, the default): the emitter keeps the batch and backs off instead,
    so a flush's bound holds."""

    def __init__(self, client_factory: Callable[[], Client], *, thread_name: str = "event-emitter",
                 max_batch: int = MAX_BATCH, linger_seconds: float = LINGER_SECONDS,
                 max_buffered: int = MAX_BUFFERED) -> None:
        self._client_factory = client_factory
        self._client: Client | None = None
        self._thread_name = thread_name
        self.max_batch = max_batch
        self.linger_seconds = linger_seconds
        self.max_buffered = max_buffered
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # the queue grew, or a flush or close waits
        self._settled_changed = threading.Condition(self._lock)  # events were sent, refused or dropped
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._in_flight = 0
        self._accepted = 0  # events ever put
        self._settled = 0  # events ever sent, refused or dropped: a flush waits for it to catch up
        self._hurry = 0  # flushes waiting: no lingering
        self._now = False  # ``send_now``: the queued events go without lingering, nobody waits
        self._closing = False
        self._disabled: str | None = None  # why events can never be sent from here (no client)
        self._thread: threading.Thread | None = None
        self._outage = False
        self.sent = 0
        self.refused = 0
        self.dropped = 0

    # --- the caller's side: never waits on the network ----------------------------------------------

    def put(self, event: dict[str, Any]) -> None:
        """Queue one event (``EventIn`` as JSON, validated by the caller) and return at once."""
        with self._lock:
            self._accepted += 1
            if self._disabled is not None:
                self._settled += 1
                self.dropped += 1
                return
            self._queue.append(event)
            if len(self._queue) + self._in_flight > self.max_buffered:
                self._drop_oldest()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
                self._thread.start()
            elif len(self._queue) == 1 or len(self._queue) >= self.max_batch:
                self._changed.notify()

    @property
    def pending(self) -> int:
        """Events queued or being sent."""
        with self._lock:
            return self._accepted - self._settled

    def flush(self, timeout: float) -> bool:
        """Wait until every event queued before this call is sent (or refused, or dropped), at most
        ``timeout`` seconds; True if none is left waiting."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._accepted
            self._hurry += 1
            self._changed.notify_all()
            try:
                while self._settled < target:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._thread is None:
                        return False
                    self._settled_changed.wait(left)
                return True
            finally:
                self._hurry -= 1

    def send_now(self) -> None:
        """Send what is queued without lingering for more, and without waiting for it to be sent
        (a worker whose last run has just ended: its events go while nothing of its own runs)."""
        with self._lock:
            if self._queue:
                self._now = True
                self._changed.notify_all()

    def close(self, timeout: float) -> bool:
        """Send what is queued (at most ``timeout`` seconds), then stop the thread and close the
        client's connections."""
        done = self.flush(timeout)
        with self._lock:
            self._closing = True
            self._changed.notify_all()
            left = self._accepted - self._settled
        if self._client is not None:
            self._client.close()
        if not done:
            log.warning("%d events could not be sent to the API within %g s and are lost", left, timeout)
        return done

    def _abandon(self) -> None:
        """In a forked child: these events are the parent's to send; settle them here, at once."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._settled_changed = threading.Condition(self._lock)
        self._queue.clear()
        self._in_flight = 0
        self._settled = self._accepted
        self._closing = True
        self._disabled = "forked: the parent process sends these"

    # --- the sending thread ----------------------------------------------------------------------

    def _drop_oldest(self) -> None:  # under the lock
        self._queue.popleft()
        self._settled += 1
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("%d events wait for the API (the most kept): dropping the oldest; %d dropped so far",
                        self.max_buffered, self.dropped)
        self._settled_changed.notify_all()

    def _next_batch(self) -> list[dict[str, Any]] | None:
        """Wait for events, let a batch fill for ``linger_seconds`` (unless a flush waits), take it.
        None once closed with nothing left."""
        with self._lock:
            while not self._queue and not self._closing:
                self._changed.wait()
            if not self._queue:
                return None
            deadline = time.monotonic() + self.linger_seconds
            while (len(self._queue) < min(FULL_BATCH, self.max_batch) and not self._hurry and not self._now
                   and not self._closing):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            self._now = False
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.max_batch))]
            self._in_flight = len(batch)
            return batch

    def _run(self) -> None:
        delay = BACKOFF_FIRST_SECONDS
        while (batch := self._next_batch()) is not None:
            left = self._deliver(batch)
            with self._lock:
                self._in_flight = 0
                self._settled += len(batch) - len(left)
                self._settled_changed.notify_all()
                if not left:
                    delay = BACKOFF_FIRST_SECONDS
                    continue
                self._queue.extendleft(reversed(left))  # first in line again, in their order
                while len(self._queue) > self.max_buffered:
                    self._drop_oldest()
                if self._disabled is not None:
                    self._settled += len(self._queue)
                    self.dropped += len(self._queue)
                    self._queue.clear()
                    self._settled_changed.notify_all()
                    continue
                until = time.monotonic() + delay
                while (wait := until - time.monotonic()) > 0:
                    self._changed.wait(wait)
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)

    def _deliver(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send ``batch``; return what must be sent again (all of it after an outage, else none)."""
        try:
            if self._client is None:
                self._client = self._client_factory()
            self._client.emit_events(batch)
        except _REFUSED as error:
            if isinstance(error, InvalidInput) and len(batch) > 1:
                # A batch is stored whole or not at all: one event this API refuses (an older server's
                # rules) must not cost the others. Find it by sending them one at a time.
                for index, event in enumerate(batch):
                    if self._deliver([event]):
                        return batch[index:]
                return []
            self.refused += len(batch)
            log.warning("the API refused %d event(s), dropped: %s", len(batch), error)
            return []
        except Exception as error:  # noqa: BLE001 - unreachable, 503, a timeout, a 500: keep them, try again
            if self._client is None:  # no client can be made (a bad ORCH_API_URL): nothing will ever go
                with self._lock:
                    self._disabled = f"{type(error).__name__}: {error}"
                log.error("events cannot be sent (%s); they are dropped", self._disabled)
                return batch
            if not self._outage:
                self._outage = True
                log.warning("could not send %d event(s), kept and retried: %s", len(batch), error)
            return batch
        if self._outage:
            self._outage = False
            log.info("events are being sent again")
        self.sent += len(batch)
        return []


# --- the process's emitter (``emit_event``) ----------------------------------------------------------

_default: EventEmitter | None = None
_default_lock = threading.Lock()


def _client_from_environment() -> Client:
    """The API client of this process's settings. Workers give a flow-run process its connection in
    the environment: the common path skips pydantic-settings (~0.1 s), as the engine does."""
    from orchestrator.client import Client

    if "ORCH_API_URL" in os.environ and "ORCH_CLIENT_TIMEOUT_SECONDS" in os.environ:
        return Client(os.environ["ORCH_API_URL"], api_key=os.environ.get("ORCH_API_KEY") or None,
                      timeout=float(os.environ["ORCH_CLIENT_TIMEOUT_SECONDS"]))
    from orchestrator.settings import Settings

    return Client.from_settings(Settings())


def default_emitter() -> EventEmitter:
    """This process's emitter, made on first use; the interpreter's exit waits (bounded) for it."""
    global _default
    emitter = _default
    if emitter is None:
        with _default_lock:
            if _default is None:
                _default = EventEmitter(_client_from_environment)
                atexit.register(_default.close, EXIT_FLUSH_SECONDS)
            emitter = _default
    return emitter


def flush_events(timeout: float) -> bool:
    """Wait (at most ``timeout`` s) until the events this process emitted so far are sent."""
    emitter = _default
    return True if emitter is None else emitter.flush(timeout)


def _forget_in_child() -> None:
    # A forked child has the parent's queue but not its thread: the parent sends those events; the
    # child starts an emitter of its own when it emits, and its exit does not wait for the parent's.
    global _default, _default_lock
    _default_lock = threading.Lock()  # another thread may have held it at the fork
    if _default is not None:
        _default._abandon()
    _default = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
