"""``run_deployment``: start a run of a deployment and (optionally) wait for it."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.client import Client
    from orchestrator.schemas import FlowRun, WaitingReason

LONG_POLL_SECONDS = 60.0
WAITING_POLL_FIRST_SECONDS = 1.0
WAITING_POLL_MAX_SECONDS = 10.0
NOT_STARTED = frozenset({"SCHEDULED", "PENDING"})
log = logging.getLogger("orchestrator.run_deployment")


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
    many seconds even if the run is not final (it keeps running). While it waits for a run that has
    not started, it logs why (logger ``orchestrator.run_deployment``, WARNING for a cause the user
    must act on such as "pool 'local' has no online worker", INFO otherwise), once per change.
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
        return wait_for_final(client, run, timeout, None if timeout == 0 else _log_waiting)
    finally:
        if own_client:
            client.close()


def wait_for_final(client: Client, run: FlowRun, timeout: float | None,
                   on_progress: Callable[[FlowRun, WaitingReason | None], None] | None = None) -> FlowRun:
    """Long-poll until ``run`` is final or ``timeout`` (None = forever) has passed.

    With ``on_progress``, call it with the run (and, while it has not started, why it waits: see
    ``GET /api/flow_runs/{id}/waiting_reason``) each time its state or the causes it waits for
    change -- not at every poll. A run that has not started is looked at again after 1 s, then less
    and less often (up to every ``WAITING_POLL_MAX_SECONDS``); a started one is only long-polled."""
    deadline = None if timeout is None else time.monotonic() + timeout
    seen: tuple[object, ...] | None = None
    poll = WAITING_POLL_FIRST_SECONDS
    first = True  # a run that starts at once costs no extra request: the first look is after one poll
    while not run.state.is_final:
        step = LONG_POLL_SECONDS
        if on_progress is not None:
            state, why = run.state, None
            if state.type in NOT_STARTED:
                step, poll = poll, min(poll * 2, WAITING_POLL_MAX_SECONDS)
                if not first:
                    why = client.read_waiting_reason(run.id)
                    state = why.state  # newer than the run's: it may have started or ended since
            key = (state.type, state.name, tuple(c.code for c in why.causes) if why else ())
            if key != seen and not state.is_final and (why is not None or state.type not in NOT_STARTED):
                seen = key
                on_progress(run.model_copy(update={"state": state}), why)
            first = False
        remaining = step if deadline is None else min(step, deadline - time.monotonic())
        if remaining <= 0:
            break
        run = client.wait_for_flow_run(run.id, remaining)
    return run


# Causes that last until someone acts (start a worker, resume a pool...): a WARNING. The others
# (scheduled later, being handed to a worker, starting) pass on their own: INFO.
ACT_ON = frozenset({"DEPLOYMENT_DELETED", "POOL_MISSING", "POOL_PAUSED", "QUEUE_MISSING", "QUEUE_PAUSED",
                    "NO_WORKER", "NOT_CLAIMED"})


def _log_waiting(run: FlowRun, why: WaitingReason | None) -> None:
    if why is None or why.reason is None:
        return
    level = logging.WARNING if any(c.code in ACT_ON for c in why.causes) else logging.INFO
    log.log(level, "flow run '%s' is %s: %s", run.name, run.state.name, why.reason)
