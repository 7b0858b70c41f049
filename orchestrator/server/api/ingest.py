"""Group commit for ``POST /api/events``: the batches of concurrent requests share one transaction.

Most clients send few events at a time (a worker's infrastructure events, ``orch event emit``, an
SDK flushing what a flow just emitted), and a transaction per request cost more than the events:
its commit (a WAL flush), a hub publication (a NOTIFY every replica hears) and a wake of the trigger
evaluators, plus a trip through the thread pool (bench/RESULTS.md, "Events ingest: where the time
goes"). So a request hands its validated batch to the writer threads and awaits the answer; a free
writer takes every batch waiting, stores them in one transaction (``events.record_batches``),
commits, and only then answers each request: a 2xx still means the events are committed. While the
writers are busy the next batches queue up, so a group grows with the load, and a lone request is
written at once (no timer, no added latency). Two writers: one group commits (a WAL flush, a few
milliseconds) while the next is written; one writer put every request's database work behind one
backend, more made the groups smaller.

Each batch stays whole or absent: when a group's transaction fails, its batches are written again
one by one, so that a batch the database refuses fails alone, with its own error.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import ServiceUnavailable
from orchestrator.schemas.events import EventIn
from orchestrator.server.services import events

# Events in one group's statement at most (a batch is never split): bounds a transaction's size
# and the wait of the requests that came last.
MAX_GROUP_EVENTS = 5000
WRITERS = 2  # groups in flight: one commits while the next is written


@dataclass
class _Batch:
    events: Sequence[EventIn]
    settle: Callable[[int | BaseException], None]  # the request's answer: events new, or the error


class EventWriter:
    """The writer threads (started on first use) and their queue."""

    def __init__(self, sessions: sessionmaker[Session], writers: int = WRITERS) -> None:
        self._sessions = sessions
        self._writers = writers
        self._ready = threading.Condition()
        self._queue: deque[_Batch] = deque()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.groups = 0  # transactions committed (tests read it)

    async def write(self, batch: Sequence[EventIn]) -> int:
        """Store ``batch`` (whole or not at all); returns how many of its events were new, once
        committed. Raises what storing it raised."""
        if not batch:
            return 0
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[int] = loop.create_future()

        def settle(result: int | BaseException) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, answer, result)

        with self._ready:
            if self._closed:
                raise ServiceUnavailable("the server is stopping; send the events again")
            if not self._threads:
                self._threads = [threading.Thread(target=self._run, name=f"event-writer-{n}", daemon=True)
                                 for n in range(self._writers)]
                for thread in self._threads:
                    thread.start()
            self._queue.append(_Batch(batch, settle))
            self._ready.notify()
        # A request cancelled meanwhile (its client went away) leaves its batch to be written; the
        # client, unanswered, sends it again and the ids drop the copy.
        return await answer

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the threads. Later ``write`` calls get a 503."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
            threads = self._threads
        for thread in threads:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if not self._queue:
                    return  # closed, and everything queued is written
                group = [self._queue.popleft()]
                size = len(group[0].events)
                while self._queue and size + len(self._queue[0].events) <= MAX_GROUP_EVENTS:
                    size += len(self._queue[0].events)
                    group.append(self._queue.popleft())
            self._write(group)

    def _write(self, group: list[_Batch]) -> None:
        try:
            with self._sessions.begin() as session:
                counts = events.record_batches(session, [batch.events for batch in group])
        except Exception as error:  # noqa: BLE001 -- answered to the request(s), which the handlers map
            if len(group) == 1:
                group[0].settle(error)
            else:
                for batch in group:
                    self._write([batch])
            return
        with self._ready:
            self.groups += 1
        for batch, count in zip(group, counts, strict=True):
            batch.settle(count)


def _settle(answer: asyncio.Future[int], result: int | BaseException) -> None:
    if answer.done():  # the request was cancelled
        return
    if isinstance(result, BaseException):
        answer.set_exception(result)
    else:
        answer.set_result(result)


__all__ = ["MAX_GROUP_EVENTS", "EventWriter"]
