"""A flow called directly is a flow run, as in Prefect 3, when an API is configured
(``ORCH_API_URL`` in the environment, the switch of ``sdk/standalone.py``): the program creates
the run (``POST /api/flow_runs``: no deployment, RUNNING at once, ``server/services/direct_runs.py``),
keeps its lease as a flow-run process does (``run_lease.RunLease``: a killed program's run is
ended CRASHED by the reaper), ships its task runs under it (``TaskRunShipper``) and the run
loggers' records to its logs (``run_logs``), and reports each retry (AwaitingRetry, then RUNNING)
and the end: COMPLETED with the result when it is small JSON, FAILED with the error, CRASHED for a
``KeyboardInterrupt``, ``SystemExit`` or a cancelled coroutine (Prefect's messages).

A flow called inside a tracked run (a deployment's, in its flow-run process, or another directly
called flow's) is a run of its own too, a subflow run, as in Prefect: a task run named after the
flow stands for the call in the caller's run (``ParentTask``), the child run points at it
(``parent_task_run_id``, ``POST /api/flow_runs/{id}/subflow_runs``), its logs and task runs are its
own, and that task run ends in the child's final state (CANCELLED with its caller's process).

Loaded at the first direct call with an API configured: ``from orchestrator import flow`` and a
call without ``ORCH_API_URL`` never import it. The network never fails the flow: the API
unreachable or refusing, the flow runs unrecorded after one line on stderr; a report that fails
later is said on stderr and the flow goes on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from orchestrator import schemas, storable
from orchestrator.client import Client
from orchestrator.sdk import running
from orchestrator.sdk.run_lease import RunLease
from orchestrator.sdk.run_logs import RUN_ATTRIBUTE, LogShipper, ShipHandler
from orchestrator.sdk.task_runs import TaskRunRecord, TaskRunShipper
from orchestrator.states import AWAITING_RETRY, FINAL_STATES, StateType

if TYPE_CHECKING:
    from orchestrator.settings import Settings

PAUSE_SECONDS = 60.0  # after a run could not be created, direct calls run unrecorded this long
_paused_until = 0.0  # monotonic
_said = False  # the current stretch of failures was said on stderr
REPORT_RETRY_SECONDS = 10.0  # a report rides out an API restart this long, no longer: the flow waits on it
MESSAGE_LIMIT = 4000
# Prefect's words for a run ended by something other than the flow's own error.
_CRASH_MESSAGES: tuple[tuple[type[BaseException], str], ...] = (
    (KeyboardInterrupt, "Execution was aborted by an interrupt signal."),
    (SystemExit, "Execution was aborted by Python system exit call."),
)
CANCELLED_MESSAGE = "Execution was cancelled by the runtime environment."
PARENT_CANCELLED_MESSAGE = "The parent flow run was cancelled."  # a subflow run stopped with its caller's
flow_logger = logging.getLogger(running.FLOW_LOGGER)


def _say(text: str) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        print(f"[orchestrator] {text}", file=sys.__stderr__, flush=True)


def start(flow_name: str, parameters: dict[str, Any], *, name: str | None,
          version: Callable[[], str] | None, caller: running.FlowContext | None = None) -> DirectRun | None:
    """The run of a call of flow ``flow_name``, named ``name`` (``flow_run_name``'s, or None for the
    server's) and versioned by ``version()``, created in the API; None when it cannot be. A failure is said on
    stderr once, and the calls of the next ``PAUSE_SECONDS`` run unrecorded without asking (an
    API that does not answer would hold each call for the client's timeout). ``caller``: the
    tracked run's flow this one is called in (a subflow run), None for a run of its own."""
    global _paused_until, _said
    if time.monotonic() < _paused_until:
        return None
    parent = ParentTask(caller, flow_name) if caller is not None else None
    try:
        settings = _settings()
        creator = Client.from_settings(settings)
        try:
            fields = {"flow_name": storable.escaped(flow_name[:255]),
                      "name": storable.escaped(name[:255]) if name else None,
                      "parameters": _storable_parameters(parameters),
                      "flow_version": version()[:255] if version else None}
            if parent is None:
                created = creator.create_direct_flow_run(schemas.DirectFlowRunCreate(**fields))
            else:
                created = creator.create_subflow_run(parent.run_id, schemas.SubflowRunCreate(
                    **fields, parent_task_run_id=parent.record.id))
        finally:
            creator.close()
    except Exception as error:  # noqa: BLE001 - the flow runs all the same, unrecorded
        if not _said:
            _say(f"flow '{flow_name}' runs unrecorded: {error} (direct calls of the next {PAUSE_SECONDS:g} s "
                 "are not recorded either)")
        _said = True
        _paused_until = time.monotonic() + PAUSE_SECONDS
        return None
    _said = False
    key = created.api_key or (settings.api_key.get_secret_value() if settings.api_key else None)

    def client() -> Client:
        return Client(settings.api_url, api_key=key, timeout=settings.client_timeout_seconds,
                      retry_seconds=REPORT_RETRY_SECONDS)

    if parent is not None:
        parent.started(created.flow_run)
    return DirectRun(client(), client(), created.flow_run, flow_name,
                     heartbeat_seconds=settings.worker_heartbeat_seconds, parent=parent)


@functools.cache
def _settings() -> Settings:
    """Read once per process, as the switch is (``standalone.api_configured``)."""
    from orchestrator.settings import Settings

    return Settings()


def _storable_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """The call's parameters as the run keeps them: each value that is storable JSON as itself,
    any other as its ``repr`` (an object, a dataframe), as Prefect shows what it cannot serialize."""
    kept: dict[str, Any] = {}
    for name, value in parameters.items():
        stored, note = storable.stored_result(value)
        kept[name] = stored if note is None else storable.escaped(repr(value)[:1000])
    return kept


class ParentTask:
    """The task run standing for a subflow call in its caller's run, as Prefect's: named after the
    flow as a task run of it would be, sent with the caller's task runs, RUNNING while the subflow
    run is, and ending in its final state."""

    def __init__(self, caller: running.FlowContext, flow_name: str) -> None:
        assert caller.flow_run_id is not None and caller.shipper is not None, "a subflow of a tracked run"
        self.run_id: uuid.UUID = caller.flow_run_id
        self.shipper = caller.shipper
        self.record = TaskRunRecord(name=f"{flow_name}-{caller.next_index(flow_name)}", task_name=flow_name,
                                    version=None, tags=[], max_retries=0)

    def started(self, child: schemas.FlowRun) -> None:
        """The subflow run exists: the caller's run shows the call (sent only then: a run that could
        not be created leaves the call part of its caller's run, as without an API)."""
        self.record.running()
        self.shipper.put(self.record)
        flow_logger.info("Created subflow run '%s' for flow '%s' (id %s)", child.name, self.record.task_name,
                         child.id, extra={RUN_ATTRIBUTE: self.run_id})

    def finished(self, state: StateType, message: str | None) -> None:
        self.record.finished(state.value, state.title(), message)
        self.shipper.put(self.record)


class DirectRun:
    """The API run of one direct call, from its creation to its final report (``close``)."""

    def __init__(self, client: Client, lease_client: Client, run: schemas.FlowRun, flow_name: str, *,
                 heartbeat_seconds: float, parent: ParentTask | None = None) -> None:
        """``lease_client``: the heartbeat thread's own, never closed under its held request (the
        thread ends with that request's answer, after ``close``; the program need not wait).
        ``parent``: a subflow run's task run in its caller's run."""
        self.client = client
        self.parent = parent
        self.run = run  # what the flow's hooks receive, as in the flow-run process
        self.flow_run_id: uuid.UUID = run.id
        self.logs = LogShipper(client, run.id)
        self.shipper = TaskRunShipper(client, run.id)
        self.lease = RunLease(lease_client, run.id, heartbeat_seconds, self._on_answer)
        self._handler = ShipHandler(self.logs)
        self._finishing = False  # a final state is being reported: a heartbeat saying so is not news
        self._told = False  # the run ended without this program: said once
        self._failing = False  # a report failed: said once
        self.logs.start()
        self.shipper.start()
        self.lease.start()
        for name in (running.FLOW_LOGGER, running.TASK_LOGGER):
            logging.getLogger(name).addHandler(self._handler)
        kind = "subflow run" if parent is not None else "flow run"
        self._log(logging.INFO, "Beginning %s '%s' for flow '%s' (id %s)", kind, run.name, flow_name, run.id)

    def _log(self, level: int, message: str, *args: Any) -> None:
        """A line of this run's own, shipped to its logs whichever flow's context is current (a
        subflow run's start and end are logged in its caller's)."""
        flow_logger.log(level, message, *args, extra={RUN_ATTRIBUTE: self.flow_run_id})

    @property
    def finishing(self) -> bool:
        """A final state is being (or was) reported."""
        return self._finishing

    def _on_answer(self, run: schemas.FlowRun) -> None:
        if self._told or self._finishing:
            return
        if run.state.type == StateType.CANCELLING or run.state.type in FINAL_STATES:
            self._told = True
            _say(f"flow run {run.id} is {run.state.name} without this program (cancelled from outside?); "
                 "the flow goes on, its outcome will not be recorded")

    # --- the reports ---------------------------------------------------------------------------

    def running(self) -> None:
        """An attempt after the first starts (the run was AwaitingRetry)."""
        self._report(lambda: self.client.set_flow_run_running(self.flow_run_id))

    def retrying(self, attempt: int, attempts: int, error: BaseException, delay: float) -> None:
        message = _message(error)
        self._log(logging.ERROR, "Encountered exception during execution (attempt %d of %d):\n%s", attempt,
                  attempts, _traceback(error))
        when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay)
        self._flush()
        self._report(lambda: self.client.set_flow_run_state(
            self.flow_run_id, StateType.SCHEDULED, name=AWAITING_RETRY, scheduled_time=when,
            message=f"attempt {attempt} failed: {message}; retrying in {delay:g}s"))

    def completed(self, value: Any) -> None:
        result, note = storable.stored_result(value)
        self._final(StateType.COMPLETED, note, result)

    def failed(self, error: BaseException) -> None:
        self._log(logging.ERROR, "Encountered exception during execution:\n%s", _traceback(error))
        self._final(StateType.FAILED, _message(error))

    def crashed(self, error: BaseException) -> None:
        if self.parent is not None and running.cancel_requested():  # its caller's process is being cancelled
            self._final(StateType.CANCELLED, PARENT_CANCELLED_MESSAGE)
            return
        message = next((text for kind, text in _CRASH_MESSAGES if isinstance(error, kind)), CANCELLED_MESSAGE)
        self._log(logging.ERROR, "Crash detected! %s", message)
        self._final(StateType.CRASHED, message)

    def _final(self, state: StateType, message: str | None, result: Any = None) -> None:
        self._finishing = True
        self._log(logging.INFO, "Finished in state %s", state.title())
        self._flush()  # the task runs' and the logs' before the run's state, as the flow-run process does
        self._report(lambda: self.client.set_flow_run_state(self.flow_run_id, state, message=message,
                                                            result=result))
        if self.parent is not None:
            self.parent.finished(state, message)

    def _flush(self) -> None:
        self.shipper.flush()
        self.logs.flush()

    def _report(self, send: Any) -> None:
        try:
            send()
        except Exception as error:  # noqa: BLE001 - recording must never fail the flow
            if not self._failing:
                _say(f"could not record the state of flow run {self.flow_run_id}: {error}")
            self._failing = True

    def close(self) -> None:
        """After the final report: the lease ends, what is queued is sent."""
        for name in (running.FLOW_LOGGER, running.TASK_LOGGER):
            logging.getLogger(name).removeHandler(self._handler)
        self.lease.stop()
        self.shipper.stop()
        self.logs.stop()
        self.client.close()


@contextlib.contextmanager
def recorded_until_the_end(run: DirectRun) -> Iterator[DirectRun]:
    """Around the whole call: a ``BaseException`` that is no error of the flow's (an interrupt, an
    exit, a cancelled coroutine) ends the run CRASHED; the flow's own errors are reported by the
    retry loop, before its ``on_failure`` hooks."""
    try:
        yield run
    except Exception:
        raise
    except BaseException as error:
        if not run.finishing:
            run.crashed(error)
        raise
    finally:
        run.close()


def _message(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:MESSAGE_LIMIT]


def _traceback(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))
