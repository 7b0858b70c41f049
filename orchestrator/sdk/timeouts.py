"""``timeout_seconds`` of flows and tasks.

Sync code on the main thread is interrupted by ``SIGALRM`` (so a ``time.sleep`` or a blocking
wait ends too); sync code on another thread (a submitted task) gets the exception at its next
Python instruction (a blocking call returns first); async code has its coroutine cancelled
(``asyncio.timeout``). Nested timeouts each keep their own deadline; the exception says whose it
is, so a task never retries on its flow's timeout.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator


class RunTimeout(TimeoutError):
    """A flow or task ran longer than its ``timeout_seconds``. ``owner`` is the timeout scope."""

    message = "timed out"
    owner: object = None

    def __init__(self, message: str | None = None, owner: object = None) -> None:
        super().__init__(message or self.message)
        if owner is not None:
            self.owner = owner


def owned_by(error: BaseException, owner: object) -> bool:
    return isinstance(error, RunTimeout) and error.owner is owner


# --- the main thread: SIGALRM ------------------------------------------------------------------

_alarms: list[tuple[float, object, str]] = []  # (deadline, owner, message) of the open scopes
_previous_handler: signal.Handlers | object = None


def _on_alarm(_signum: int, _frame: object) -> None:
    now = time.monotonic()
    expired = [alarm for alarm in _alarms if alarm[0] <= now + 0.001]
    if not expired:
        _arm()
        return
    deadline, owner, message = min(expired, key=lambda alarm: _alarms.index(alarm))  # the outermost
    _alarms.remove((deadline, owner, message))  # fires once
    _arm()
    raise RunTimeout(message, owner)


def _arm() -> None:
    if _alarms:
        remaining = min(deadline for deadline, _, _ in _alarms) - time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.001))
    else:
        signal.setitimer(signal.ITIMER_REAL, 0)


@contextlib.contextmanager
def _alarm(seconds: float, message: str, owner: object) -> Iterator[None]:
    global _previous_handler
    if not _alarms:
        _previous_handler = signal.signal(signal.SIGALRM, _on_alarm)
    entry = (time.monotonic() + seconds, owner, message)
    _alarms.append(entry)
    _arm()
    try:
        yield
    finally:
        if entry in _alarms:
            _alarms.remove(entry)
        _arm()
        if not _alarms:
            # None: the handler was not set from Python; the default is the closest we can restore.
            signal.signal(signal.SIGALRM, signal.SIG_DFL if _previous_handler is None else _previous_handler)  # type: ignore[arg-type]


# --- other threads: an asynchronous exception -----------------------------------------------------


@contextlib.contextmanager
def _thread_alarm(seconds: float, message: str, owner: object) -> Iterator[None]:
    import ctypes

    thread_id = threading.get_ident()
    error = type("RunTimeout", (RunTimeout,), {"message": message, "owner": owner})
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def fire() -> None:
        with lock:
            if not state["done"]:
                state["fired"] = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(error))

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            state["done"] = True
            timer.cancel()
            if state["fired"]:  # not delivered yet (the block ended first): take it back
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)


@contextlib.contextmanager
def sync_timeout(seconds: float | None, message: str) -> Iterator[object]:
    """Raise ``RunTimeout(message)`` in this block after ``seconds``; yields the scope's owner."""
    owner = object()
    if not seconds:
        yield owner
        return
    on_main = threading.current_thread() is threading.main_thread()
    with (_alarm if on_main else _thread_alarm)(float(seconds), message, owner):
        yield owner


@contextlib.asynccontextmanager
async def async_timeout(seconds: float | None, message: str) -> AsyncIterator[object]:
    """Cancel the block's coroutine after ``seconds`` and raise ``RunTimeout(message)``."""
    import asyncio

    owner = object()
    if not seconds:
        yield owner
        return
    scope = asyncio.timeout(float(seconds))
    try:
        async with scope:
            yield owner
    except TimeoutError:
        if scope.expired():
            raise RunTimeout(message, owner) from None
        raise
