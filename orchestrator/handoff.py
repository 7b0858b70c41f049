"""What a worker hands the flow-run process it starts: the run and its deployment as the claim
read them, so the process does not fetch them again (issue 15 point 2: the run's path reads one
way, each thing read once).

One environment variable, ``ORCH_FLOW_RUN_CLAIM``, holding JSON: the one channel every kind of
infrastructure already passes unchanged (a subprocess, a standby's order on stdin, a container's
environment, a Kubernetes Job's ``env``), so no kind needs a mount, an argument or a file of its
own. It adds nothing to what the same environment exposes already: ``ORCH_API_KEY`` next to it,
the run's own key, reads this run and its deployment.

Bounded by ``CLAIM_MAX_BYTES``: a run with large parameters is not handed over (an environment
string may not exceed 128 KiB on Linux, and a Job's manifest should stay small); the process then
fetches both, as it does when started by hand with only ``ORCH_FLOW_RUN_ID``. A hand-off that does
not parse or names another run is ignored the same way: fetching is always correct, only slower.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from orchestrator.schemas import Claim, Deployment, FlowRun

CLAIM_VARIABLE = "ORCH_FLOW_RUN_CLAIM"
CLAIM_MAX_BYTES = 32 * 1024

log = logging.getLogger("orchestrator.engine")


class Handoff(BaseModel):
    """The part of a claim the flow-run process needs (not the pool's job template: the worker
    has already rendered it)."""

    # Parsed once per process: pydantic-core's cache of the JSON's strings (a 256 KiB table, made at
    # a process's first JSON parse that uses it) would save nothing here, and the fork server held it
    # for its children (~0.3 MB), whose one parse is no slower without it.
    model_config = ConfigDict(cache_strings=False)

    flow_run: FlowRun
    deployment: Deployment


def handoff_environment(claim: Claim) -> dict[str, str]:
    """``{ORCH_FLOW_RUN_CLAIM: json}``, or nothing when the JSON is over ``CLAIM_MAX_BYTES``."""
    # The environment is readable (a Job's manifest, ``docker inspect``): secret job variables go
    # masked, as every answer but the claim shows them. The flow-run process does not use them (nor
    # imports the masking: a worker's function, not for the fork server to hold).
    from orchestrator.masking import mask_values

    schema = claim.base_job_template.get("variables")
    flow_run = claim.flow_run.model_copy(update={"job_variables": mask_values(schema, claim.flow_run.job_variables)})
    deployment = claim.deployment.model_copy(
        update={"job_variables": mask_values(schema, claim.deployment.job_variables)})
    text = Handoff(flow_run=flow_run, deployment=deployment).model_dump_json()
    if len(text.encode()) > CLAIM_MAX_BYTES:
        return {}
    return {CLAIM_VARIABLE: text}


def rehearse() -> None:
    """Parse a sample hand-off once (the fork server, before it forks any run's process): its first
    parse in a process builds and touches what every later one reuses, which a forked process
    would otherwise copy page by page on its way to RUNNING (~80 page faults and 0.2 ms of CPU a
    run, bench/RESULTS.md "create → RUNNING ... round 3"). Then coerce parameters both ways a run's
    may be (``parameters.rehearse``): the hand-off's next use in a run's process, and without it a
    flow whose parameters need a model builds the first one its process lineage ever built
    (+1.5 M instructions a run, bench/RESULTS.md, "The flow-run process ... round 6")."""
    from orchestrator import parameters

    Handoff.model_validate_json(rehearsal_text())
    parameters.rehearse()


def rehearsal_text() -> str:
    """A hand-off with every field of the run and the deployment set, as a claim's are."""
    run_id, flow_id, deployment_id = (str(uuid.UUID(int=n)) for n in (1, 2, 3))
    when = "2000-01-01T00:00:00Z"
    return json.dumps({
        "flow_run": {
            "id": run_id, "name": "rehearsal", "flow_id": flow_id, "deployment_id": deployment_id,
            "deployment_version": None, "flow_version": None, "work_pool_name": "p", "work_queue_name": "q",
            "parameters": {"x": 1}, "job_variables": {}, "tags": ["t"], "idempotency_key": None,
            "state": {"type": "PENDING", "name": "Pending", "message": None, "timestamp": when},
            "expected_start_time": when, "start_time": None, "end_time": None, "run_count": 0, "result": None,
            "worker_name": "w", "infrastructure_id": None, "heartbeat_at": None, "crash_restarts": 0, "created": when,
        },
        "deployment": {
            "id": deployment_id, "flow_id": flow_id, "flow_name": "f", "name": "d", "entrypoint": "flows.py:f",
            "path": "/", "parameters": {}, "parameter_openapi_schema": {}, "enforce_parameter_schema": True,
            "schedules": [], "paused": False, "triggers": [], "version": None, "description": None, "tags": [],
            "work_pool_name": "p", "work_queue_name": None, "job_variables": {}, "pull_steps": [],
            "concurrency_limit": None, "concurrency_collision_strategy": "ENQUEUE", "crash_retries": 0,
            "catchup": "ALL", "max_late_runs": None, "created": when, "updated": when,
        },
    })


def read_handoff(environ: Mapping[str, str], run_id: uuid.UUID) -> Handoff | None:
    """The hand-off for ``run_id`` in ``environ``, or None (then fetch the run and deployment)."""
    text = environ.get(CLAIM_VARIABLE)
    if not text:
        return None
    try:
        handoff = Handoff.model_validate_json(text)
    except ValidationError as error:
        log.warning("%s does not parse (%d errors); fetching the run instead", CLAIM_VARIABLE, error.error_count())
        return None
    if handoff.flow_run.id != run_id:
        log.warning("%s is for run %s, not %s; fetching the run instead", CLAIM_VARIABLE, handoff.flow_run.id, run_id)
        return None
    return handoff
