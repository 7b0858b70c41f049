"""Static infrastructure: ``Flow.serve(name, ...)`` and ``serve(*deployments)``.

Serving registers each deployment on a process work pool (``serve`` by default, created if
missing), in a work queue of its own, and then runs a process worker in this process that
consumes only those queues. A run of a served deployment therefore takes exactly the path of any
other run: created by the API or a schedule, published when due, claimed by this worker, started
as a subprocess (``python -m orchestrator.engine``) in the deployment's path. The worker's
``limit`` caps how many run at once.

Stopping (Ctrl-C or SIGTERM) stops taking runs, lets the running ones finish (a second Ctrl-C
stops at once) and, unless ``pause_on_shutdown=False``, pauses the deployments so that their
schedules do not pile up runs nobody will start.

Only the standard library is imported at module level: ``import orchestrator`` imports this.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

if TYPE_CHECKING:
    from typing import Unpack

    from orchestrator.client import Client

DEFAULT_POOL = "serve"


class DeploymentOptions(TypedDict, total=False):
    """What a served deployment can set; the meaning is that of ``Flow.deploy``."""

    cron: str
    interval: float
    rrule: str
    schedules: list[dict[str, Any]]
    triggers: list[Any]  # dicts in Prefect's shape or schemas.automations trigger models
    parameters: dict[str, Any]
    job_variables: dict[str, Any]
    tags: list[str]
    version: str
    description: str
    paused: bool
    enforce_parameter_schema: bool
    concurrency_limit: int


class Deployable(Protocol):
    """What serving reads of a flow (``orchestrator.sdk.flows.Flow`` has it)."""

    name: str

    def deploy(self, name: str, work_pool_name: str | None = None, **options: Any) -> uuid.UUID: ...


@dataclass(frozen=True)
class ServedDeployment:
    """A flow and the deployment it will be served as (made by ``Flow.to_deployment``)."""

    flow: Deployable
    name: str
    options: DeploymentOptions = field(default_factory=lambda: DeploymentOptions())

    @property
    def full_name(self) -> str:
        return f"{self.flow.name}/{self.name}"

    @property
    def queue_name(self) -> str:
        # One queue per served deployment: this process consumes only its own deployments' runs,
        # even when several serve processes share the pool.
        return f"{self.flow.name}:{self.name}"


def to_deployment(flow: Deployable, name: str, **options: Unpack[DeploymentOptions]) -> ServedDeployment:
    from orchestrator.errors import DeploymentError

    if not name or "/" in name:
        raise DeploymentError(f"deployment name {name!r} must be non-empty and contain no '/'")
    return ServedDeployment(flow, name, options)


def serve(
    *deployments: ServedDeployment,
    limit: int = 10,
    pause_on_shutdown: bool = True,
    work_pool_name: str = DEFAULT_POOL,
) -> None:
    """Register ``deployments`` and run their runs in subprocesses of this process, at most
    ``limit`` at once, until interrupted. Blocks."""
    import logging

    from orchestrator.client import Client
    from orchestrator.errors import DeploymentError
    from orchestrator.settings import Settings
    from workers.broker import broker_url_for_worker
    from workers.celery_worker import serve as serve_worker
    from workers.process import ProcessWorker

    if not deployments:
        raise DeploymentError("serve() needs at least one deployment, e.g. serve(my_flow.to_deployment('nightly'))")
    if os.environ.get("ORCH_FLOW_RUN_ID"):
        # The flow-run process imports the entrypoint's file: an unguarded serve() call there
        # would start a second server inside the run.
        raise DeploymentError("serve() was called while a flow run loaded its entrypoint; "
                              "put the serve() call under `if __name__ == \"__main__\":`")
    if limit < 1:
        raise DeploymentError(f"limit must be at least 1, got {limit}")
    names = [d.full_name for d in deployments]
    if len(set(names)) != len(names):
        raise DeploymentError(f"the same deployment is served twice: {', '.join(sorted(names))}")
    settings = Settings()
    client = Client.from_settings(settings, retry_seconds=30.0)
    try:
        broker_url = broker_url_for_worker(client, settings)  # the server's broker, or a refusal saying why
        _ensure_pool(client, work_pool_name)
        ids = [_register(client, work_pool_name, d) for d in deployments]
        key = settings.api_key.get_secret_value() if settings.api_key else None
        worker = ProcessWorker(client, pool=work_pool_name, name=f"serve-{socket.gethostname()}-{os.getpid()}",
                               limit=limit, heartbeat_seconds=settings.worker_heartbeat_seconds,
                               api_url=settings.api_url, api_key=key)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        print(f"Serving {', '.join(names)} on work pool '{work_pool_name}' (at most {limit} runs at once).\n"
              f"Start a run with: orch deployment run '{names[0]}'   Stop with Ctrl-C.", flush=True)
        try:
            serve_worker(worker, broker_url=broker_url, queue_names=[d.queue_name for d in deployments])
        finally:
            if pause_on_shutdown:
                _pause(client, ids, names)
    finally:
        client.close()


def _ensure_pool(client: Client, pool: str) -> None:
    from orchestrator import schemas
    from orchestrator.errors import Conflict, DeploymentError, NotFound

    try:
        existing = client.read_work_pool(pool)
    except NotFound:
        try:
            existing = client.create_work_pool(schemas.WorkPoolCreate(
                name=pool, type="process", description="Deployments served by Flow.serve() / serve()."))
        except Conflict:  # created meanwhile by another serve process
            existing = client.read_work_pool(pool)
    if existing.type != "process":
        raise DeploymentError(f"work pool '{pool}' is of type '{existing.type}'; serve() needs a process pool")


def _register(client: Client, pool: str, deployment: ServedDeployment) -> uuid.UUID:
    from orchestrator import schemas
    from orchestrator.errors import Conflict

    try:
        client.create_work_queue(pool, schemas.WorkQueueCreate(
            name=deployment.queue_name, description=f"Runs of {deployment.full_name}, served by serve()."))
    except Conflict:
        pass  # served before: same queue
    options = DeploymentOptions(**deployment.options)
    options.setdefault("paused", False)  # serving again resumes a deployment paused at the last shutdown
    return deployment.flow.deploy(deployment.name, pool, work_queue_name=deployment.queue_name, **options)


def _pause(client: Client, ids: list[uuid.UUID], names: list[str]) -> None:
    from orchestrator.errors import OrchestratorError

    for deployment_id, name in zip(ids, names, strict=True):
        try:
            client.set_deployment_paused(deployment_id, True)
        except OrchestratorError as error:
            print(f"could not pause {name}: {error}", flush=True)
            continue
        print(f"Paused {name} (pause_on_shutdown); `orch deployment resume '{name}'` or serve again to resume.",
              flush=True)
