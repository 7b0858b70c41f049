"""Futures of submitted task runs (``Task.submit`` / ``Task.map``) and what task arguments may
hold: other futures (resolved before the run starts) and ``unmapped`` values."""

from __future__ import annotations

import concurrent.futures
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from orchestrator.sdk import running

if TYPE_CHECKING:
    from orchestrator.sdk.task_runs import TaskRunRecord

R = TypeVar("R")
_default: concurrent.futures.ThreadPoolExecutor | None = None


class unmapped(Generic[R]):  # noqa: N801 - Prefect's name
    """``task.map(xs, unmapped(config))``: pass ``config`` whole to every call."""

    def __init__(self, value: R) -> None:
        self.value = value


class TaskFuture(Generic[R]):
    """The outcome of a submitted task run."""

    def __init__(self, future: concurrent.futures.Future[R], task_run: TaskRunRecord | None) -> None:
        self._future = future
        self.task_run = task_run

    @property
    def task_run_id(self) -> Any:
        return None if self.task_run is None else self.task_run.id

    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the run ended (or ``timeout`` seconds passed)."""
        concurrent.futures.wait([self._future], timeout=timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """The task's return value; its exception is raised (or returned with
        ``raise_on_failure=False``). ``TimeoutError`` if not done within ``timeout`` seconds."""
        if running.on_task_loop_thread() and not self._future.done():
            # The run may be queued on this very loop: waiting here would wait forever.
            raise RuntimeError("a task future was waited for on the task loop; await the task instead")
        try:
            return self._future.result(timeout)
        except TimeoutError:
            if not self._future.done():
                raise
            if raise_on_failure:
                raise
            return self._future.exception()  # type: ignore[return-value]
        except Exception as error:
            if raise_on_failure:
                raise
            return error  # type: ignore[return-value]

    @property
    def state(self) -> running.State:
        if not self._future.done():
            started = self._future.running()
            return running.State("RUNNING", "Running") if started else running.State("PENDING", "Pending")
        error = self._future.exception()
        return running.completed(self._future.result()) if error is None else running.failed(error)

    def add_done_callback(self, fn: Callable[[TaskFuture[R]], None]) -> None:
        self._future.add_done_callback(lambda _: fn(self))


class TaskFutureList(list[TaskFuture[R]]):
    """What ``.map()`` returns: a list of futures that can also be waited for as a whole."""

    def wait(self, timeout: float | None = None) -> None:
        concurrent.futures.wait([f._future for f in self], timeout=timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[R]:
        return [f.result(timeout, raise_on_failure) for f in self]


def default_pool() -> concurrent.futures.ThreadPoolExecutor:
    """Where tasks submitted outside any flow run (plainly)."""
    global _default
    if _default is None:
        _default = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="task")
    return _default


def mappable(value: Any) -> bool:
    return isinstance(value, (list, tuple, set, frozenset, range, TaskFutureList)) or inspect.isgenerator(value)


def element(value: Any, index: int) -> Any:
    if isinstance(value, unmapped):
        return value.value
    return value[index] if isinstance(value, list) else value


def resolved(value: Any) -> Any:
    """``value`` with every future in it (also inside lists, tuples, sets and dicts) replaced by
    its result: a task given another's future runs once that one is done."""
    if isinstance(value, TaskFuture):
        return value.result()
    if isinstance(value, unmapped):
        return resolved(value.value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return type(value)(resolved(v) for v in value)
    if isinstance(value, dict):
        return {k: resolved(v) for k, v in value.items()}
    return value


async def resolved_async(value: Any) -> Any:
    import asyncio

    if isinstance(value, TaskFuture):
        return await asyncio.wrap_future(value._future)
    if isinstance(value, unmapped):
        return await resolved_async(value.value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return type(value)([await resolved_async(v) for v in value])
    if isinstance(value, dict):
        return {k: await resolved_async(v) for k, v in value.items()}
    return value
