"""The flow-run process: ``python -m orchestrator.engine`` with ``ORCH_FLOW_RUN_ID`` set.

It takes the run and its deployment from its worker's claim (``ORCH_FLOW_RUN_CLAIM``,
``orchestrator/handoff.py``), or fetches them when started without one. It loads the deployment's entrypoint, validates and coerces the parameters, reports RUNNING,
calls the flow, and reports COMPLETED (with a small JSON result) or FAILED (with the exception's
type and message). What the flow prints and logs reaches the API in batches. Any exit without a
final report is noticed by the worker that started this process.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import gc
import logging
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from orchestrator import schemas, storable
from orchestrator.client import Client
from orchestrator.emitting import EXIT_FLUSH_SECONDS, flush_events
from orchestrator.errors import (
    InvalidInput,
    InvalidTransition,
    OrchestratorError,
    ServerUnreachable,
    ServiceUnavailable,
)
from orchestrator.handoff import CLAIM_VARIABLE, Handoff, read_handoff
from orchestrator.runtime.entrypoint import EntrypointError, load_entrypoint
from orchestrator.runtime.logs import LogShipper, capture_output
from orchestrator.runtime.output import console_error, sync_output
from orchestrator.runtime.standby import take_ready
from orchestrator.sdk.flow_calls import cancel_running
from orchestrator.sdk.run_lease import RunLease
from orchestrator.sdk.task_runs import TaskRunShipper
from orchestrator.states import FINAL_STATES, StateType

log = logging.getLogger("orchestrator.engine")
FINAL_REPORT_PATIENCE_SECONDS = 3600.0
EXIT_TERMINATED = 128 + signal.SIGTERM  # what a shell reports for a process SIGTERM ended


class Terminated(BaseException):
    """SIGTERM from the worker (cancellation): stop without reporting a result of our own."""


def _on_sigterm(_signum: int, _frame: Any) -> None:
    if cancel_running():  # an async flow: its coroutine is cancelled, and the run ends as Terminated
        return
    raise Terminated()


class RunProcess:
    """One flow run inside this process: its reports, heartbeats and in-process retries."""

    def __init__(self, client: Client, run_id: uuid.UUID, shipper: LogShipper, *, worker_name: str | None,
                 heartbeat_seconds: float, task_runs: TaskRunShipper | None = None,
                 handoff: Handoff | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self.handoff = handoff  # the run and deployment as the worker's claim read them, if handed over
        self.shipper = shipper
        self.task_runs = task_runs
        self.worker_name = worker_name  # reports apply only while this worker holds the run
        self.heartbeat_seconds = heartbeat_seconds
        self.cancelled = threading.Event()
        self._finishing = False  # a final state is being reported by this process
        self.lease = RunLease(client, run_id, heartbeat_seconds, self._on_heartbeat,
                              infrastructure_id=own_infrastructure_id())

    def report(self, state: StateType, message: str | None = None, result: Any = None, *,
               name: str | None = None, scheduled_time: dt.datetime | None = None,
               flow_version: str | None = None, flow_run_name: str | None = None,
               on_sent: Callable[[], object] | None = None) -> None:
        """Report a state, shipping every pending log line first, so whoever sees the state also
        sees all the logs that came before it. ``on_sent`` (RUNNING only): called while the report's
        answer is awaited."""
        if state in FINAL_STATES:
            self._finishing = True  # a heartbeat answering with this state is not news
        sync_output(final=state in FINAL_STATES)  # every byte the flow wrote so far, read and queued
        self.shipper.flush()
        if self.task_runs is not None:
            self.task_runs.flush()  # the task runs' states too, before the run's
        flush_events(EXIT_FLUSH_SECONDS)  # and the events the flow emitted (bounded: an outage only delays them)
        # A final state is the run's true outcome: outlast an API or database outage (up to an
        # hour) rather than exit and have it recorded as a crash.
        patience = FINAL_REPORT_PATIENCE_SECONDS if state in FINAL_STATES else self.client.retry_seconds
        deadline = time.monotonic() + patience
        while True:
            try:
                if state == StateType.RUNNING:  # with what was loaded: the flow's version, the run's name
                    run = self.client.set_flow_run_running(
                        self.run_id, worker_name=self.worker_name, on_sent=on_sent, flow_version=flow_version,
                        flow_run_name=flow_run_name, infrastructure_id=self.lease.infrastructure_id)
                    if run.infrastructure_id is not None:  # where this process runs, recorded
                        self.lease.kept()
                    return
                self.client.set_flow_run_state(self.run_id, state, message=message, result=result, name=name,
                                               scheduled_time=scheduled_time, worker_name=self.worker_name)
                return
            except (ServerUnreachable, ServiceUnavailable):
                if time.monotonic() >= deadline:
                    raise
            except InvalidTransition:
                if self._already_in(state, name):
                    return
                raise

    def _already_in(self, state: StateType, name: str | None) -> bool:
        """Whether a refused report had in fact taken effect: the client sends a report again when
        its connection broke before the answer came (the server, or one replica of it, died after
        its commit), and the repeat is refused as a move to the state the run is already in. The
        run is then in ``state`` and still held by this process's worker: the report is done. (A
        worker starts one flow-run process per run it holds, so no other process made it.)"""
        try:
            run = self.client.read_flow_run(self.run_id)
        except OrchestratorError:
            return False
        return (run.state.type == state and (name is None or run.state.name == name)
                and (self.worker_name is None or run.worker_name == self.worker_name))

    # --- liveness: the connection lease (``sdk/run_lease.py``) -----------------------------------------

    def open_lease(self) -> None:
        self.lease.open(before_running=True)  # the RUNNING report says where this process runs

    def start_heartbeat(self) -> None:
        self.lease.start()

    def stop_heartbeat(self) -> None:
        self.lease.stop()

    def _on_heartbeat(self, run: schemas.FlowRun) -> None:
        if run.state.type == StateType.CANCELLING:
            # The worker should have stopped us already; it may be gone, so stop ourselves.
            self.cancelled.set()
            try:
                self.report(StateType.CANCELLED, "cancelled; stopped by the flow-run process itself")
            finally:
                os._exit(1)
        if run.state.type in FINAL_STATES and not self._finishing:
            # The run ended without us: cancelled while its worker was gone (the reaper may
            # settle CANCELLING before this heartbeat's answer comes), or judged lost. Going on
            # would only run a flow whose outcome can no longer be recorded: stop, logs first.
            self.cancelled.set()
            log.warning("the run is %s without this process; stopping", run.state.name)
            try:
                sync_output(final=True)
                self.shipper.flush()
                flush_events(EXIT_FLUSH_SECONDS)
            finally:
                os._exit(1)

    # --- the run -----------------------------------------------------------------------------------

    def execute(self) -> int:
        """Run the flow run to a final state. Returns the process exit code."""
        from orchestrator.parameters import call_arguments, coerce_parameters
        from orchestrator.sdk import flow_calls, running
        from orchestrator.sdk.flows import Flow

        loaded = self._run_and_deployment()
        if loaded is None:
            self.report(StateType.FAILED, "flow run has no deployment")
            return 1
        run, deployment = loaded
        if deployment.pull_steps:  # fetch the code first; the entrypoint is then found where the steps leave us
            # Imported here, not by the fork server every run is forked from: only a deployment with
            # pull steps runs them (their subprocess plumbing, ~0.2 MB there), and such a run spends far
            # more on its steps' commands than on the import.
            from orchestrator.runtime.pull_steps import PullStepError, run_pull_steps

            try:
                run_pull_steps(deployment.pull_steps)
            except PullStepError as error:
                log.error("%s", error)
                self.report(StateType.FAILED, str(error))
                return 1
            deployment = deployment.model_copy(update={"path": None})
        if deployment.path and Path(deployment.path).is_dir():
            os.chdir(deployment.path)
        try:
            target = load_entrypoint(deployment.entrypoint, deployment.path)
            flow = target if isinstance(target, Flow) else Flow(target)  # a plain function runs as a flow
            fn = flow.fn
            values = coerce_parameters(fn, run.parameters) if flow.validate_parameters else dict(run.parameters)
            args, kwargs = call_arguments(fn, values)
        except (EntrypointError, InvalidInput) as error:
            log.error("%s", error)
            self.report(StateType.FAILED, str(error))
            return 1
        retries = flow.retries
        attempt = 0
        while True:
            attempt += 1
            if not self.lease.is_open():
                self.start_heartbeat()
            try:  # the heartbeat thread starts while the report's answer is awaited, off both paths
                self.report(StateType.RUNNING, flow_version=flow.run_version(), on_sent=self.start_heartbeat,
                            flow_run_name=flow_calls.run_name(flow, run.parameters))
            except InvalidTransition as error:  # cancelled or given to another worker meanwhile
                log.warning("not starting: %s", error)
                return 0
            self.start_heartbeat()  # started already, unless the report took a way that sent nothing
            try:
                value = flow_calls.run_in_process(flow, args, kwargs, run, flow_run_id=self.run_id,
                                                  shipper=self.task_runs, cancelled=Terminated)
            except Terminated:
                cancelling = running.State("CANCELLING", "Cancelling")
                running.call_hooks(flow.hooks["on_cancellation"], flow, run, cancelling)
                raise
            except BaseException as error:  # noqa: BLE001 - the flow's failure is the run's result
                log.error("flow run failed (attempt %d of %d):\n%s", attempt, retries + 1, traceback.format_exc())
                message = f"{type(error).__name__}: {error}"[:4000]
                if attempt > retries:
                    self.report(StateType.FAILED, message)
                    running.call_hooks(flow.hooks["on_failure"], flow, run, running.failed(error))
                    return 1
                delay = running.retry_delay(flow.retry_delay_seconds, retries, attempt)
                when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay)
                self.report(StateType.SCHEDULED, f"attempt {attempt} failed: {message}; retrying in {delay:g}s",
                            name="AwaitingRetry", scheduled_time=when)
                if self.cancelled.wait(delay):
                    return 1
                continue
            result, note = storable.stored_result(value)
            self.report(StateType.COMPLETED, note, result)
            running.call_hooks(flow.hooks["on_completion"], flow, run, running.completed(value))
            return 0


    def _run_and_deployment(self) -> tuple[schemas.FlowRun, schemas.Deployment] | None:
        """From the claim's hand-off; fetched only without one (started by hand, or too large to
        hand over). None: the run has no deployment to load."""
        if self.handoff is not None:
            return self.handoff.flow_run, self.handoff.deployment
        run = self.client.read_flow_run(self.run_id)
        if run.deployment_id is None:
            return None
        return run, self.client.read_deployment(run.deployment_id)


INFRASTRUCTURE_PREFIX = "ORCH_INFRASTRUCTURE_ID_PREFIX"  # set by a worker whose runs say where they run


def own_infrastructure_id() -> str | None:
    """Where this process runs, when its worker asked it to say so itself (a process worker's
    forked flow-run process: ``process:<host>:`` and this pid; ``workers/process.py``): sent with
    the RUNNING report (``report``), in place of the worker's infrastructure report. None otherwise."""
    prefix = os.environ.pop(INFRASTRUCTURE_PREFIX, None)  # not for the flow's own subprocesses
    return f"{prefix}{os.getpid()}" if prefix else None


def _connection_settings() -> tuple[str, str | None, float, float]:
    """API URL, key, heartbeat period and timeout. Workers always pass these in the environment
    (``BaseWorker.run_environment``), so the common path skips parsing every setting with
    pydantic-settings: that import alone costs a flow run ~0.1 s of start latency."""
    names = ("ORCH_API_URL", "ORCH_WORKER_HEARTBEAT_SECONDS", "ORCH_CLIENT_TIMEOUT_SECONDS")
    if all(name in os.environ for name in names):
        return (os.environ["ORCH_API_URL"], os.environ.get("ORCH_API_KEY") or None,
                float(os.environ["ORCH_WORKER_HEARTBEAT_SECONDS"]), float(os.environ["ORCH_CLIENT_TIMEOUT_SECONDS"]))
    from orchestrator.settings import Settings

    settings = Settings()
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return settings.api_url, key, settings.worker_heartbeat_seconds, settings.client_timeout_seconds


def _say(text: str) -> None:
    """To stderr, if it is still there (it is a pipe to the worker, which may be gone)."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


def main() -> int:
    api_url, api_key, heartbeat_seconds, timeout = _connection_settings()
    raw_id = os.environ.get("ORCH_FLOW_RUN_ID", "")
    ready = take_ready()  # a standby's output capture, started before its order
    try:
        run_id = uuid.UUID(raw_id)
    except ValueError:
        if ready is not None:
            ready[1].stop()
        print(f"ORCH_FLOW_RUN_ID must be a flow run id, got {raw_id!r}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ride out an API or database restart for a while rather than crash the run.
    client = Client(api_url, api_key=api_key, timeout=timeout, retry_seconds=120.0)
    if ready is not None:
        shipper, output = ready
        shipper.client, shipper.run_id = client, run_id
    else:
        shipper, output = LogShipper(client, run_id, say=console_error), None
    shipper.start()
    task_runs = TaskRunShipper(client, run_id)
    task_runs.start()
    handoff = read_handoff(os.environ, run_id)
    os.environ.pop(CLAIM_VARIABLE, None)  # read once; not for the flow's own subprocesses to carry
    process = RunProcess(client, run_id, shipper, worker_name=os.environ.get("ORCH_WORKER_NAME") or None,
                         heartbeat_seconds=heartbeat_seconds, task_runs=task_runs, handoff=handoff)
    process.open_lease()
    try:
        with capture_output(shipper, output):
            return process.execute()
    except Terminated:
        _say(f"flow run {run_id}: terminated")
        return EXIT_TERMINATED
    except OrchestratorError as error:
        _say(f"flow run {run_id}: {error}")
        return 1
    finally:
        process.stop_heartbeat()
        task_runs.stop()
        shipper.stop()
        client.close()


def end_process(code: int, leave: Callable[[int], NoReturn] = sys.exit) -> NoReturn:
    """Exit once ``main`` has returned: the outcome is reported and acknowledged by the API (after
    a SIGTERM, left to the worker) and every log line is shipped.

    After a normal end, the interpreter's own exit: it waits for the non-daemon threads the flow
    left running and runs the atexit handlers (among them ``logging.shutdown``), as any Python
    program's end would. ``gc.freeze()`` first: what is alive now is freed by the process's end,
    not collected object by object by the teardown. Measured with ``bench/engine_exit.py`` (no-op
    run, main() returned -> process reaped, median of 21, 2 shared cores): 8.4 ms this way, 38.2 ms
    with a plain ``sys.exit``, 3.8 ms with the private ``threading._shutdown()`` +
    ``atexit._run_exitfuncs()`` + ``os._exit`` used before: +4.6 ms, under issue 15's 20 ms bar.
    A SIGTERM while it waits for the flow's threads stops the wait (the handlers still run, as
    before); the interpreter reports such an exception as unraisable, which this one is not.

    After a SIGTERM (``EXIT_TERMINATED``) the threads the flow started must not be waited for: they
    stop with the run, as they would when the worker's SIGKILL follows. No public way runs the
    atexit handlers without first waiting for every non-daemon thread (a flow's may never end, and
    the worker SIGKILLs after ``ORCH_WORKER_CANCEL_GRACE_SECONDS``, 10 s), so this one path keeps
    ``atexit._run_exitfuncs()``, then flushes and leaves with ``os._exit``."""
    if code != EXIT_TERMINATED:
        sys.unraisablehook = _ignore_terminated
        gc.freeze()
        leave(code)  # a forked child's ``leave`` skips the module teardown: see ``forkserver.leave``
    try:
        with contextlib.suppress(Terminated):
            atexit._run_exitfuncs()  # the reason is in the docstring
            logging.shutdown()
    finally:
        flush_and_exit(code)


def flush_and_exit(code: int) -> NoReturn:
    """Flush the standard streams and leave at once with ``code`` (no interpreter teardown)."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(BaseException):  # a closed stream, or a signal now: exit all the same
            if stream is not None:
                stream.flush()
    os._exit(code)


def _ignore_terminated(unraisable: Any) -> None:
    """``sys.unraisablehook`` while exiting: a SIGTERM that stopped the wait for the flow's threads
    (or came during an atexit handler) is no error to report."""
    if not isinstance(unraisable.exc_value, Terminated):
        sys.__unraisablehook__(unraisable)


def run_as_main(leave: Callable[[int], NoReturn] = sys.exit) -> NoReturn:
    """The process's whole life, for ``python -m orchestrator.engine`` (``orchestrator/engine.py``)
    and for each flow-run process the fork server forks (``leave``: how a normal end exits)."""
    try:
        exit_code = main()
    except Terminated:  # a SIGTERM that came while main was cleaning up
        exit_code = EXIT_TERMINATED
    end_process(exit_code, leave)
