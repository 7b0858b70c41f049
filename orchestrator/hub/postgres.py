"""The cross-replica hub: PostgreSQL LISTEN/NOTIFY on one channel of the server's own database.

Why PostgreSQL and not Redis pub/sub: every replica already shares the database, which is the
truth the events point at, so the hub needs no extra service and no extra failure mode (a server
may run with the embedded broker, and a Redis outage would otherwise also silence the hub);
NOTIFY is ordered per sender and delivered only by a database every replica can already reach.
Its limits do not bite here: payloads under 8000 bytes (ours are a few ids), and a listener that
reconnects misses what was sent meanwhile -- which the contract allows (``RESYNC``).

Events are sent after commit from one autocommit connection of the hub's own (no pool checkout
on the request path), as one NOTIFY per ``publish`` call; the listener, on a second connection,
skips its own hub's events, which ``Hub.publish`` already delivered here without the round trip.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any

from orchestrator.hub import Event, Hub

log = logging.getLogger("orchestrator.hub")

CHANNEL = "orchestrator_hub"
MAX_PAYLOAD = 7900  # PostgreSQL's limit is 8000 bytes
LISTEN_TIMEOUT = 5.0  # the listener re-checks for close() this often if the close signal is lost
START_TIMEOUT = 10.0


def conninfo(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresHub(Hub):
    cross_replica = True

    def __init__(self, url: str) -> None:
        super().__init__()
        self._conninfo = conninfo(url)
        self._origin = uuid.uuid4().hex
        self._send_lock = threading.Lock()
        self._sender: Any = None  # psycopg.Connection, opened on first use
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
        try:
            self._notify([self._origin, "close"])  # wakes our listener at once
        except Exception:  # noqa: BLE001 -- the database is gone: the listener's timeout ends it
            pass
        if self._thread is not None:
            self._thread.join(LISTEN_TIMEOUT + 1)
        with self._send_lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None

    def _send(self, events: tuple[Event, ...]) -> None:
        if self._closing.is_set():
            return
        batch: list[Event] = []
        for event in events:
            if batch and len(json.dumps([self._origin, [*batch, event]]).encode()) > MAX_PAYLOAD:
                self._notify([self._origin, batch])
                batch = []
            batch.append(event)
        self._notify([self._origin, batch])

    def _notify(self, message: list[Any]) -> None:
        import psycopg

        payload = json.dumps(message)
        with self._send_lock:
            for attempt in (1, 2):  # once more on a fresh connection: the database may have restarted
                try:
                    if self._sender is None:
                        self._sender = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)
                    self._sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
                    return
                except psycopg.OperationalError:
                    if self._sender is not None:
                        self._sender.close()
                    self._sender = None
                    if attempt == 2:
                        raise

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
        try:
            origin, events = json.loads(payload)
        except ValueError:
            log.warning("event hub: ignored a malformed notification %r", payload[:200])
            return
        if origin == self._origin or not isinstance(events, list):
            return  # ours (delivered here when published), or our close signal
        self._deliver((str(topic), str(key)) for topic, key in events)


__all__ = ["PostgresHub", "CHANNEL"]
