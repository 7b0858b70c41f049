"""``run_deployment``: start a run of a deployment and (optionally) wait for it."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.client import Client
    from orchestrator.schemas import FlowRun

LONG_POLL_SECONDS = 60.0


def run_deployment(
    name: str | uuid.UUID,
    *,
    parameters: dict[str, Any] | None = None,
    job_variables: dict[str, Any] | None = None,
    scheduled_time: dt.datetime | None = None,
    tags: list[str] | None = None,
    idempotency_key: str | None = None,
    work_queue_name: str | None = None,
    timeout: float | None = None,
    client: Client | None = None,
) -> FlowRun:
    """Create a run of the deployment ``"flow/deployment"`` (or its id).

    ``timeout=None`` waits until the run is final; ``0`` returns at once; ``> 0`` returns after that
    many seconds even if the run is not final (it keeps running).
    """
    from orchestrator import schemas
    from orchestrator.client import Client
    from orchestrator.settings import Settings

    if timeout is not None and timeout < 0:
        raise ValueError("timeout must be None, 0 or positive")
    own_client = client is None
    client = client or Client.from_settings(Settings())
    try:
        deployment = client.read_deployment_ref(name)
        run = client.create_flow_run(
            deployment.id,
            schemas.FlowRunCreate(
                parameters=parameters or {},
                job_variables=job_variables or {},
                tags=tags or [],
                scheduled_time=scheduled_time,
                idempotency_key=idempotency_key,
                work_queue_name=work_queue_name,
            ),
        )
        return wait_for_final(client, run, timeout)
    finally:
        if own_client:
            client.close()


def wait_for_final(client: Client, run: FlowRun, timeout: float | None) -> FlowRun:
    """Long-poll until ``run`` is final or ``timeout`` (None = forever) has passed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not run.state.is_final:
        remaining = LONG_POLL_SECONDS if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            break
        run = client.wait_for_flow_run(run.id, min(remaining, LONG_POLL_SECONDS))
    return run
