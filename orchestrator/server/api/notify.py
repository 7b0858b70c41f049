"""Wake waiting requests the moment something they wait for changes: a run's state
(``GET /flow_runs/{id}/wait``) or a worker's cancellations. The signal comes from the event hub
(``orchestrator/hub``), so a change made through another replica wakes them too when the hub is
cross-replica; the waiters' re-read (``RunNotifier.reread_seconds``) is only a safety net then."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from starlette.requests import Request

    from orchestrator.server.hub import Hub

T = TypeVar("T")

# Without a cross-replica hub, a waiter re-reads at least this often, to see changes made through
# another server on the same database.
REREAD_SECONDS = 1.0


class RunNotifier:
    """Subscriptions to the hub for request handlers, which wait on asyncio events. A key is a
    run's id (its state changed) or ``(topic, key)`` of the hub, e.g. ``api.context.worker_key``."""

    def __init__(self, hub: Hub, reread_seconds: float = REREAD_SECONDS) -> None:
        self.hub = hub
        self.reread_seconds = reread_seconds

    @contextlib.contextmanager
    def subscribe(self, key: Hashable) -> Iterator[asyncio.Event]:
        from orchestrator.server.hub import RUNS

        loop, changed = asyncio.get_running_loop(), asyncio.Event()
        topic, hub_key = key if isinstance(key, tuple) else (RUNS, str(key))
        with self.hub.subscribe(topic, lambda _key: loop.call_soon_threadsafe(changed.set), key=hub_key):
            yield changed


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
    is notified, and at least every ``notifier.reread_seconds``. With ``request``: raise ``ClientGone``
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
                await asyncio.wait({waiting, *([gone] if gone else [])},
                                   timeout=min(remaining, notifier.reread_seconds), return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                if gone is not None and gone.done():
                    raise ClientGone()
    finally:
        if gone is not None:
            gone.cancel()
