"""What flow and task calls run inside: the current flow (its run id, the task-run shipper, the
thread pool of submitted tasks), prints sent to the run logger (``log_prints``), state hooks,
retry delays, and the event loop that runs submitted async tasks.

Standard library only, and ``asyncio`` (15 ms) only once something async runs: every flow-run
process loads this module.
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import functools
import inspect
import linecache
import logging
import os
import random
import re
import sys
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from orchestrator.sdk.task_runs import TaskRunRecord, TaskRunShipper

log = logging.getLogger("orchestrator.runtime")
FLOW_LOGGER = "orchestrator.flow_run"
TASK_LOGGER = "orchestrator.task_run"


@dataclass
class FlowContext:
    """One call of a flow: a deployment's run in the flow-run process (``flow_run_id`` and
    ``shipper`` set) or a plain call (both None: task runs are not recorded). ``flow`` None: what
    the task runs outside any flow share (``sdk/standalone.py``; a shipper when an API is set)."""

    flow: Any
    flow_run_id: uuid.UUID | None = None
    shipper: TaskRunShipper | None = None
    log_prints: bool = False
    # The run as the API knows it (``schemas.FlowRun``) in the flow-run process, and the name of its
    # flow; a flow called inside another keeps its caller's (``emit_event`` relates events to them).
    run: Any = None
    run_flow_name: str | None = None
    # Shared by a flow and the flows it calls, so task-run names stay unique within a run.
    counts: dict[str, int] = field(default_factory=dict)
    _executor: ThreadPoolExecutor | None = None
    _submitted: list[tuple[Future[Any], TaskRunRecord]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next_index(self, task_name: str) -> int:
        with self._lock:
            index = self.counts.get(task_name, 0)
            self.counts[task_name] = index + 1
            return index

    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(thread_name_prefix=f"task-{self.flow.name}")
            return self._executor

    def track(self, future: Future[Any], record: TaskRunRecord) -> None:
        with self._lock:
            self._submitted.append((future, record))

    def finish(self) -> None:
        """Wait for every task the flow submitted, so that the flow's outcome is reported after
        all of its task runs are (and a task left running does not outlive its flow)."""
        with self._lock:
            submitted, self._submitted = self._submitted, []
        if cancel_requested():  # the process is stopping, and its tasks with it: say so
            for _future, record in submitted:
                if record.end_time is None:
                    record.finished("CANCELLED", "Cancelled", "the flow run was cancelled")
                    if self.shipper is not None:
                        self.shipper.put(record)
            return
        wait_all([future for future, _record in submitted])
        if self._executor is not None:
            self._executor.shutdown(wait=True)


@dataclass
class TaskContext:
    task: Any
    task_run_id: uuid.UUID | None


_flow: contextvars.ContextVar[FlowContext | None] = contextvars.ContextVar("orchestrator_flow", default=None)
_task: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar("orchestrator_task", default=None)


def current_flow() -> FlowContext | None:
    return _flow.get()


def current_task() -> TaskContext | None:
    return _task.get()


# Set while a state hook runs: hooks are called after their flow's context is left, but they are
# still part of the run (Prefect's hooks may use ``get_run_logger`` too).
_in_hook: contextvars.ContextVar[bool] = contextvars.ContextVar("orchestrator_in_hook", default=False)


def in_a_run() -> bool:
    """Whether a flow, a task or a state hook of one is running here."""
    return _flow.get() is not None or _task.get() is not None or _in_hook.get()


@contextlib.contextmanager
def entered(context: FlowContext | TaskContext) -> Iterator[None]:
    variable: contextvars.ContextVar[Any] = _flow if isinstance(context, FlowContext) else _task
    token = variable.set(context)
    try:
        yield
    finally:
        variable.reset(token)


def source_hash(fn: Callable[..., Any]) -> str:
    """The default version of a flow or task: 12 hex digits of its source's SHA-256."""
    try:
        source = function_source(fn)
    except (OSError, TypeError):
        source = getattr(fn, "__qualname__", repr(fn))
    return sha256_hex(source.encode())[:12]


# ``inspect.findsource``'s test for the line a function's block starts on (its ``def`` or first decorator).
_BLOCK_START = re.compile(r"^(\s*def\s)|(\s*async\s+def\s)|(.*(?<!\w)lambda(:|\s))|^(\s*@)")


def function_source(fn: Callable[..., Any]) -> str:
    """``inspect.getsource(fn)``, the same text, for a function whose file is on disk by the
    shortest way: its lines (``linecache``, checked against the file as ``getsource`` does) from its
    code's first line, cut by ``inspect.getblock``. ``getsource`` finds that file and line through
    ``getsourcefile`` and ``getmodule`` first, twice: ~0.2 ms of a flow-run process's ~0.5 ms for
    its flow's version, on its path to RUNNING (bench/RESULTS.md, issue 22, "run_version").
    Anything else (no file, a class, a first line that is not the block's) goes to ``getsource``."""
    fn = inspect.unwrap(fn)  # as ``getsource`` does: a ``functools.wraps`` wrapper's wrapped function
    if not inspect.isfunction(fn):
        return inspect.getsource(fn)
    code = fn.__code__
    path, first = code.co_filename, code.co_firstlineno - 1
    if not os.path.isfile(path):  # what ``getsourcefile`` takes as the file; else its other ways
        return inspect.getsource(fn)
    linecache.checkcache(path)
    lines = linecache.getlines(path, fn.__globals__)
    if not 0 <= first < len(lines) or not _BLOCK_START.match(lines[first]):
        return inspect.getsource(fn)  # its search upwards for the block's first line, or its error
    return "".join(inspect.getblock(lines[first:]))


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data`` in hex, through CPython's own implementation where it has one (the one
    ``hashlib`` falls back to without OpenSSL: the same digest). ``hashlib`` maps libcrypto
    (3.3 MB of resident pages) into every process that imports it: the fork server would hold it
    idle for each run's one hash of its flow's source (bench/RESULTS.md, "The worker tree's idle
    memory ... libcrypto")."""
    return _sha256()(data).hexdigest()


@functools.cache
def _sha256() -> Callable[[bytes], Any]:
    """The constructor, looked for once per process: a module that is not there is searched for
    on the whole ``sys.path`` at every ``import`` of it (``_sha2`` on 3.11: ~50 µs a hash, in each
    flow-run process's path to RUNNING)."""
    try:
        from _sha2 import sha256  # CPython 3.12 and later
    except ImportError:
        try:
            from _sha256 import sha256  # CPython 3.11
        except ImportError:  # another interpreter: its hashlib
            from hashlib import sha256
    return sha256  # type: ignore[no-any-return]


# --- cancellation of the flow-run process ------------------------------------------------------

_cancel_requested = threading.Event()


def request_cancel() -> None:
    """The flow-run process is being cancelled (SIGTERM): task runs that end now are CANCELLED."""
    _cancel_requested.set()


def cancel_requested() -> bool:
    return _cancel_requested.is_set()


# --- log_prints --------------------------------------------------------------------------------

_print_logger: contextvars.ContextVar[logging.Logger | None] = contextvars.ContextVar("orchestrator_print",
                                                                                     default=None)
_original_print = builtins.print


def _print(*values: object, sep: str | None = " ", end: str | None = "\n", file: Any = None,
           flush: bool = False) -> None:
    logger = _print_logger.get()
    if logger is None or (file is not None and file is not sys.stdout):
        _original_print(*values, sep=sep, end=end, file=file, flush=flush)
        return
    logger.info((" " if sep is None else sep).join(str(value) for value in values))


@contextlib.contextmanager
def prints_to(logger_name: str | None) -> Iterator[None]:
    """With a logger name: ``print()`` to stdout in this block (and the threads and tasks it
    starts) becomes an INFO record of that logger, as Prefect's ``log_prints`` does."""
    if logger_name is None:
        token = _print_logger.set(None)
    else:
        if builtins.print is not _print:
            builtins.print = _print  # once; it prints as before wherever no block asks otherwise
        token = _print_logger.set(logging.getLogger(logger_name))
    try:
        yield
    finally:
        _print_logger.reset(token)


# --- states and hooks --------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """The state a hook is called with, or ``return_state=True`` returns."""

    type: str
    name: str
    message: str | None = None
    data: Any = None
    error: BaseException | None = None

    def is_completed(self) -> bool:
        return self.type == "COMPLETED"

    def is_failed(self) -> bool:
        return self.type == "FAILED"

    def is_cancelled(self) -> bool:
        return self.type == "CANCELLED"

    def is_crashed(self) -> bool:
        return self.type == "CRASHED"

    def is_running(self) -> bool:
        return self.type == "RUNNING"

    def result(self, raise_on_failure: bool = True) -> Any:
        if self.error is not None:
            if raise_on_failure:
                raise self.error
            return self.error
        return self.data


def completed(value: Any) -> State:
    return State("COMPLETED", "Completed", data=value)


def failed(error: BaseException) -> State:
    return State("FAILED", "Failed", message=f"{type(error).__name__}: {error}", error=error)


def call_hooks(hooks: Sequence[Callable[..., Any]], *args: Any) -> None:
    """Call each hook; one that fails is logged and changes nothing (as in Prefect)."""
    token = _in_hook.set(True)
    try:
        for hook in hooks:
            try:
                outcome = hook(*args)
                if inspect.isawaitable(outcome):
                    run_coroutine_sync(_awaited(outcome))
            except Exception:  # noqa: BLE001 - a hook's failure is not the run's
                log.exception("hook %s failed", getattr(hook, "__name__", hook))
    finally:
        _in_hook.reset(token)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def retry_delay(spec: Any, retries: int, attempt: int, jitter: float | None = None) -> float:
    """Seconds before retry number ``attempt`` (1-based): a number, a list (one per retry, the
    last repeated) or a callable of the number of retries returning such a list (Prefect's
    ``exponential_backoff``); ``jitter`` adds up to that fraction of the delay at random."""
    if callable(spec):
        spec = spec(retries)
    if isinstance(spec, (list, tuple)):
        delay = float(spec[min(attempt, len(spec)) - 1]) if spec else 0.0
    else:
        delay = float(spec or 0.0)
    if jitter:
        delay += random.uniform(0, delay * jitter)  # noqa: S311 - spreading retries, not security
    return max(delay, 0.0)


# --- event loops ---------------------------------------------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None
_loop_thread: threading.Thread | None = None
_loop_lock = threading.Lock()


def in_running_loop() -> bool:
    if "asyncio" not in sys.modules:
        return False  # nothing imported it: no loop can run
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def on_task_loop_thread() -> bool:
    return _loop_thread is not None and threading.current_thread() is _loop_thread


def _task_loop() -> asyncio.AbstractEventLoop:
    """One event loop, on a daemon thread, for the async tasks flows submit: they run
    concurrently there while the flow (sync or async) goes on and waits on their futures."""
    global _loop, _loop_thread
    import asyncio

    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            _loop_thread = threading.Thread(target=_loop.run_forever, name="task-loop", daemon=True)
            _loop_thread.start()
        return _loop


def submit_coroutine(make: Callable[[], Coroutine[Any, Any, Any]], context: contextvars.Context) -> Future[Any]:
    """Run ``make()`` on the task loop in ``context``; the returned future gets its outcome."""
    import asyncio

    loop = _task_loop()
    future: Future[Any] = Future()

    def start() -> None:
        if not future.set_running_or_notify_cancel():
            return
        task = loop.create_task(make(), context=context)

        def settle(done: asyncio.Task[Any]) -> None:
            if done.cancelled():
                future.set_exception(asyncio.CancelledError())
            elif done.exception() is not None:
                future.set_exception(done.exception())  # type: ignore[arg-type]
            else:
                future.set_result(done.result())

        task.add_done_callback(settle)

    loop.call_soon_threadsafe(start)
    return future


def run_coroutine_sync(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to its end from sync code: ``asyncio.run`` when this thread runs no event
    loop, else on the task loop (this thread waits)."""
    if not in_running_loop():
        import asyncio

        return asyncio.run(coroutine)
    if on_task_loop_thread():
        coroutine.close()
        raise RuntimeError("an async task's result was waited for on the task loop itself; await it instead")
    return submit_coroutine(lambda: coroutine, contextvars.copy_context()).result()
