"""``@task``: a function a flow calls, submits (``.submit()``: a future, on a thread pool; async
tasks on the task event loop) or maps (``.map()``: a list of futures). Each call is a task run with
retries, a timeout, hooks and ``log_prints``: inside a flow, recorded through the API when the flow
runs as a deployment's run; outside any flow (as in Prefect 3), a task run of its own, recorded
when an API is configured (``sdk/standalone.py``).

Prefect's options that are about result storage and caching are accepted and have no effect here
(results stay in memory; see docs/flows.md).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypedDict, TypeVar, overload

from orchestrator.sdk import running
from orchestrator.sdk.flows import check_options
from orchestrator.sdk.futures import (
    TaskFuture,
    TaskFutureList,
    default_pool,
    element,
    mappable,
    resolved,
    resolved_async,
    unmapped,
)
from orchestrator.sdk.task_runs import TaskRunRecord
from orchestrator.sdk.timeouts import RunTimeout, async_timeout, owned_by, sync_timeout

if TYPE_CHECKING:
    from typing import Unpack

P = ParamSpec("P")
R = TypeVar("R")


class TaskOptions(TypedDict, total=False):
    """What ``@task(...)`` accepts: Prefect 3's options. Those marked *accepted* change nothing here."""

    name: str | None
    description: str | None
    tags: Iterable[str] | None
    version: str | None
    task_run_name: str | Callable[[], str] | None
    retries: int | None
    retry_delay_seconds: float | list[float] | Callable[[int], list[float]] | None
    retry_jitter_factor: float | None
    retry_condition_fn: Callable[..., bool] | None
    timeout_seconds: float | None
    log_prints: bool | None
    on_completion: list[Callable[..., Any]] | None
    on_failure: list[Callable[..., Any]] | None
    on_running: list[Callable[..., Any]] | None
    cache_policy: Any  # accepted
    cache_key_fn: Any  # accepted
    cache_expiration: Any  # accepted
    persist_result: bool | None  # accepted
    result_storage: Any  # accepted
    result_storage_key: str | None  # accepted
    result_serializer: Any  # accepted
    cache_result_in_memory: bool  # accepted
    refresh_cache: bool | None  # accepted
    viz_return_value: Any  # accepted
    asset_deps: Any  # accepted


class Task(Generic[P, R]):
    """A function registered as a task."""

    def __init__(self, fn: Callable[P, R], **options: Unpack[TaskOptions]) -> None:
        if not callable(fn):
            raise TypeError("@task decorates a function")
        check_options(dict(options), TaskOptions, "@task")
        self.fn = fn
        self.options = options
        self.isasync = inspect.iscoroutinefunction(fn)
        self.name: str = options.get("name") or fn.__name__
        self.description = options.get("description") or inspect.getdoc(fn)
        self.tags = sorted({str(tag) for tag in options.get("tags") or ()})
        version = options.get("version")
        self.version = None if version is None else str(version)
        self.retries = options.get("retries") or 0
        self.retry_delay_seconds = options.get("retry_delay_seconds") or 0
        self.timeout_seconds = options.get("timeout_seconds")
        self.log_prints = options.get("log_prints")
        self.on_completion = list(options.get("on_completion") or [])
        self.on_failure = list(options.get("on_failure") or [])
        self.on_running = list(options.get("on_running") or [])
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"Task(name={self.name!r}, fn={self.fn.__module__}.{self.fn.__qualname__})"

    def with_options(self, **options: Unpack[TaskOptions]) -> Task[P, R]:
        """A copy of this task with some options changed."""
        return Task(self.fn, **{**self.options, **options})  # type: ignore[misc]

    @functools.cached_property
    def run_version(self) -> str:
        """What each task run records: the explicit version, else a hash of the source."""
        return self.version or running.source_hash(self.fn)

    # --- calling ---------------------------------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        in_flow = running.current_flow()
        flow = in_flow or _outside_flows()
        extra = self._pop_call_options(kwargs)
        record = self._new_record(flow, args, kwargs)
        if self.isasync:
            coroutine = self._run_async(flow, record, args, kwargs, **extra)
            if in_flow is None or running.in_running_loop():
                return coroutine  # type: ignore[return-value]  # outside a flow: to await, as an async function's
            return running.run_coroutine_sync(coroutine)  # type: ignore[no-any-return]
        return self._run_sync(flow, record, args, kwargs, **extra)  # type: ignore[no-any-return]

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> TaskFuture[R]:
        """Start a run of this task and return its future at once (``wait_for=[futures]`` waits
        for those first; futures among the arguments are replaced by their results)."""
        extra = self._pop_call_options(kwargs)
        context = contextvars.copy_context()
        in_flow = running.current_flow()
        flow = in_flow or _outside_flows()
        record = self._new_record(flow, args, kwargs)
        if flow.shipper is not None:
            flow.shipper.put(record)  # PENDING until a thread takes it
        if self.isasync:
            future = running.submit_coroutine(lambda: self._run_async(flow, record, args, kwargs, **extra), context)
        elif in_flow is None:  # outside any flow: the process's pool (a flow's waits for its tasks at its end)
            future = default_pool().submit(context.run, self._run_sync, flow, record, args, kwargs, **extra)
        else:
            future = flow.executor().submit(context.run, self._run_sync, flow, record, args, kwargs, **extra)
        if in_flow is not None:
            flow.track(future, record)
        return TaskFuture(future, record)

    def map(self, *args: Any, **kwargs: Any) -> TaskFutureList[R]:
        """One run per element: lists, tuples, sets, ranges and generators are mapped over, other
        arguments (and those wrapped in ``unmapped``) are passed whole to every run."""
        call_options = self._pop_call_options(kwargs)
        args_list = [list(a) if mappable(a) else a for a in args]
        kwargs_map = {k: list(v) if mappable(v) else v for k, v in kwargs.items()}
        lengths = {len(v) for v in [*args_list, *kwargs_map.values()] if isinstance(v, list)}
        if len(lengths) > 1:
            raise ValueError(f"task '{self.name}'.map() got iterables of different lengths: {sorted(lengths)}")
        count = lengths.pop() if lengths else 1
        futures = TaskFutureList[R]()
        for i in range(count):
            call_args = [element(a, i) for a in args_list]
            call_kwargs = {k: element(v, i) for k, v in kwargs_map.items()}
            futures.append(self.submit(*call_args, **call_kwargs, **call_options))  # type: ignore[arg-type]
        return futures

    # --- one task run ----------------------------------------------------------------------------

    @functools.cached_property
    def _parameters(self) -> Any:
        return inspect.signature(self.fn).parameters

    def _pop_call_options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Prefect's per-call options, unless the function itself takes parameters of that name."""
        names = self._parameters
        return {key: kwargs.pop(key) for key in ("wait_for", "return_state") if key in kwargs and key not in names}

    def _new_record(self, flow: running.FlowContext, args: Any, kwargs: dict[str, Any]) -> TaskRunRecord:
        name = self.options.get("task_run_name")
        run_name = None
        try:
            if callable(name):
                run_name = str(name())
            elif isinstance(name, str):
                bound = inspect.signature(self.fn).bind_partial(*args, **kwargs)
                run_name = name.format(**bound.arguments)
        except Exception as error:  # noqa: BLE001 - a bad name template must not fail the task
            running.log.warning("task_run_name of task '%s' failed: %s", self.name, error)
        return TaskRunRecord(name=run_name or f"{self.name}-{flow.next_index(self.name)}", task_name=self.name,
                             version=self.run_version, tags=self.tags, max_retries=self.retries)

    def _log_prints(self, flow: running.FlowContext) -> str | None:
        wanted = flow.log_prints if self.log_prints is None else self.log_prints
        return running.TASK_LOGGER if wanted else None

    def _ship(self, flow: running.FlowContext, record: TaskRunRecord) -> None:
        if flow.shipper is not None:
            flow.shipper.put(record)

    def _should_retry(self, flow: running.FlowContext, record: TaskRunRecord, error: Exception,
                      owner: object) -> float | None:
        """Seconds to wait before the next attempt, or None when this failure is final."""
        if record.run_count > self.retries or (isinstance(error, RunTimeout) and not owned_by(error, owner)):
            return None  # out of retries, or the enclosing flow's timeout
        condition = self.options.get("retry_condition_fn")
        if condition is not None and not condition(self, record, running.failed(error)):
            return None
        delay = running.retry_delay(self.retry_delay_seconds, self.retries, record.run_count,
                                    self.options.get("retry_jitter_factor"))
        record.awaiting_retry(f"attempt {record.run_count} failed: {type(error).__name__}: {error}; "
                              f"retrying in {delay:g}s")
        self._ship(flow, record)
        return delay

    def _fail(self, flow: running.FlowContext, record: TaskRunRecord, error: BaseException) -> None:
        if isinstance(error, Exception):
            record.finished("FAILED", "Failed", f"{type(error).__name__}: {error}")
        elif type(error).__name__ == "CancelledError" or running.cancel_requested():  # asyncio's, or SIGTERM
            record.finished("CANCELLED", "Cancelled", "the flow run was cancelled")
        else:
            record.finished("CRASHED", "Crashed", f"{type(error).__name__}: {error}")
        self._ship(flow, record)
        if isinstance(error, Exception):
            running.call_hooks(self.on_failure, self, record, running.failed(error))

    def _done(self, flow: running.FlowContext, record: TaskRunRecord, value: Any, return_state: bool) -> Any:
        record.finished("COMPLETED", "Completed")
        self._ship(flow, record)
        running.call_hooks(self.on_completion, self, record, running.completed(value))
        return running.completed(value) if return_state else value

    def _run_sync(self, flow: running.FlowContext, record: TaskRunRecord, args: Any, kwargs: dict[str, Any], *,
                  wait_for: Iterable[Any] = (), return_state: bool = False) -> Any:
        with _logs_shown(flow), running.entered(running.TaskContext(self, record.id)):
            try:
                for future in wait_for:
                    future.wait()
                args, kwargs = resolved(args), resolved(kwargs)
                while True:
                    record.running()
                    self._ship(flow, record)
                    running.call_hooks(self.on_running, self, record, running.State("RUNNING", "Running"))
                    with running.prints_to(self._log_prints(flow)), \
                            sync_timeout(self.timeout_seconds, self._timeout_message()) as owner:
                        try:
                            value = self.fn(*args, **kwargs)
                        except Exception as error:
                            delay = self._should_retry(flow, record, error, owner)
                            if delay is None:
                                raise
                        else:
                            return self._done(flow, record, value, return_state)
                    time.sleep(delay)
            except BaseException as error:
                self._fail(flow, record, error)
                if return_state and isinstance(error, Exception):
                    return running.failed(error)
                raise

    async def _run_async(self, flow: running.FlowContext, record: TaskRunRecord, args: Any, kwargs: dict[str, Any],
                         *, wait_for: Iterable[Any] = (), return_state: bool = False) -> Any:
        import asyncio

        with _logs_shown(flow), running.entered(running.TaskContext(self, record.id)):
            try:
                for future in wait_for:
                    await asyncio.wrap_future(future._future)
                args, kwargs = await resolved_async(args), await resolved_async(kwargs)
                while True:
                    record.running()
                    self._ship(flow, record)
                    running.call_hooks(self.on_running, self, record, running.State("RUNNING", "Running"))
                    try:
                        with running.prints_to(self._log_prints(flow)):
                            async with async_timeout(self.timeout_seconds, self._timeout_message()) as owner:
                                value = await self.fn(*args, **kwargs)  # type: ignore[misc]
                    except Exception as error:
                        delay = self._should_retry(flow, record, error, owner)
                        if delay is None:
                            raise
                    else:
                        return self._done(flow, record, value, return_state)
                    await asyncio.sleep(delay)
            except BaseException as error:
                self._fail(flow, record, error)
                if return_state and isinstance(error, Exception):
                    return running.failed(error)
                raise

    def _timeout_message(self) -> str:
        return f"task '{self.name}' exceeded its timeout of {self.timeout_seconds or 0:g}s"


def _outside_flows() -> running.FlowContext:
    from orchestrator.sdk import standalone

    return standalone.context()


def _logs_shown(flow: running.FlowContext) -> contextlib.AbstractContextManager[None]:
    """A task run outside any flow shows its INFO records on the console, as a flow called
    directly does (``sdk/logging.py``); inside a flow they go where the flow's do."""
    if flow.flow is not None:
        return contextlib.nullcontext()
    from orchestrator.sdk.logging import shown_on_console

    return shown_on_console()


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(**options: Unpack[TaskOptions]) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(fn: Callable[P, R] | None = None, /,
         **options: Unpack[TaskOptions]) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Mark a function as a task: ``@task`` or ``@task(name=..., retries=..., ...)``."""
    check_options(dict(options), TaskOptions, "@task")

    def wrap(f: Callable[P, R]) -> Task[P, R]:
        return Task(f, **options)

    return wrap(fn) if fn is not None else wrap


__all__ = ["Task", "TaskFuture", "TaskFutureList", "TaskOptions", "task", "unmapped"]
