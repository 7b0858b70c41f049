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
"""

from __future__ import annotations

import json
import logging
import queue
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


def conninfo(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresHub(Hub):
    cross_replica = True

    def __init__(self, url: str, *, notify_interval: float = NOTIFY_INTERVAL) -> None:
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
        if self._closing.is_set():
            return
        self._ensure_sender()
        self._outbox.put(events)

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
                payloads = self._payloads(batch) + ([f"{self._origin} close"] if last else [])
                sent_at = time.monotonic()
                try:
                    connection = self._notify(connection, payloads)
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

    def _notify(self, connection: Any, payloads: list[str]) -> Any:
        """Send ``payloads``; returns the connection to use next time."""
        import psycopg

        for attempt in (1, 2):  # once more on a fresh connection: the database may have restarted
            try:
                if connection is None:
                    connection = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)
                for payload in payloads:
                    connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
                return connection
            except psycopg.OperationalError:
                if connection is not None:
                    connection.close()
                connection = None
                if attempt == 2:
                    raise
        return connection

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
                    connection.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    failures = 0
                    if connected_before:
                        self._resync()  # events sent while we were not listening are lost
                    connected_before = True
                    while not self._closing.is_set():
                        for note in connection.notifies(timeout=LISTEN_TIMEOUT):
                            self._received(note.payload)
                            if self._closing.is_set():
                                return
            except psycopg.Error as error:
                self.listening.clear()
                if self._closing.is_set():
                    return
                failures += 1
                log.warning("event hub: listening connection lost, reconnecting: %s", error)
                self._closing.wait(min(5.0, 0.2 * 2 ** failures))

    def _received(self, payload: str) -> None:
        origin, _, body = payload.partition(" ")
        if origin == self._origin or body == "close":
            return  # ours (delivered here when published), or a hub's close signal (ours or another replica's)
        try:
            events = json.loads(body)
            self._deliver([(str(topic), str(key)) for topic, key in events])
        except (ValueError, TypeError):
            log.warning("event hub: ignored a malformed notification %r", payload[:200])


__all__ = ["PostgresHub", "CHANNEL"]
