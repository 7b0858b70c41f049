"""Wake waiting requests the moment something they wait for changes in this server process: a
run's state (``GET /flow_runs/{id}/wait``) or a worker's cancellations. Changes made through
another replica are seen by the waiters' fallback re-read."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import TypeVar

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


async def long_poll(notifier: RunNotifier, key: Hashable, read: Callable[[], T], done: Callable[[T], bool],
                    timeout: float) -> T:
    """Answer as soon as ``done(read())`` holds, or after ``timeout`` with the last reading.
    ``read`` runs in the thread pool (it may query the database); it runs again whenever ``key``
    is notified, and at least every ``REREAD_SECONDS``."""
    from starlette.concurrency import run_in_threadpool

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    with notifier.subscribe(key) as changed:
        while True:
            changed.clear()  # before reading: a change during the read is not lost
            value = await run_in_threadpool(read)
            remaining = deadline - loop.time()
            if done(value) or remaining <= 0:
                return value
            try:
                await asyncio.wait_for(changed.wait(), min(remaining, REREAD_SECONDS))
            except TimeoutError:
                pass
