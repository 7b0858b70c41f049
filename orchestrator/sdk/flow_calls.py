"""Running a flow's function: one attempt (context, ``log_prints``, ``timeout_seconds``,
``on_running`` hooks), and a direct call's retries and final hooks -- recorded as a flow run when
``ORCH_API_URL`` is set (``sdk/direct_runs.py``, loaded then only); a flow called inside a tracked
run is a subflow run of its own, one called inside an untracked flow part of its caller's call. The
flow-run process calls one attempt at a time (it reports each retry to the API) through
``run_in_process``.

An ``async def`` flow called directly returns a coroutine to await, as in Prefect; the flow-run
process runs it with ``asyncio.run``. A SIGTERM there cancels the coroutine (``cancel_running``).
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.sdk import running
from orchestrator.sdk.standalone import api_configured
from orchestrator.sdk.timeouts import async_timeout, sync_timeout

if TYPE_CHECKING:
    import asyncio

    from orchestrator.sdk.direct_runs import DirectRun
    from orchestrator.sdk.task_runs import TaskRunShipper


class CalledFlow(Protocol):
    """What calling a flow reads of it (``orchestrator.sdk.flows.Flow`` has it all)."""

    fn: Callable[..., Any]
    name: str
    isasync: bool
    log_prints: bool | None
    retries: int
    retry_delay_seconds: Any
    timeout_seconds: float | None
    hooks: dict[str, list[Callable[..., Any]]]
    run_name: Any


@dataclass(frozen=True)
class FlowRunInfo:
    """The ``flow_run`` hooks of a flow called directly receive when no run is recorded
    (``ORCH_API_URL`` unset, or the API could not be reached); else they get the API's run."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)
    id: uuid.UUID | None = None


@contextlib.contextmanager
def _flow_context(flow: CalledFlow, flow_run_id: uuid.UUID | None, shipper: TaskRunShipper | None,
                  run: Any = None) -> Iterator[running.FlowContext]:
    api_run, run_flow_name = (run, flow.name) if flow_run_id is not None else (None, None)
    parent = running.current_flow()
    # A flow called inside another without a run of its own (no API, an untracked caller, or its
    # run could not be created): part of its caller's run. With one, a subflow run: its own.
    shares = parent is not None and flow_run_id is None
    if shares:
        flow_run_id, shipper = parent.flow_run_id, parent.shipper
        api_run, run_flow_name = parent.run, parent.run_flow_name
    inherited = parent.log_prints if parent is not None else False
    context = running.FlowContext(flow, flow_run_id, shipper,
                                  log_prints=inherited if flow.log_prints is None else flow.log_prints,
                                  counts=parent.counts if shares else {}, run=api_run,
                                  run_flow_name=run_flow_name)
    try:
        with running.entered(context), running.prints_to(running.FLOW_LOGGER if context.log_prints else None):
            yield context
    finally:
        context.finish()


def _timeout_message(flow: CalledFlow) -> str:
    return f"flow '{flow.name}' exceeded its timeout of {flow.timeout_seconds or 0:g}s"


def attempt_sync(flow: CalledFlow, args: tuple[Any, ...], kwargs: dict[str, Any], run: Any, *,
                 flow_run_id: uuid.UUID | None = None, shipper: TaskRunShipper | None = None) -> Any:
    with _flow_context(flow, flow_run_id, shipper, run):
        running.call_hooks(flow.hooks["on_running"], flow, run, running.State("RUNNING", "Running"))
        with sync_timeout(flow.timeout_seconds, _timeout_message(flow)):
            return flow.fn(*args, **kwargs)


async def attempt_async(flow: CalledFlow, args: tuple[Any, ...], kwargs: dict[str, Any], run: Any, *,
                        flow_run_id: uuid.UUID | None = None, shipper: TaskRunShipper | None = None) -> Any:
    with _flow_context(flow, flow_run_id, shipper, run):
        running.call_hooks(flow.hooks["on_running"], flow, run, running.State("RUNNING", "Running"))
        async with async_timeout(flow.timeout_seconds, _timeout_message(flow)):
            return await flow.fn(*args, **kwargs)


def call(flow: CalledFlow, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A direct call: the value (sync) or a coroutine giving it (async), after retries. With
    Prefect's ``return_state=True`` (unless the function takes such a parameter), the final state."""
    return_state = bool(kwargs.pop("return_state", False)) if "return_state" in kwargs and \
        "return_state" not in inspect.signature(flow.fn).parameters else False
    run = FlowRunInfo(name=flow.name, parameters=dict(kwargs))
    if flow.isasync:
        coroutine = _call_async(flow, args, kwargs, run)
        return _state_of_async(coroutine) if return_state else coroutine
    if not return_state:
        return _call_sync(flow, args, kwargs, run)
    try:
        return running.completed(_call_sync(flow, args, kwargs, run))
    except Exception as error:
        return running.failed(error)


async def _state_of_async(coroutine: Any) -> running.State:
    try:
        return running.completed(await coroutine)
    except Exception as error:
        return running.failed(error)


def _logs_shown() -> contextlib.AbstractContextManager[None]:
    """A flow called directly outside any other is a run of its own, its logs shown on the console
    (``orchestrator.sdk.logging``); one called inside another logs where its caller does."""
    if running.current_flow() is not None:
        return contextlib.nullcontext()
    from orchestrator.sdk.logging import shown_on_console

    return shown_on_console()


class Recording(Protocol):
    """Where a direct call reports its run: ``direct_runs.DirectRun`` (an API is configured) or
    ``UNRECORDED``."""

    flow_run_id: uuid.UUID | None
    shipper: TaskRunShipper | None

    def running(self) -> None: ...
    def retrying(self, attempt: int, attempts: int, error: BaseException, delay: float) -> None: ...
    def completed(self, value: Any) -> None: ...
    def failed(self, error: BaseException) -> None: ...


class _Unrecorded:
    """A call recorded nowhere: no API configured, or one that could not create the run, or a flow
    called inside an untracked one (part of its caller's run)."""

    flow_run_id: uuid.UUID | None = None
    shipper: TaskRunShipper | None = None

    def running(self) -> None:
        pass

    def retrying(self, attempt: int, attempts: int, error: BaseException, delay: float) -> None:
        pass

    def completed(self, value: Any) -> None:
        pass

    def failed(self, error: BaseException) -> None:
        pass


UNRECORDED = _Unrecorded()


def _direct_run(flow: CalledFlow, args: tuple[Any, ...], kwargs: dict[str, Any]) -> DirectRun | None:
    """The flow run a direct call reports to (``sdk/direct_runs.py``, imported only then) when
    ``ORCH_API_URL`` is set and the flow is called outside any other, or inside a tracked run (a
    subflow run, as in Prefect: a deployment's run or another direct call's); else None."""
    caller = running.current_flow()
    if caller is not None and (caller.flow_run_id is None or caller.shipper is None):
        return None  # inside an untracked flow: part of its caller's call
    if not api_configured():
        return None
    from orchestrator.sdk import direct_runs

    parameters = _call_parameters(flow, args, kwargs)
    # Named from the values themselves, as the flow-run process names a deployment's run.
    return direct_runs.start(flow.name, parameters, name=run_name(flow, parameters),
                             version=getattr(flow, "run_version", None), caller=caller)


def _call_parameters(flow: CalledFlow, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name, defaults included (as Prefect records them)."""
    try:
        bound = inspect.signature(flow.fn).bind(*args, **kwargs)
    except (TypeError, ValueError):  # the call itself fails the same way, recorded as the run's error
        return dict(kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _call_sync(flow: CalledFlow, args: tuple[Any, ...], kwargs: dict[str, Any], run: FlowRunInfo) -> Any:
    with _logs_shown():
        recorded = _direct_run(flow, args, kwargs)
        if recorded is None:
            return _retried_sync(flow, args, kwargs, run, UNRECORDED)
        from orchestrator.sdk.direct_runs import recorded_until_the_end

        with recorded_until_the_end(recorded):
            return _retried_sync(flow, args, kwargs, recorded.run, recorded)


def _retried_sync(flow: CalledFlow, args: tuple[Any, ...], kwargs: dict[str, Any], run: Any,
                  recording: Recording) -> Any:
    """``run``: what the hooks receive (the API's run when recorded, else a ``FlowRunInfo``)."""
    attempt = 0
    while True:
        attempt += 1
        if attempt > 1:
            recording.running()
        try:
            value = attempt_sync(flow, args, kwargs, run, flow_run_id=recording.flow_run_id,
                                 shipper=recording.shipper)
        except Exception as error:
            if attempt > flow.retries:
                recording.failed(error)
                running.call_hooks(flow.hooks["on_failure"], flow, run, running.failed(error))
                raise
            delay = running.retry_delay(flow.retry_delay_seconds, flow.retries, attempt)
            recording.retrying(attempt, flow.retries + 1, error, delay)
            time.sleep(delay)
            continue
        recording.completed(value)
        running.call_hooks(flow.hooks["on_completion"], flow, run, running.completed(value))
        return value


async def _call_async(flow: CalledFlow, args: tuple[Any, ...], kwargs: dict[str, Any], run: FlowRunInfo) -> Any:
    with _logs_shown():
        recorded = _direct_run(flow, args, kwargs)
        if recorded is None:
            return await _retried_async(flow, args, kwargs, run, UNRECORDED)
        from orchestrator.sdk.direct_runs import recorded_until_the_end

        with recorded_until_the_end(recorded):
            return await _retried_async(flow, args, kwargs, recorded.run, recorded)


async def _retried_async(flow: CalledFlow, args: tuple[Any, ...], kwargs: dict[str, Any], run: Any,
                         recording: Recording) -> Any:
    attempt = 0
    while True:
        attempt += 1
        if attempt > 1:
            recording.running()
        try:
            value = await attempt_async(flow, args, kwargs, run, flow_run_id=recording.flow_run_id,
                                        shipper=recording.shipper)
        except Exception as error:
            if attempt > flow.retries:
                recording.failed(error)
                running.call_hooks(flow.hooks["on_failure"], flow, run, running.failed(error))
                raise
            import asyncio

            delay = running.retry_delay(flow.retry_delay_seconds, flow.retries, attempt)
            recording.retrying(attempt, flow.retries + 1, error, delay)
            await asyncio.sleep(delay)
            continue
        recording.completed(value)
        running.call_hooks(flow.hooks["on_completion"], flow, run, running.completed(value))
        return value


# --- in the flow-run process -------------------------------------------------------------------

_main: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None
_main_lock = threading.Lock()


def cancel_running() -> bool:
    """From the SIGTERM handler: cancel the running async flow's coroutine (it ends at its next
    ``await``, its ``except CancelledError`` / ``finally`` blocks run). False when no async flow
    runs (the caller then interrupts the sync code instead)."""
    running.request_cancel()
    with _main_lock:
        if _main is None:
            return False
        loop, task = _main
    loop.call_soon_threadsafe(task.cancel)
    return True


def run_name(flow: CalledFlow, parameters: dict[str, Any]) -> str | None:
    """The name ``flow_run_name`` gives the run; None (the run keeps its name) when it fails."""
    try:
        return flow.run_name(parameters)
    except Exception as error:  # noqa: BLE001 - a bad template must not fail the run
        running.log.warning("flow_run_name of flow '%s' failed: %s: %s", flow.name, type(error).__name__, error)
        return None


def run_in_process(flow: CalledFlow, args: Sequence[Any], kwargs: dict[str, Any], run: Any, *,
                   flow_run_id: uuid.UUID, shipper: TaskRunShipper | None, cancelled: type[BaseException]) -> Any:
    """One attempt of a deployment's run. Raises ``cancelled`` if the process was told to stop
    while an async flow ran (its coroutine was cancelled)."""
    if not flow.isasync:
        return attempt_sync(flow, tuple(args), kwargs, run, flow_run_id=flow_run_id, shipper=shipper)
    import asyncio

    async def main() -> Any:
        global _main
        with _main_lock:
            _main = (asyncio.get_running_loop(), asyncio.current_task())  # type: ignore[assignment]
        try:
            return await attempt_async(flow, tuple(args), kwargs, run, flow_run_id=flow_run_id, shipper=shipper)
        finally:
            with _main_lock:
                _main = None

    try:
        value = asyncio.run(main())
    except asyncio.CancelledError:
        if running.cancel_requested():
            raise cancelled() from None
        raise
    if running.cancel_requested():  # the flow swallowed the cancellation: the run is cancelled all the same
        raise cancelled()
    return value
