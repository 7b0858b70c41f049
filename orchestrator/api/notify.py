"""Wake waiting requests the moment something they wait for changes in this server process: a
run's state (``GET /flow_runs/{id}/wait``) or a worker's cancellations. Changes made through
another replica are seen by the waiters' fallback re-read."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from starlette.requests import Request

T = TypeVar("T")


class RunNotifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[Hashable, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = (
            collections.defaultdict(set)
        )

    @contextlib.contextmanager
    def subscribe(self, key: Hashable) -> Iterator[asyncio.Event]:
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters[key].add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                self._waiters[key].discard(entry)
                if not self._waiters[key]:
                    del self._waiters[key]

    def notify(self, key: Hashable) -> None:
        """Thread-safe; call after the state change is committed."""
        with self._lock:
            entries = list(self._waiters.get(key, ()))
        for loop, event in entries:
            loop.call_soon_threadsafe(event.set)


# A waiter re-reads at least this often, to see changes made through another server replica.
REREAD_SECONDS = 1.0


class ClientGone(Exception):
    """The client closed its connection while its request was waiting (see services/leases.py)."""


async def _disconnected(request: Request) -> None:
    """Return when the client has closed the connection (the request's body is already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def hold(request: Request, seconds: float) -> None:
    """Keep a request open for ``seconds``; raise ``ClientGone`` if the client leaves first."""
    try:
        await asyncio.wait_for(_disconnected(request), seconds)
    except TimeoutError:
        return
    raise ClientGone()


async def long_poll(notifier: RunNotifier, key: Hashable, read: Callable[[], T], done: Callable[[T], bool],
                    timeout: float, request: Request | None = None) -> T:
    """Answer as soon as ``done(read())`` holds, or after ``timeout`` with the last reading.
    ``read`` runs in the thread pool (it may query the database); it runs again whenever ``key``
    is notified, and at least every ``REREAD_SECONDS``. With ``request``: raise ``ClientGone``
    as soon as its client leaves."""
    from starlette.concurrency import run_in_threadpool

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    gone = asyncio.ensure_future(_disconnected(request)) if request is not None else None
    try:
        with notifier.subscribe(key) as changed:
            while True:
                changed.clear()  # before reading: a change during the read is not lost
                value = await run_in_threadpool(read)
                remaining = deadline - loop.time()
                if done(value) or remaining <= 0:
                    return value
                waiting = asyncio.ensure_future(changed.wait())
                await asyncio.wait({waiting, *([gone] if gone else [])}, timeout=min(remaining, REREAD_SECONDS),
                                   return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                if gone is not None and gone.done():
                    raise ClientGone()
    finally:
        if gone is not None:
            gone.cancel()
