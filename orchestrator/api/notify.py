"""Wake waiting requests the moment something they wait for changes in this server process: a
run's state (``GET /flow_runs/{id}/wait``) or a worker's cancellations. Changes made through
another replica are seen by the waiters' fallback re-read."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Hashable, Iterator


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
