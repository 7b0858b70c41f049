"""Wake waiting requests (``GET /flow_runs/{id}/wait``) the moment a run's state changes in this
server process. Changes made through another replica are seen by the waiters' fallback re-read."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import uuid
from collections.abc import Iterator


class RunNotifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[uuid.UUID, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = (
            collections.defaultdict(set)
        )

    @contextlib.contextmanager
    def subscribe(self, run_id: uuid.UUID) -> Iterator[asyncio.Event]:
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters[run_id].add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                self._waiters[run_id].discard(entry)
                if not self._waiters[run_id]:
                    del self._waiters[run_id]

    def notify(self, run_id: uuid.UUID) -> None:
        """Thread-safe; call after the state change is committed."""
        with self._lock:
            entries = list(self._waiters.get(run_id, ()))
        for loop, event in entries:
            loop.call_soon_threadsafe(event.set)
