"""The cross-replica hub: PostgreSQL LISTEN/NOTIFY on one channel of the server's own database.

Why PostgreSQL and not Redis pub/sub: every replica already shares the database, which is the
truth the events point at, so the hub needs no extra service and no extra failure mode (a server
may run with the embedded broker, and a Redis outage would otherwise also silence the hub);
NOTIFY is ordered per sender and delivered only by a database every replica can already reach.
Its limits do not bite here: payloads under 8000 bytes (ours are a few ids), and a listener that
reconnects misses what was sent meanwhile -- which the contract allows (``RESYNC``).

``publish`` delivers to this replica's subscribers at once and queues the events for the hub's
sender thread, which NOTIFYs whatever has queued up, as few notifications as fit, from one
autocommit connection of its own: a request never waits for a round trip to the database, and
under load one NOTIFY carries many events (measured: a synchronous NOTIFY per state change cost
the create-run API about a tenth of its rate). The listener, on a second connection, skips its
own hub's notifications (already delivered here) by their prefix, without parsing them.

The sender NOTIFYs at most once per ``NOTIFY_INTERVAL``: events published when the last NOTIFY is
older go out at once; those published sooner wait for the interval's end, with whatever else is
published meanwhile, in one notification. Each NOTIFY is a round trip and a statement of the
sender's, a wake-up of every replica's listener (ours too, which drops it) and PostgreSQL's work for
each: ~0.15 ms of the server's CPU and more of the database's, which one client creating runs one
after the other (~1.3 ms apart) paid per create (bench/RESULTS.md, issue 22). Under such load the
other replicas hear of a change up to that much later; this replica's subscribers, at once as ever.
(Sending the NOTIFY in the writing transaction's own statement instead was measured and dropped:
PostgreSQL holds its cluster-wide notify lock through that commit's WAL flush.)

A replica alone sends none: a NOTIFY only its own listener hears (and drops) is work for nothing --
the sender's statement, the database's queue, a wake of the listener and of its backend: ~0.1-0.2
ms of CPU a create for one server creating runs (bench/RESULTS.md, issue 22). So the sender sends
while another replica may listen: it asks the database (``pg_stat_activity``: another session of
this database whose statement is our ``LISTEN`` -- an older replica's too --, or one whose statement
this role may not see, or whose activity is not tracked) at most once per ``PEERS_CHECK`` while it
has something to send, and it knows at once of a replica whose notification its listener hears.
A replica that starts listening (or listens again) asks the same question in its ``LISTEN``'s own
statement; when others listen it says hello (``(HUB, "")``) and its ``start`` waits until each of
them answered (``(HUB, <its origin>)``: sent once the answering replica knows it, so what the
answering replica publishes after the answer is sent to it); then it is listening. Older replicas
answer nothing (and never skip a NOTIFY), nor do sessions it cannot see: after ``HELLO_TIMEOUT``
it listens all the same, and wakes its subscribers once (``RESYNC``) two ``PEERS_CHECK`` later,
when every replica has asked the database again. Older replicas read both signals as events of a
topic nobody subscribes to. A hub's close signal to its own listener is always sent.
"""

from __future__ import annotations

import json
import logging
import queue
import select
import threading
import time
import uuid
from typing import Any

from orchestrator.server.hub import Event, Hub

log = logging.getLogger("orchestrator.hub")

CHANNEL = "orchestrator_hub"
MAX_PAYLOAD = 7900  # PostgreSQL's limit is 8000 bytes
LISTEN_TIMEOUT = 5.0  # the listener re-checks for close() this often if the close signal is lost
START_TIMEOUT = 10.0
NOTIFY_INTERVAL = 0.005  # seconds: at most one NOTIFY per interval (module docstring)
PEERS_CHECK = 1.0  # seconds: how long a sender trusts what it found of other listeners (module docstring)
HELLO_TIMEOUT = 1.0  # seconds: how long a starting listener waits for the others' answers
HUB = "hub"  # the hub's own signals' topic: key "" says hello, key <origin> answers that origin's hello
LISTEN = f"LISTEN {CHANNEL}"  # the listener's statement: what another replica's check looks for
# Other sessions of this database that may be listening: a listener (its statement: LISTEN, or LISTEN and
# this count), a session whose statement this role may not see, one whose activity is not tracked.
_OTHERS = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
           f"AND (query = '{LISTEN}' OR query LIKE '{LISTEN}; SELECT%%' OR query = '<insufficient privilege>' "
           "OR state = 'disabled')")
OTHER_LISTENERS = _OTHERS + " AND pid <> %s"  # the sender's: not its own hub's listener
LISTEN_AND_COUNT = f"{LISTEN}; {_OTHERS.replace('%%', '%')}"  # the listener's one statement (simple protocol)


def conninfo(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresHub(Hub):
    cross_replica = True

    def __init__(self, url: str, *, notify_interval: float = NOTIFY_INTERVAL, peers_check: float = PEERS_CHECK,
                 hello_timeout: float = HELLO_TIMEOUT) -> None:
        super().__init__()
        self._conninfo = conninfo(url)
        self._notify_interval = notify_interval
        self._origin = uuid.uuid4().hex  # the prefix of every notification this hub sends
        self._outbox: queue.SimpleQueue[tuple[Event, ...] | None] = queue.SimpleQueue()
        self._sender_lock = threading.Lock()
        self._sender: threading.Thread | None = None
        self._closing = threading.Event()
        self.listening = threading.Event()  # set while LISTEN is active (tests wait on it)
        self._thread: threading.Thread | None = None
        # What this hub knows of other replicas' listeners (module docstring); monotonic times.
        self._peers_check, self._hello_timeout = peers_check, hello_timeout
        self._listener_pid = 0  # our listener's backend
        self._heard_at = -float("inf")  # a notification of another replica's was last received
        self._checked_at = -float("inf")  # the sender last asked the database
        self._others = True  # what it found
        self._signals: list[Event] = []  # the hub's own signals for the sender to send (hello, answers)
        self._answered: set[str] = set()  # replicas that answered our hello
        self.notified = 0  # notifications sent for events (neither the hub's signals nor its close): tests read it

    def start(self) -> None:
        self._thread = threading.Thread(target=self._listen, name="hub-listener", daemon=True)
        self._thread.start()
        # Bounded: a database that is down at start is the server's problem to report, not ours.
        self.listening.wait(START_TIMEOUT)

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        sender = self._ensure_sender()
        self._outbox.put(None)  # sends what is queued, then our listener's close signal
        sender.join(LISTEN_TIMEOUT)
        if self._thread is not None:
            self._thread.join(LISTEN_TIMEOUT + 1)

    def _send(self, events: tuple[Event, ...]) -> None:
        if self._closing.is_set() or self.alone():
            return
        self._ensure_sender()
        self._outbox.put(events)

    def alone(self) -> bool:
        """The sender found lately that no other replica listens, and none was heard since: nothing
        to queue, not even a wake of the sender (tests read it too)."""
        now = time.monotonic()
        return (not self._others and now - self._checked_at < self._peers_check
                and now - self._heard_at >= self._peers_check)

    def _signal(self, event: Event) -> None:
        """Have the sender send one of the hub's own signals (``HUB``), whoever listens."""
        with self._sender_lock:
            self._signals.append(event)
        self._ensure_sender()
        self._outbox.put(())

    def _ensure_sender(self) -> threading.Thread:
        with self._sender_lock:
            if self._sender is None:  # started on first use: a hub that never publishes needs none
                self._sender = threading.Thread(target=self._send_forever, name="hub-sender", daemon=True)
                self._sender.start()
            return self._sender

    def _send_forever(self) -> None:
        connection: Any = None
        sent_at = -self._notify_interval  # time.monotonic() of the last NOTIFY
        try:
            while True:
                first = self._outbox.get()
                # Within the interval of the last NOTIFY: the rest of it first, taking what is
                # published meanwhile along. close() cuts it short.
                self._closing.wait(sent_at + self._notify_interval - time.monotonic())
                batch, last = ([] if first is None else list(first)), first is None
                while not last:
                    try:
                        more = self._outbox.get_nowait()
                    except queue.Empty:
                        break
                    last = more is None
                    batch.extend(more or ())
                with self._sender_lock:
                    signals, self._signals = self._signals, []
                sent_at = time.monotonic()
                try:
                    connection = self._notify(connection, batch, signals, last)
                except Exception as error:  # noqa: BLE001 -- a lost signal is allowed (readers re-read)
                    log.warning("event hub: could not announce %d events to other replicas: %s", len(batch), error)
                    connection = None
                if last:
                    return
        finally:
            if connection is not None:
                connection.close()

    def _payloads(self, events: list[Event]) -> list[str]:
        """As few notifications as carry ``events`` within PostgreSQL's payload limit."""
        payloads: list[str] = []
        batch: list[Event] = []
        size = 0
        for event in events:
            cost = len(json.dumps(event).encode()) + 2
            if batch and size + cost > MAX_PAYLOAD:
                payloads.append(f"{self._origin} {json.dumps(batch)}")
                batch, size = [], 0
            batch.append(event)
            size += cost
        if batch:
            payloads.append(f"{self._origin} {json.dumps(batch)}")
        return payloads

    def _notify(self, connection: Any, batch: list[Event], signals: list[Event], last: bool) -> Any:
        """Send ``batch`` if another replica may listen, ``signals`` (the hub's own), the close
        signal if ``last``; returns the connection to use next time."""
        import psycopg

        if not (batch or signals or last):
            return connection
        for attempt in (1, 2):  # once more on a fresh connection: the database may have restarted
            try:
                if connection is None:
                    connection = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)
                events = self._payloads(batch) if batch and self._others_listen(connection) else []
                for payload in self._payloads(signals) + events + ([f"{self._origin} close"] if last else []):
                    connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
                self.notified += len(events)
                return connection
            except psycopg.OperationalError:
                if connection is not None:
                    connection.close()
                connection = None
                if attempt == 2:
                    raise
        return connection

    def _others_listen(self, connection: Any) -> bool:
        """Whether another replica may listen: heard from lately, or found by asking the database
        (at most once per ``PEERS_CHECK``)."""
        now = time.monotonic()
        if now - self._heard_at < self._peers_check:
            return True
        if now - self._checked_at >= self._peers_check:
            self._checked_at = now  # before asking: a listener that starts meanwhile is found next time
            self._others = bool(connection.execute(OTHER_LISTENERS, (self._listener_pid,)).fetchone()[0])
        return self._others

    def _listen(self) -> None:
        import psycopg

        try:
            self._listen_until_closed(psycopg)
        finally:
            self.listening.clear()

    def _listen_until_closed(self, psycopg: Any) -> None:
        failures = 0
        connected_before = False
        while not self._closing.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10) as connection:
                    # One statement, so that another replica's check sees it as a listener's.
                    cursor = connection.execute(LISTEN_AND_COUNT)
                    cursor.nextset()  # the count's result, after the LISTEN's
                    others = cursor.fetchone()[0]
                    self._listener_pid = connection.info.backend_pid
                    answered = self._greet(connection, others)
                    self.listening.set()
                    failures = 0
                    if connected_before:
                        self._resync()  # events sent while we were not listening are lost
                    connected_before = True
                    resync_at = None if answered else time.monotonic() + 2 * self._peers_check
                    while not self._closing.is_set():
                        wait = LISTEN_TIMEOUT if resync_at is None else max(0.0, resync_at - time.monotonic())
                        for note in _notes(connection, min(wait, LISTEN_TIMEOUT)):
                            self._received(note.payload)
                            if self._closing.is_set():
                                return
                        if resync_at is not None and time.monotonic() >= resync_at:
                            resync_at = None
                            self._resync()  # a replica that did not answer may have skipped a NOTIFY to us
            except psycopg.Error as error:
                self.listening.clear()
                if self._closing.is_set():
                    return
                failures += 1
                log.warning("event hub: listening connection lost, reconnecting: %s", error)
                self._closing.wait(min(5.0, 0.2 * 2 ** failures))

    def _greet(self, connection: Any, others: int) -> bool:
        """Say hello to the ``others`` listening (if any) and wait for their answers (at most
        ``HELLO_TIMEOUT``); whether every one answered."""
        if not others or self._closing.is_set():
            return True
        self._answered = set()
        self._signal((HUB, ""))
        deadline = time.monotonic() + self._hello_timeout
        while len(self._answered) < others and not self._closing.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for note in _notes(connection, left):
                self._received(note.payload)
                if len(self._answered) >= others or self._closing.is_set():
                    break
        return len(self._answered) >= others

    def _received(self, payload: str) -> None:
        origin, _, body = payload.partition(" ")
        if origin == self._origin or body == "close":
            return  # ours (delivered here when published), or a hub's close signal (ours or another replica's)
        self._heard_at = time.monotonic()  # another replica listens: ours are sent (before any answer below)
        try:
            events = [(str(topic), str(key)) for topic, key in json.loads(body)]
        except (ValueError, TypeError):
            log.warning("event hub: ignored a malformed notification %r", payload[:200])
            return
        if any(topic == HUB for topic, _ in events):
            for _, key in (e for e in events if e[0] == HUB):
                if key == "":
                    self._signal((HUB, origin))  # a hello: answered once ours to it will be sent
                elif key == self._origin:
                    self._answered.add(origin)
            events = [e for e in events if e[0] != HUB]
        self._deliver(events)


def _notes(connection: Any, timeout: float) -> list[Any]:
    """The notifications received within ``timeout`` seconds: those already read first, then
    those that arrive, waiting for the socket to become readable in one blocking call.
    ``connection.notifies(timeout=...)`` waits in steps of 0.1 s (psycopg's ``_WAIT_INTERVAL``,
    so that a Ctrl-C is noticed): ten wake-ups a second of an idle listener, ~0.75 ms of the
    server's CPU a second for nothing (bench/RESULTS.md, issue 22, "The server's CPU outside its
    routes"). ``timeout=0`` reads without waiting."""
    notes = list(connection.notifies(timeout=0))
    if notes or timeout <= 0:
        return notes
    readable, _, _ = select.select([connection.fileno()], [], [], timeout)
    return list(connection.notifies(timeout=0)) if readable else []


__all__ = ["PostgresHub", "CHANNEL"]
