"""What the Kubernetes worker reads back from the cluster: Job and pod status, pod logs, events.

Pure readings of API objects (``job_outcome``, ``pending_reason``, ``FATAL_WAITING``, ``explain``,
``pod_happenings``: what a pod's status says happened, for the worker's infrastructure events)
and the best-effort reads that only add detail to a run's story (``stream_logs``, ``tail``,
``events``). They are apart from ``workers/kubernetes.py`` so that module keeps only the Job's
lifecycle (create, watch, delete, recover) and stays small; nothing here decides a run's outcome
or changes anything in the cluster. The reads take a ``CoreV1Api`` and the run's ``RunJob``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from workers.redaction import REDACTOR

if TYPE_CHECKING:
    from workers.kubernetes.job import RunJob

# The worker's logger: these lines belong to its story, whichever module writes them.
log = logging.getLogger("orchestrator.worker.kubernetes")

# Container waiting reasons that will not fix themselves: the run is CRASHED at once.
FATAL_WAITING = frozenset({"ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                           "CreateContainerConfigError", "CreateContainerError"})
TAIL_LINES = 20
IMAGE_PULL_ERRORS = frozenset({"ErrImagePull", "ImagePullBackOff"})


def job_outcome(job: Any) -> Any:
    """The Job's Complete or Failed condition, if it has ended."""
    for condition in job.status.conditions or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return condition
    return None


def pod_happenings(pod: Any, container: str) -> list[tuple[str, str, dict[str, Any]]]:
    """What the pod's status says has happened to it so far, in order, as ``(key, event, payload)``:
    ``event`` is the name after ``orchestrator.kubernetes.pod.``; ``key`` tells happenings apart (one
    ``image-pull-error`` per reason), so the worker reports each once per pod however often it
    sees the pod. ``container`` is the run's container (its exit code is the run's)."""
    status, node = pod.status, pod.spec.node_name
    found: list[tuple[str, str, dict[str, Any]]] = []
    if node:
        found.append(("scheduled", "scheduled", {"node": node}))
    terminated = None
    for c in status.container_statuses or []:
        waiting = c.state.waiting if c.state else None
        if waiting is not None and waiting.reason in IMAGE_PULL_ERRORS:
            found.append((f"image-pull-error/{waiting.reason}", "image-pull-error",
                          {"reason": waiting.reason, "message": waiting.message or "", "image": c.image}))
        if c.name == container and c.state and c.state.terminated:
            terminated = c.state.terminated
    if status.phase == "Running" or (terminated is not None and terminated.started_at is not None):
        found.append(("running", "running", {"node": node}))  # a pod that ran, even if first seen ended
    code = terminated.exit_code if terminated is not None else None
    if status.phase == "Succeeded":
        found.append(("succeeded", "succeeded", {"exit_code": code}))
    elif status.phase == "Failed":
        reason = status.reason or (terminated.reason if terminated is not None else None)
        message = status.message or (terminated.message if terminated is not None else None)
        found.append(("failed", "failed", {"exit_code": code, "reason": reason, "message": message}))
        if status.reason == "Evicted":
            found.append(("evicted", "evicted", {"message": status.message}))
        if terminated is not None and terminated.reason == "OOMKilled":
            found.append(("oom-killed", "oom-killed", {"exit_code": code}))
    return found


def pending_reason(pod: Any) -> str:
    """Why a Pending pod is not running yet, in one line."""
    for condition in pod.status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            return f"{condition.reason}: {condition.message}"
    for c in pod.status.container_statuses or []:
        if c.state and c.state.waiting:
            return f"{c.state.waiting.reason}: {c.state.waiting.message or ''}".rstrip(": ")
    if not pod.spec.node_name:
        return "not scheduled yet"
    return f"scheduled on {pod.spec.node_name}, not started yet"


def explain(error: Any) -> str:
    """An ``ApiException`` as the server's own message, else its status and reason."""
    import json

    try:
        return str(json.loads(error.body).get("message") or error.reason)
    except (TypeError, ValueError, AttributeError):
        return f"{error.status} {error.reason}"


def events(core: Any, handle: RunJob) -> str:
    """The last few Warning events about the Job's pods, for a crash message."""
    try:
        items = core.list_namespaced_event(handle.namespace, _request_timeout=10).items
    except Exception:  # noqa: BLE001 - events only add detail
        return ""
    mine = [e for e in items if e.type == "Warning" and e.involved_object.name
            and e.involved_object.name.startswith(handle.name)]
    return "; ".join(f"{e.reason}: {e.message}" for e in mine[-3:])


def tail(core: Any, handle: RunJob) -> str:
    """The last lines of the run's container output, on one line, for a crash message."""
    try:
        text = core.read_namespaced_pod_log(handle.running_pod, handle.namespace, container=handle.container,
                                            tail_lines=TAIL_LINES, _request_timeout=10)
    except Exception:  # noqa: BLE001 - the tail only adds detail
        return ""
    return " | ".join(str(text).splitlines())[-1000:]


def stream_logs(core: Any, handle: RunJob, pod: str) -> None:
    """Echo the pod's output on the worker's console while the run lasts (best effort)."""
    since: int | None = None
    while not handle.done.is_set():
        last = time.time()
        try:
            response = core.read_namespaced_pod_log(
                pod, handle.namespace, container=handle.container, follow=True, since_seconds=since,
                _preload_content=False, _request_timeout=(10, None))
            pending = b""
            for chunk in response.stream(4096):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    print(f"{handle.name} | {REDACTOR.scrub(line.decode(errors='replace'))}", flush=True)
                last = time.time()
            if pending:
                print(f"{handle.name} | {REDACTOR.scrub(pending.decode(errors='replace'))}", flush=True)
            return  # the container exited: the stream ended normally
        except Exception as error:  # noqa: BLE001 - reconnect; a line may repeat
            log.debug("run %s: log stream of %s: %s", handle.run_id, pod, error)
            since = max(1, int(time.time() - last) + 1)
            handle.done.wait(1.0)
