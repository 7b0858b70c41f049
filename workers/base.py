"""What every worker does, whatever its infrastructure.

The broker delivers "run X is due" to ``BaseWorker.handle``. The worker claims the run through
the API (only one claimant wins; a loser drops the message), renders the pool's job template with
the deployment's and the run's job variables, and hands the job to its kind's ``execute``, which
starts the infrastructure and waits for it to exit. Whatever happens there, the run does not stay
stuck: an exit without a final state reported by the flow-run process marks it CRASHED with the
exit code, and an error starting the infrastructure marks it CRASHED with the reason.
"""

from __future__ import annotations

import abc
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from orchestrator import schemas
from orchestrator.client import Client
from orchestrator.errors import Conflict, NotFound, OrchestratorError
from orchestrator.states import FINAL_STATES, StateType

log = logging.getLogger("orchestrator.worker")


@dataclass(frozen=True)
class InfrastructureResult:
    """How the infrastructure of one run ended."""

    exit_code: int
    detail: str = ""


class BaseWorker(abc.ABC):
    type: ClassVar[str]

    def __init__(self, client: Client, *, pool: str, name: str | None = None, limit: int = 10,
                 heartbeat_seconds: float = 10.0, api_url: str, api_key: str | None = None) -> None:
        self.client = client
        self.pool = pool
        self.name = name or f"{self.type}-{socket.gethostname()}-{os.getpid()}"
        self.limit = limit
        self.heartbeat_seconds = heartbeat_seconds
        self.api_url = api_url
        self.api_key = api_key
        self._stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None

    # --- the contract of each kind -------------------------------------------------------------

    @abc.abstractmethod
    def execute(self, claim: schemas.Claim, job: dict[str, Any]) -> InfrastructureResult:
        """Start the infrastructure for one claimed run from its rendered ``job`` configuration,
        report its id with ``self.client.report_infrastructure``, block until it exits and return
        how it ended. Raise ``InfrastructureError`` when it cannot be started."""

    # --- shared behaviour ----------------------------------------------------------------------

    def run_environment(self, run_id: uuid.UUID) -> dict[str, str]:
        """Environment every flow-run process needs to find its run and the API."""
        env = {"ORCH_FLOW_RUN_ID": str(run_id), "ORCH_API_URL": self.api_url}
        if self.api_key:
            env["ORCH_API_KEY"] = self.api_key
        return env

    def render_job(self, claim: schemas.Claim) -> dict[str, Any]:
        from job_templates.render import render

        return render(
            claim.base_job_template,
            claim.deployment.job_variables,
            claim.flow_run.job_variables,
            environ=os.environ,
        )

    def handle(self, run_id: uuid.UUID) -> None:
        """Process one delivery. Never raises: one bad run must not take the worker down."""
        try:
            claim = self.client.claim_flow_run(run_id, self.name)
        except (Conflict, NotFound) as error:
            log.info("run %s not claimed: %s", run_id, error)
            return
        except OrchestratorError as error:
            log.warning("claim of run %s failed: %s", run_id, error)
            return
        log.info("claimed run %s (%s)", run_id, claim.flow_run.name)
        try:
            result = self.execute(claim, self.render_job(claim))
        except Exception as error:  # noqa: BLE001
            log.exception("run %s: infrastructure failed", run_id)
            self._finish(run_id, StateType.CRASHED, f"infrastructure could not start: {type(error).__name__}: {error}")
            return
        self._after_exit(run_id, result)

    def _after_exit(self, run_id: uuid.UUID, result: InfrastructureResult) -> None:
        try:
            run = self.client.read_flow_run(run_id)
        except OrchestratorError as error:
            log.warning("run %s: cannot read its state after exit: %s", run_id, error)
            return
        if run.state.type in FINAL_STATES:
            return
        if run.state.type == StateType.CANCELLING:
            self._finish(run_id, StateType.CANCELLED, "cancelled: infrastructure stopped")
            return
        reason = f"flow run process exited with code {result.exit_code} without reporting a final state"
        if result.detail:
            reason += f": {result.detail}"
        self._finish(run_id, StateType.CRASHED, reason)

    def _finish(self, run_id: uuid.UUID, state: StateType, message: str) -> None:
        try:
            self.client.set_flow_run_state(run_id, state, message=message)
        except OrchestratorError as error:
            log.warning("run %s: could not report %s: %s", run_id, state, error)

    # --- liveness ------------------------------------------------------------------------------

    def start_heartbeat(self) -> None:
        self.beat()
        self._heartbeat_thread = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._heartbeat_thread.start()

    def beat(self) -> None:
        try:
            self.client.heartbeat(self.pool, self.name)
        except OrchestratorError as error:
            log.warning("heartbeat failed: %s", error)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            self.beat()

    def stop(self) -> None:
        self._stop.set()


class InfrastructureError(OrchestratorError):
    """The infrastructure for a run could not be started."""
