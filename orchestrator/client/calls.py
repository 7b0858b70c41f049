"""``Client``: one typed call per API route, over the transport (``orchestrator.client.transport``).

Wire models are imported inside each call: pydantic and the schemas are most of the import time,
which a CLI command or a flow-run process that does not need them should not pay at start.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from orchestrator.client.event_calls import EventCalls
from orchestrator.errors import InvalidInput

if TYPE_CHECKING:
    from orchestrator import schemas
    from orchestrator.client.transport import SentRequest
    from orchestrator.schemas.api_keys import ApiKey, ApiKeyCreate, ApiKeyCreated
    from orchestrator.states import StateType


class Client(EventCalls):
    """The API client used by the SDK, the CLI, workers and flow-run processes."""

    def health(self) -> bool:
        return self.request("GET", "/health") is not None

    def read_broker(self) -> schemas.BrokerInfo:
        from orchestrator import schemas

        return schemas.BrokerInfo.model_validate(self.request("GET", "/broker"))

    def create_work_pool(self, request: schemas.WorkPoolCreate) -> schemas.WorkPool:
        from orchestrator import schemas

        return schemas.WorkPool.model_validate(self.request("POST", "/work_pools", body=_dump(request)))

    def read_work_pool(self, name: str) -> schemas.WorkPool:
        from orchestrator import schemas

        return schemas.WorkPool.model_validate(self.request("GET", f"/work_pools/{_name(name)}"))

    def list_work_pools(self) -> list[schemas.WorkPool]:
        from orchestrator import schemas

        return [schemas.WorkPool.model_validate(p) for p in self.request("GET", "/work_pools")]

    def update_work_pool(self, name: str, request: schemas.WorkPoolUpdate) -> schemas.WorkPool:
        from orchestrator import schemas

        body = request.model_dump(mode="json", exclude_unset=True)
        return schemas.WorkPool.model_validate(self.request("PATCH", f"/work_pools/{_name(name)}", body=body))

    def delete_work_pool(self, name: str) -> None:
        self.request("DELETE", f"/work_pools/{_name(name)}")

    def list_work_queues(self, pool: str) -> list[schemas.WorkQueue]:
        from orchestrator import schemas

        return [schemas.WorkQueue.model_validate(q) for q in self.request("GET", f"/work_pools/{_name(pool)}/queues")]

    def create_work_queue(self, pool: str, request: schemas.WorkQueueCreate) -> schemas.WorkQueue:
        from orchestrator import schemas

        data = self.request("POST", f"/work_pools/{_name(pool)}/queues", body=_dump(request))
        return schemas.WorkQueue.model_validate(data)

    def update_work_queue(self, pool: str, name: str, request: schemas.WorkQueueUpdate) -> schemas.WorkQueue:
        from orchestrator import schemas

        body = request.model_dump(mode="json", exclude_unset=True)
        data = self.request("PATCH", f"/work_pools/{_name(pool)}/queues/{_name(name, 'work queue')}", body=body)
        return schemas.WorkQueue.model_validate(data)

    def delete_work_queue(self, pool: str, name: str) -> None:
        self.request("DELETE", f"/work_pools/{_name(pool)}/queues/{_name(name, 'work queue')}")

    def heartbeat(self, pool: str, worker_name: str, running: Sequence[uuid.UUID] = (), *,
                  starting: bool = False, instance: uuid.UUID | None = None) -> None:
        """``starting``: a worker's first heartbeat, refused (``WorkerNameTaken``) while a live worker
        of the pool has the name. ``instance``: the worker process's id, the same on each of its
        beats; a process that no longer holds the name is refused (``WorkerNameTaken``)."""
        body: dict[str, Any] = {"name": worker_name, "running": [str(r) for r in running]}
        if starting:
            body["starting"] = True
        if instance is not None:
            body["instance"] = str(instance)
        self.request("POST", f"/work_pools/{_name(pool)}/workers/heartbeat", body=body)

    def wait_for_cancellations(self, pool: str, worker_name: str, *, timeout: float,
                               exclude: Sequence[uuid.UUID] = (), instance: uuid.UUID | None = None) -> list[uuid.UUID]:
        """Long-poll: this worker's runs asked to stop, as soon as there is one (``instance``: as
        for ``heartbeat``)."""
        data = self.request("GET", f"/work_pools/{_name(pool)}/workers/{_name(worker_name, 'worker')}/cancellations",
                            params={"timeout": timeout, "exclude": [str(e) for e in exclude],
                                    "instance": str(instance) if instance is not None else None},
                            timeout=timeout + self.timeout)
        return [uuid.UUID(i) for i in data]

    def flow_run_heartbeat(self, run_id: uuid.UUID, *, hold: float = 0.0,
                           infrastructure_id: str | None = None) -> schemas.FlowRun:
        """Say the flow-run process is alive. With ``hold``, the API keeps the request open that
        long (a connection lease: if this process dies, the API learns it at once).
        ``infrastructure_id``: where this process runs, kept if the run has none yet."""
        from orchestrator import schemas

        data = self.request("POST", f"/flow_runs/{run_id}/heartbeat", params=_beat_params(hold, infrastructure_id),
                            timeout=hold + self.timeout)
        return schemas.FlowRun.model_validate(data)

    def open_flow_run_heartbeat(self, run_id: uuid.UUID, *, hold: float, infrastructure_id: str | None = None,
                                opening: bool = False) -> SentRequest:
        """``flow_run_heartbeat`` with ``hold``, sent now and answered later: the connection lease
        opened without waiting for a thread to take it. ``answer()`` is the run as JSON.
        ``opening``: the first beat of a process whose RUNNING report follows and records what a
        beat would (the API writes nothing for it)."""
        params = _beat_params(hold, infrastructure_id) or {}
        if opening:
            params["opening"] = "true"
        return self.send_now("POST", f"/flow_runs/{run_id}/heartbeat", params=params or None,
                             timeout=hold + self.timeout)

    def list_workers(self, pool: str) -> list[schemas.Worker]:
        from orchestrator import schemas

        return [schemas.Worker.model_validate(w) for w in self.request("GET", f"/work_pools/{_name(pool)}/workers")]

    def upsert_deployment(self, request: schemas.DeploymentCreate) -> schemas.Deployment:
        from orchestrator import schemas

        return schemas.Deployment.model_validate(self.request("POST", "/deployments", body=_dump(request)))

    def read_deployment(self, deployment_id: uuid.UUID) -> schemas.Deployment:
        from orchestrator import schemas

        return schemas.Deployment.model_validate(self.request("GET", f"/deployments/{deployment_id}"))

    def read_deployment_by_name(self, full_name: str) -> schemas.Deployment:
        from orchestrator import schemas

        flow_name, sep, name = full_name.partition("/")
        if not sep or not flow_name or not name or "/" in name:
            raise InvalidInput(f"deployment name {full_name!r} must look like 'flow/deployment'")
        return schemas.Deployment.model_validate(self.request("GET", f"/deployments/name/{_q(flow_name)}/{_q(name)}"))

    def read_deployment_ref(self, ref: str | uuid.UUID) -> schemas.Deployment:
        """A deployment by id or by ``flow/deployment`` name."""
        if isinstance(ref, uuid.UUID):
            return self.read_deployment(ref)
        try:
            return self.read_deployment(uuid.UUID(ref))
        except ValueError:
            return self.read_deployment_by_name(ref)

    def list_deployments(self, **filters: Any) -> list[schemas.Deployment]:
        """Filters: ``flow_name``, ``work_pool_name``, ``tag``; every page, or one of ``limit``."""
        from orchestrator import schemas

        return [schemas.Deployment.model_validate(d) for d in self.listed("/deployments", filters)]

    def update_deployment(self, deployment_id: uuid.UUID, request: schemas.DeploymentUpdate) -> schemas.Deployment:
        from orchestrator import schemas

        body = request.model_dump(mode="json", exclude_unset=True)
        return schemas.Deployment.model_validate(self.request("PATCH", f"/deployments/{deployment_id}", body=body))

    def set_deployment_paused(self, deployment_id: uuid.UUID, paused: bool) -> schemas.Deployment:
        from orchestrator import schemas

        action = "pause" if paused else "resume"
        return schemas.Deployment.model_validate(self.request("POST", f"/deployments/{deployment_id}/{action}"))

    def delete_deployment(self, deployment_id: uuid.UUID) -> None:
        self.request("DELETE", f"/deployments/{deployment_id}")

    def create_flow_run(self, deployment_id: uuid.UUID, request: schemas.FlowRunCreate) -> schemas.FlowRun:
        from orchestrator import schemas

        data = self.request("POST", f"/deployments/{deployment_id}/runs", body=_dump(request))
        return schemas.FlowRun.model_validate(data)

    def create_direct_flow_run(self, request: schemas.DirectFlowRunCreate) -> schemas.DirectFlowRun:
        """A run of a flow this program calls directly (no deployment), created RUNNING."""
        from orchestrator import schemas

        return schemas.DirectFlowRun.model_validate(self.request("POST", "/flow_runs", body=_dump(request)))

    def create_subflow_run(self, parent_run_id: uuid.UUID, request: schemas.SubflowRunCreate) -> schemas.DirectFlowRun:
        """A run of a flow called inside run ``parent_run_id`` (as ``create_direct_flow_run``)."""
        from orchestrator import schemas

        return schemas.DirectFlowRun.model_validate(
            self.request("POST", f"/flow_runs/{parent_run_id}/subflow_runs", body=_dump(request)))

    def read_flow_run(self, run_id: uuid.UUID) -> schemas.FlowRun:
        from orchestrator import schemas

        return schemas.FlowRun.model_validate(self.request("GET", f"/flow_runs/{run_id}"))

    def read_flow_run_relatives(self, run_id: uuid.UUID) -> schemas.FlowRunRelatives:
        """The run that called this one as a subflow, and the subflow runs it called."""
        from orchestrator import schemas

        return schemas.FlowRunRelatives.model_validate(self.request("GET", f"/flow_runs/{run_id}/relatives"))

    def read_flows(self, ids: Iterable[uuid.UUID]) -> list[schemas.Flow]:
        """The flows of ``ids`` (one request; unknown ids left out)."""
        from orchestrator import schemas

        wanted = sorted({str(flow_id) for flow_id in ids})
        if not wanted:
            return []
        return [schemas.Flow.model_validate(item) for item in self.request("GET", "/flows", params={"id": wanted})]

    def list_flow_runs(self, **filters: Any) -> schemas.FlowRunPage:
        from orchestrator import schemas

        return schemas.FlowRunPage.model_validate(self.request("GET", "/flow_runs", params=filters))

    def wait_for_flow_run(self, run_id: uuid.UUID, timeout: float) -> schemas.FlowRun:
        """Return when the run is final or ``timeout`` seconds passed (one long-poll request)."""
        from orchestrator import schemas

        data = self.request("GET", f"/flow_runs/{run_id}/wait", params={"timeout": timeout},
                            timeout=timeout + self.timeout)
        return schemas.FlowRun.model_validate(data)

    def read_waiting_reason(self, run_id: uuid.UUID) -> schemas.WaitingReason:
        """Why a run that has not started has not started yet (``reason`` None once it started)."""
        from orchestrator import schemas

        return schemas.WaitingReason.model_validate(self.request("GET", f"/flow_runs/{run_id}/waiting_reason"))

    def read_flow_run_states(self, run_id: uuid.UUID) -> list[schemas.State]:
        from orchestrator import schemas

        return [schemas.State.model_validate(s) for s in self.request("GET", f"/flow_runs/{run_id}/states")]

    def set_flow_run_state(self, run_id: uuid.UUID, state: StateType, *, name: str | None = None,
                           message: str | None = None, result: Any = None,
                           scheduled_time: dt.datetime | None = None,
                           worker_name: str | None = None) -> schemas.FlowRun:
        """Report a state. ``worker_name``: only if that worker still holds the run. The message is
        a diagnostic (a flow's error, a crash reason): text the API would refuse is escaped in it."""
        from orchestrator import schemas, storable

        body = {"type": str(state), "name": name, "message": message and storable.escaped(message), "result": result,
                "scheduled_time": scheduled_time.isoformat() if scheduled_time else None, "worker_name": worker_name}
        return schemas.FlowRun.model_validate(self.request("POST", f"/flow_runs/{run_id}/state", body=body))

    def cancel_flow_run(self, run_id: uuid.UUID) -> schemas.FlowRun:
        from orchestrator import schemas

        return schemas.FlowRun.model_validate(self.request("POST", f"/flow_runs/{run_id}/cancel"))

    def claim_flow_run(self, run_id: uuid.UUID, worker_name: str, pool: str | None = None) -> schemas.Claim:
        from orchestrator import schemas

        data = self.request("POST", f"/flow_runs/{run_id}/claim", body={"worker_name": worker_name, "pool": pool})
        return schemas.Claim.model_validate(data)

    def report_infrastructure(self, run_id: uuid.UUID, infrastructure_id: str) -> None:
        self.request("POST", f"/flow_runs/{run_id}/infrastructure", body={"infrastructure_id": infrastructure_id})

    def write_logs(self, run_id: uuid.UUID, logs: Sequence[dict[str, Any]]) -> None:
        self.request("POST", f"/flow_runs/{run_id}/logs", body=list(logs))

    def read_logs(self, run_id: uuid.UUID, *, after: int = 0, limit: int = 1000) -> list[schemas.Log]:
        from orchestrator import schemas

        data = self.request("GET", f"/flow_runs/{run_id}/logs", params={"after": after, "limit": limit})
        return [schemas.Log.model_validate(log) for log in data]

    def set_flow_run_running(self, run_id: uuid.UUID, *, worker_name: str | None = None,
                             flow_version: str | None = None, flow_run_name: str | None = None,
                             infrastructure_id: str | None = None,
                             on_sent: Callable[[], object] | None = None) -> schemas.FlowRun:
        """Report RUNNING with what the flow-run process loaded: the flow's version (kept with the
        run for audit) and the run name its ``flow_run_name`` asks for; and where it runs
        (``infrastructure_id``, a query parameter: an API without it ignores it, and the answer's
        ``infrastructure_id`` then says it was not kept). ``on_sent``: as ``request``'s."""
        from orchestrator import schemas

        body = {"type": "RUNNING", "worker_name": worker_name, "flow_version": flow_version,
                "flow_run_name": flow_run_name}
        params = {"infrastructure_id": infrastructure_id} if infrastructure_id is not None else None
        return schemas.FlowRun.model_validate(self.request("POST", f"/flow_runs/{run_id}/state", body=body,
                                                           params=params, on_sent=on_sent))

    def write_task_runs(self, run_id: uuid.UUID | None, task_runs: Sequence[dict[str, Any]], *,
                        holder: uuid.UUID | None = None) -> None:
        """Report task runs of the flow run ``run_id``, or (None) of tasks called outside any flow,
        held by this program's lease ``holder`` (see ``task_run_holder_heartbeat``)."""
        path = "/task_runs" if run_id is None else f"/flow_runs/{run_id}/task_runs"
        self.request("POST", path, body=list(task_runs), params={"holder": str(holder)} if holder else None)

    def task_run_holder_heartbeat(self, holder: uuid.UUID) -> float:
        """This program, running task runs outside any flow, is alive; returns how often to say so."""
        return float(self.request("POST", f"/task_runs/holders/{holder}/heartbeat")["heartbeat_seconds"])

    def release_task_run_holder(self, holder: uuid.UUID) -> None:
        """This program is exiting: its task runs' lease ends."""
        self.request("DELETE", f"/task_runs/holders/{holder}")

    def list_task_runs_outside_flows(self, *, task_name: str | None = None, limit: int = 100) -> list[schemas.TaskRun]:
        """Task runs of tasks called outside any flow, newest first."""
        from orchestrator import schemas

        query: dict[str, Any] = {"limit": limit}
        if task_name is not None:
            query["task_name"] = task_name
        return [schemas.TaskRun.model_validate(t) for t in self.request("GET", "/task_runs", params=query)]

    def read_task_runs(self, run_id: uuid.UUID) -> list[schemas.TaskRun]:
        from orchestrator import schemas

        return [schemas.TaskRun.model_validate(t) for t in self.request("GET", f"/flow_runs/{run_id}/task_runs")]

    def read_deployment_versions(self, deployment_id: uuid.UUID) -> list[schemas.DeploymentVersion]:
        from orchestrator import schemas

        data = self.request("GET", f"/deployments/{deployment_id}/versions")
        return [schemas.DeploymentVersion.model_validate(v) for v in data]

    def preview_job(self, deployment_id: uuid.UUID) -> schemas.JobPreview:
        """The job a run of the deployment would get, secret values masked."""
        from orchestrator import schemas

        return schemas.JobPreview.model_validate(self.request("GET", f"/deployments/{deployment_id}/job_preview"))

    # API keys

    def create_api_key(self, request: ApiKeyCreate) -> ApiKeyCreated:
        """A new key; the answer's ``secret`` is the key itself, shown this once."""
        from orchestrator.schemas.api_keys import ApiKeyCreated

        body = request.model_dump(mode="json", exclude_none=True)
        return ApiKeyCreated.model_validate(self.request("POST", "/api_keys", body=body))

    def list_api_keys(self, *, include_run_keys: bool = False) -> list[ApiKey]:
        from orchestrator.schemas.api_keys import ApiKey

        data = self.listed("/api_keys", {"include_run_keys": str(include_run_keys).lower()})
        return [ApiKey.model_validate(k) for k in data]

    def revoke_api_key(self, ref: str) -> ApiKey:
        """Revoke a key (by id, name or prefix): its next request is a 401, on every replica."""
        from orchestrator.schemas.api_keys import ApiKey

        return ApiKey.model_validate(self.request("POST", f"/api_keys/{_q(ref)}/revoke"))



def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _name(value: str, what: str = "work pool") -> str:
    """A name for a URL path, checked against the one name rule first: a name the API could never
    have created (``a/b``) would otherwise become another path and answer a puzzling 404."""
    from orchestrator.schemas.base import name_problem

    why = name_problem(value)
    if why is not None:
        shown = repr(value) if len(value) <= 60 else repr(value[:57] + "...")
        raise InvalidInput(f"invalid {what} name {shown}: {why}")
    return _q(value)


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json")


def _beat_params(hold: float, infrastructure_id: str | None) -> dict[str, Any] | None:
    params: dict[str, Any] = {"hold": hold} if hold else {}
    if infrastructure_id is not None:
        params["infrastructure_id"] = infrastructure_id
    return params or None
