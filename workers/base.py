"""What every worker does, whatever its infrastructure.

The broker delivers "run X is due" to ``BaseWorker.handle``. The worker claims the run through
the API (only one claimant wins; a loser drops the message), renders the pool's job template with
the deployment's and the run's job variables, and hands the job to its kind's ``execute``, which
starts the infrastructure and waits for it to exit. Whatever happens there, the run does not stay
stuck: an exit without a final state reported by the flow-run process marks it CRASHED with the
exit code, and an error starting the infrastructure marks it CRASHED with the reason.

A worker's name and its presence at the API -- the name claimed, the heartbeats, the cancellation
channel -- are ``workers/liveness.py``'s part of it (``Liveness``).
"""

from __future__ import annotations

import abc
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

from orchestrator import schemas
from orchestrator.client import Client
from orchestrator.errors import (
    Conflict,
    NotFound,
    OrchestratorError,
    ServerUnreachable,
    ServiceUnavailable,
)
from orchestrator.handoff import handoff_environment
from orchestrator.masking import secret_texts
from orchestrator.states import FINAL_STATES, StateType
from workers import redaction
from workers.events import WorkerEvents
from workers.infrastructure import Infrastructure, InfrastructureResult
from workers.liveness import Liveness
from workers.recovery import Action, Leftover, Recovery, decide
from workers.redaction import REDACTOR

log = logging.getLogger("orchestrator.worker")
T = TypeVar("T")


class BaseWorker(Liveness):
    type: ClassVar[str]
    # Env values {"secret_ref": {"file": path}} are read on the worker's host (process, Docker);
    # the Kubernetes worker passes {"secret_ref": {"name", "key"}} on as secretKeyRef instead.
    reads_secret_files: ClassVar[bool] = True

    def __init__(self, client: Client, *, pool: str, name: str | None = None, limit: int = 10,
                 heartbeat_seconds: float = 10.0, cancel_grace_seconds: float = 10.0, api_url: str,
                 api_key: str | None = None) -> None:
        super().__init__(name or f"{self.type}-{socket.gethostname()}-{os.getpid()}", heartbeat_seconds)
        self.client = client
        self.pool = pool
        self.limit = limit
        self.cancel_grace_seconds = cancel_grace_seconds
        self.api_url = api_url
        self.api_key = api_key
        # Set when shutdown begins (Celery's warm shutdown still waits for running tasks): from then
        # on a report the API cannot take is left to the reaper instead of being retried for an hour.
        self._shutting_down = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[uuid.UUID, Infrastructure] = {}
        self._handling: set[uuid.UUID] = set()  # runs whose delivery is being handled, claim to settle
        self._cancel_requested: set[uuid.UUID] = set()
        # Infrastructure events (workers/events.py): sent in the background, closed by ``stop``.
        self.events = WorkerEvents(self)
        redaction.install()  # the log lines of this process never show a held run's secrets

    # --- the contract of each kind -------------------------------------------------------------

    @abc.abstractmethod
    def start(self, claim: schemas.Claim, job: dict[str, Any]) -> Infrastructure:
        """Start the infrastructure for one claimed run from its rendered ``job`` configuration,
        with ``self.run_environment(run_id, claim)`` in its environment, and return at once with a handle.
        Raise ``InfrastructureError`` (with the reason) when it cannot be started."""

    @abc.abstractmethod
    def wait(self, infrastructure: Infrastructure) -> InfrastructureResult:
        """Block until the infrastructure has exited and say how it ended. Forward its output to
        the worker's console when the job asks for ``stream_output``."""

    @abc.abstractmethod
    def kill(self, infrastructure: Infrastructure, grace_seconds: float) -> None:
        """Stop the infrastructure: ask politely, then force it after ``grace_seconds``. Called from
        another thread while ``wait`` blocks; must be harmless when it has already exited."""

    # --- shared behaviour ----------------------------------------------------------------------

    def run_environment(self, run_id: uuid.UUID, claim: schemas.Claim | None = None) -> dict[str, str]:
        """Environment every flow-run process needs to find its run and the API; with the
        ``claim``, also the run and deployment it read (``orchestrator/handoff.py``), so the
        process does not fetch them again, and the run's own API key. Never the worker's key: a
        flow's code may read its environment, and the run's key can only report and read its run."""
        env = {"ORCH_FLOW_RUN_ID": str(run_id), "ORCH_API_URL": self.api_url, "ORCH_WORKER_NAME": self.name,
               "ORCH_WORKER_HEARTBEAT_SECONDS": str(self.heartbeat_seconds),
               "ORCH_CLIENT_TIMEOUT_SECONDS": str(self.client.timeout)}
        # Always set, empty without a run key: it replaces any ORCH_API_KEY the process inherits.
        env["ORCH_API_KEY"] = claim.api_key if claim is not None and claim.api_key else ""
        if claim is not None:
            env.update(handoff_environment(claim))
        return env

    def render_job(self, claim: schemas.Claim) -> dict[str, Any]:
        """The pool's template rendered with the deployment's and the run's job variables. The
        clear texts of the run's secret variables are registered with the redactor first, so no
        line this process writes shows them; a kind that ``reads_secret_files`` has the env
        values given as ``{"secret_ref": {"file": ...}}`` read here, on this host."""
        from job_templates.render import render
        from job_templates.secret_env import SecretRefError, resolve_files

        REDACTOR.add(claim.flow_run.id, secret_texts(claim.base_job_template.get("variables"),
                                                     claim.deployment.job_variables, claim.flow_run.job_variables))
        job = render(
            claim.base_job_template,
            claim.deployment.job_variables,
            claim.flow_run.job_variables,
            environ=os.environ,
        )
        if self.reads_secret_files and isinstance(job.get("env"), dict):
            try:
                job["env"], texts = resolve_files(job["env"])
            except SecretRefError as error:
                raise InfrastructureError(str(error)) from None
            REDACTOR.add(claim.flow_run.id, texts)
        return job

    def handle(self, run_id: uuid.UUID) -> None:
        """Process one delivery. Never raises: one bad run must not take the worker down."""
        # A second delivery of a run this worker is handling is dropped here, never claimed: the API
        # answers a claim this worker already holds with the claim again (a lost answer's repeat,
        # ``services/claims.py``), which must not start the run twice.
        with self._lock:
            if run_id in self._handling:
                log.info("run %s: already handled here; duplicate delivery dropped", run_id)
                return
            self._handling.add(run_id)
        try:
            self._handle(run_id)
        finally:
            with self._lock:
                self._handling.discard(run_id)

    def prepare(self) -> None:
        """A run was delivered and is about to be claimed: a kind may get ready to start it while the
        claim's round trip lasts (the process worker's fork server forks a child ahead). Never raises."""

    def _handle(self, run_id: uuid.UUID) -> None:
        if self.lost_name is not None:  # left for the name's holder (the dispatcher publishes it again)
            log.info("run %s not claimed: this worker lost its name", run_id)
            return
        self.prepare()
        try:
            claim = self.client.claim_flow_run(run_id, self.name, self.pool)
        except (Conflict, NotFound) as error:
            log.info("run %s not claimed: %s", run_id, error)
            return
        except OrchestratorError as error:
            log.warning("claim of run %s failed: %s", run_id, error)
            return
        log.info("claimed run %s (%s)", run_id, claim.flow_run.name)
        self.events.remember(claim)
        try:
            infrastructure = self.start(claim, self.render_job(claim))
        except Exception as error:  # noqa: BLE001
            log.exception("run %s: infrastructure failed", run_id)
            self._finish(run_id, StateType.CRASHED, f"infrastructure could not start: {type(error).__name__}: {error}")
            self.events.forget(run_id)
            REDACTOR.forget(run_id)
            return
        self._track(run_id, infrastructure)
        self._report_infrastructure(run_id, infrastructure)
        self._wait_and_settle(run_id, infrastructure)

    # --- watching infrastructure -------------------------------------------------------------------

    def adopt(self, run_id: uuid.UUID, infrastructure: Infrastructure) -> threading.Thread:
        """Watch infrastructure this worker did not start in this life (found by ``recover``) exactly
        as if it had: cancellations reach it, and its exit settles the run. Returns the watching thread."""
        self._track(run_id, infrastructure)
        thread = threading.Thread(target=self._wait_and_settle, args=(run_id, infrastructure), daemon=True,
                                  name=f"adopted-{run_id}")
        thread.start()
        return thread

    def _track(self, run_id: uuid.UUID, infrastructure: Infrastructure) -> None:
        with self._lock:
            self._running[run_id] = infrastructure
            cancel_now = run_id in self._cancel_requested
        if cancel_now:
            self._kill_async(run_id, infrastructure)

    def _wait_and_settle(self, run_id: uuid.UUID, infrastructure: Infrastructure) -> None:
        try:
            result = self.wait(infrastructure)
        except Exception as error:  # noqa: BLE001
            log.exception("run %s: lost track of its infrastructure", run_id)
            result = InfrastructureResult(exit_code=-1, crash_reason=f"worker lost its infrastructure: {error}")
        finally:
            with self._lock:
                self._running.pop(run_id, None)
        self.settle(run_id, result)
        self.events.forget(run_id)
        REDACTOR.forget(run_id)
        with self._lock:
            idle = not self._running and not self._handling - {run_id}
        if idle:  # its last run has ended: the run's events go now, not into the next run's way
            self.events.send_now()

    # --- restart recovery: the policy of workers/recovery.py, the kind's leftovers -------------------

    def leftovers(self) -> Iterable[Leftover]:
        """Yield the infrastructure a previous life of this worker (same pool, same name) left
        behind, found by the labels ``start`` put on it. The process worker has none: its flow-run
        processes report for themselves, and the reaper ends the runs of those that die unheard."""
        return ()

    def clean_up(self, leftover: Leftover) -> None:
        """Dispose of a leftover nothing will read again: stop it if it still runs. A kind with
        more to undo (Docker's ``auto_remove``) extends this."""
        if leftover.running:
            self.kill(leftover.infrastructure, self.cancel_grace_seconds)

    def recover(self) -> Recovery:
        """Settle every leftover by its run's state (``workers.recovery.decide``): clean up the
        infrastructure of runs that are final or handed on, adopt what still runs for a live run,
        and end the rest as the old worker would have. Called once at start, before serving; give
        the worker a stable ``--name`` so that a restarted worker recognises its own."""
        return self.recover_from(self.leftovers())

    def recover_from(self, leftovers: Iterable[Leftover]) -> Recovery:
        """``recover`` over the given leftovers (a kind that looks in more places passes its own)."""
        recovery = Recovery()
        for leftover in leftovers:
            run_id, infrastructure = leftover.run_id, leftover.infrastructure
            try:
                run = self.client.read_flow_run(run_id)
            except OrchestratorError as error:  # left for the next restart, or the reaper
                log.warning("recover: run %s of %s: %s", run_id, infrastructure.infrastructure_id, error)
                continue
            action = decide(run.state.type, run.worker_name, self.name, leftover.running)
            log.info("recover: run %s is %s (held by %s), %s %s: %s", run_id, run.state.type, run.worker_name,
                     "running" if leftover.running else "exited", infrastructure.infrastructure_id, action.value)
            if action is Action.CLEAN_UP:
                self.clean_up(leftover)
                recovery.cleaned.append(run_id)
            elif action is Action.ADOPT:
                recovery.threads.append(self.adopt(run_id, infrastructure))
                recovery.adopted.append(run_id)
            elif leftover.running:  # CANCELLING: the cancellation was never carried out; do it now
                self.clean_up(leftover)
                self.settle(run_id, InfrastructureResult(-1, "stopped on recovery: the run was being cancelled"))
                recovery.finished.append(run_id)
            else:  # exited unwatched: its exit decides, as if this worker had seen it
                self.settle(run_id, self.wait(infrastructure))
                self.events.forget(run_id)
                recovery.finished.append(run_id)
        return recovery

    def _report_infrastructure(self, run_id: uuid.UUID, infrastructure: Infrastructure) -> None:
        try:
            self.client.report_infrastructure(run_id, infrastructure.infrastructure_id)
        except OrchestratorError as error:  # informational: the run goes on
            log.warning("run %s: could not report its infrastructure id: %s", run_id, error)

    def running(self) -> list[uuid.UUID]:
        """Runs whose infrastructure this worker is watching now."""
        with self._lock:
            return list(self._running)

    def settle(self, run_id: uuid.UUID, result: InfrastructureResult) -> None:
        """The run's infrastructure has exited: end the run if its flow-run process did not.
        Outlasts an API or database outage: while this worker lives, the reaper leaves the run to it."""
        with self._lock:
            self._cancel_requested.discard(run_id)
        if result.settled:  # its process said so: one request fewer per run
            return
        try:
            run = _outlasting_outages(lambda: self.client.read_flow_run(run_id), self._shutting_down)
        except OrchestratorError as error:
            log.warning("run %s: cannot read its state after exit: %s", run_id, error)
            return
        if run.state.type in FINAL_STATES or run.worker_name != self.name:
            return  # ended properly, or recovered and given to another worker meanwhile
        if run.state.type == StateType.CANCELLING:
            self._finish(run_id, StateType.CANCELLED, "cancelled: infrastructure stopped")
            return
        if result.crash_reason:
            self._finish(run_id, StateType.CRASHED, result.crash_reason)
            return
        reason = f"flow run process exited with code {result.exit_code} without reporting a final state"
        if result.detail:
            reason += f": {result.detail}"
        self._finish(run_id, StateType.CRASHED, reason)

    def _finish(self, run_id: uuid.UUID, state: StateType, message: str) -> None:
        message = REDACTOR.scrub(message)  # an error text may quote what the run was started with
        try:
            _outlasting_outages(
                lambda: self.client.set_flow_run_state(run_id, state, message=message, worker_name=self.name),
                self._shutting_down)
        except OrchestratorError as error:
            log.warning("run %s: could not report %s: %s", run_id, state, error)

    # --- cancellation ----------------------------------------------------------------------------

    def cancel(self, run_id: uuid.UUID) -> None:
        """Stop the run's infrastructure (in the background); the state becomes CANCELLED when it
        has exited. A run whose infrastructure is still starting is stopped as soon as it exists."""
        with self._lock:
            self._cancel_requested.add(run_id)
            infrastructure = self._running.get(run_id)
        if infrastructure is not None:
            self._kill_async(run_id, infrastructure)

    def _kill_async(self, run_id: uuid.UUID, infrastructure: Infrastructure) -> None:
        log.info("run %s: cancelling, stopping %s", run_id, infrastructure.infrastructure_id)

        def kill() -> None:
            try:
                self.kill(infrastructure, self.cancel_grace_seconds)
            except Exception:  # noqa: BLE001 - the reaper still ends the run after a timeout
                log.exception("run %s: could not stop its infrastructure", run_id)

        threading.Thread(target=kill, name=f"kill-{run_id}", daemon=True).start()

    # --- stopping --------------------------------------------------------------------------------

    def shutting_down(self) -> None:
        """Shutdown has begun: keep heartbeating for the runs still held, but stop waiting out API
        outages (the reaper settles what this worker cannot report)."""
        self._shutting_down.set()
        self.client.stop_retrying()

    def stop(self) -> None:
        self.shutting_down()
        self._stop.set()
        self.events.close()  # the last events, bounded: a worker stopping in an API outage loses them


OUTAGE_PATIENCE_SECONDS = 3600.0


def _outlasting_outages(call: Callable[[], T], give_up: threading.Event) -> T:
    """Retry ``call`` while the API is unreachable or answers 503, for up to an hour or until
    ``give_up`` is set (the worker is shutting down)."""
    deadline = time.monotonic() + OUTAGE_PATIENCE_SECONDS
    delay = 0.5
    while True:
        try:
            return call()
        except (ServerUnreachable, ServiceUnavailable):
            if time.monotonic() >= deadline or give_up.wait(delay):
                raise
            delay = min(delay * 2, 10.0)


class InfrastructureError(OrchestratorError):
    """The infrastructure for a run could not be started."""
