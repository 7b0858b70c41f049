"""The Kubernetes worker: each run is a batch/v1 Job, made from the pool's job manifest.

The worker creates the Job, watches its pod until the container exits and deletes the Job on
cancel (foreground propagation). The flow-run process in the pod reports its own states and ships
its own logs; the worker adds what only it can see: the pod pending (``InfrastructurePending``, in
the run's logs), and a crash reason when Kubernetes itself ended the pod (OOMKilled, Evicted,
DeadlineExceeded, ImagePullBackOff, never running within ``pod_watch_timeout_seconds``).

Watches resume from the last resourceVersion seen after a dropped connection and re-list after a
410 Gone: an API server hiccup never ends a healthy run. Everything it needs fits a
namespace-scoped Role: jobs (create, get, list, watch, delete), pods (get, list, watch, delete),
pods/log (get), events (get, list, watch) -- see docs/workers.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from job_templates.kubernetes import (
    ManifestError,
    build_job,
    move_secret_env,
    pod_watch_timeout,
    secret_name,
)
from job_templates.secret_env import SecretRefError
from orchestrator import schemas
from orchestrator.errors import OrchestratorError
from orchestrator.schemas.events import RESOURCE_ID, related
from workers.base import BaseWorker, Infrastructure, InfrastructureError, InfrastructureResult
from workers.events import derived_id
from workers.kubernetes import run_secret
from workers.kubernetes import status as kstatus
from workers.kubernetes.job import RunJob
from workers.recovery import Leftover, Recovery
from workers.redaction import REDACTOR

log = logging.getLogger("orchestrator.worker.kubernetes")

_DELETED = object()  # ``_settled_job``: the Job no longer exists


class KubernetesWorker(BaseWorker):
    type = "kubernetes"
    reads_secret_files = False  # env secret_ref {name, key} becomes valueFrom.secretKeyRef in the Job

    def __init__(self, *args: Any, kubeconfig: str | None = None, api_client: Any = None,
                 watch_seconds: int = 30, **kwargs: Any) -> None:
        """``kubeconfig``: a file to read credentials from; default: in-cluster when run in a pod
        (``KUBERNETES_SERVICE_HOST``), else ``$KUBECONFIG`` or ``~/.kube/config``.
        ``watch_seconds``: how long one watch request lasts before it is renewed."""
        super().__init__(*args, **kwargs)
        self._kubeconfig = kubeconfig
        self._api_client = api_client
        self._api_lock = threading.Lock()
        self.watch_seconds = watch_seconds

    @property
    def api_client(self) -> Any:
        with self._api_lock:
            if self._api_client is None:
                from kubernetes import client, config

                cfg = client.Configuration()
                try:
                    if self._kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                        config.load_incluster_config(client_configuration=cfg)
                    else:
                        config.load_kube_config(config_file=self._kubeconfig, client_configuration=cfg)
                except Exception as error:
                    raise InfrastructureError(f"cannot load Kubernetes credentials: {error}") from error
                cfg.connection_pool_maxsize = 2 * self.limit + 4  # a watch and a log stream per run
                self._api_client = client.ApiClient(cfg)
            return self._api_client

    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    @property
    def batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self.api_client)

    # --- start ---------------------------------------------------------------------------------

    def start(self, claim: schemas.Claim, job: dict[str, Any]) -> RunJob:
        from kubernetes.client.exceptions import ApiException

        run = claim.flow_run
        run_env = self.run_environment(run.id, claim)
        try:
            manifest, container = build_job(job, pool=self.pool, worker=self.name, run_id=run.id, run_name=run.name,
                                            run_env=run_env)
        except (ManifestError, SecretRefError) as error:
            raise InfrastructureError(str(error)) from None
        namespace = manifest["metadata"]["namespace"]
        timeout = pod_watch_timeout(job)
        secret = secret_name(run.id)
        # The run's own API key goes into the run's Secret with its secret job variables: whoever
        # may read Jobs in the namespace must not be able to act as the run.
        hidden = set(REDACTOR.texts(run.id)) | ({run_env["ORCH_API_KEY"]} if run_env.get("ORCH_API_KEY") else set())
        secret_data = move_secret_env(container, hidden, secret)
        if secret_data:
            run_secret.create(self.core, namespace, secret, secret_data, run.id)
        try:
            created = self.batch.create_namespaced_job(namespace, manifest, _request_timeout=30)
        except ApiException as error:
            run_secret.delete(self.core, namespace, secret_data and secret)
            raise InfrastructureError(f"cannot create the Job in namespace {namespace}: {kstatus.explain(error)}") from error
        except Exception as error:
            run_secret.delete(self.core, namespace, secret_data and secret)
            raise InfrastructureError(f"cannot reach the Kubernetes API: {error}") from error
        if secret_data:
            run_secret.own(self.core, namespace, secret, created.metadata)
        handle = RunJob(run.id, namespace, created.metadata.name, created.metadata.uid, container["name"],
                        time.time(), timeout, bool(job.get("stream_output", True)))
        log.info("run %s: created Job %s/%s", run.id, namespace, handle.name)
        self.events.emit(run.id, "kubernetes.job.created", handle.subject, {"pod_watch_timeout": timeout},
                         event_id=derived_id(handle.uid, "created"))
        return handle

    # --- wait ----------------------------------------------------------------------------------

    def wait(self, infrastructure: Infrastructure) -> InfrastructureResult:
        assert isinstance(infrastructure, RunJob)
        handle = infrastructure
        self._note(handle, f"InfrastructurePending: Job {handle.namespace}/{handle.name} created, waiting for its pod")
        try:
            result = self._watch(handle)
            if handle.log_thread is not None:
                handle.log_thread.join(timeout=5)  # the last lines, once the container has exited
        finally:
            handle.done.set()
        if result.exit_code not in (0, None) and not result.detail and handle.running_pod:
            output = kstatus.tail(self.core, handle)
            if output:
                result = InfrastructureResult(result.exit_code, f"last output: {output}", result.crash_reason)
        return result

    def _watch(self, handle: RunJob) -> InfrastructureResult:
        """Follow the Job's pods until one outcome decides the run."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        failures = 0
        while True:
            try:
                if handle.resource_version is None:
                    pods = self.core.list_namespaced_pod(handle.namespace, label_selector=handle.selector,
                                                         _request_timeout=30)
                    handle.resource_version = pods.metadata.resource_version
                    for pod in pods.items:
                        if (outcome := self._on_pod(handle, "LISTED", pod)) is not None:
                            return outcome
                    if not pods.items and (outcome := self._check_job(handle)) is not None:
                        return outcome
                seconds = max(1, min(self.watch_seconds, int(self._pending_left(handle)) + 1))
                stream = watch.Watch().stream(
                    self.core.list_namespaced_pod, handle.namespace, label_selector=handle.selector,
                    resource_version=handle.resource_version, timeout_seconds=seconds,
                    allow_watch_bookmarks=True, _request_timeout=(10, seconds + 15))
                for event in stream:
                    pod = event["object"]
                    handle.resource_version = pod.metadata.resource_version
                    if event["type"] != "BOOKMARK" and (outcome := self._on_pod(handle, event["type"], pod)):
                        return outcome
                failures = 0
                if (outcome := self._check_job(handle)) is not None:
                    return outcome
            except ApiException as error:
                if error.status == 410:  # our resourceVersion is gone from the server's history
                    log.info("run %s: watch expired (410 Gone); listing again", handle.run_id)
                    handle.relists += 1
                    handle.resource_version = None
                    continue
                if error.status in (401, 403):
                    return InfrastructureResult(-1, crash_reason=f"cannot watch the Job's pods: {kstatus.explain(error)}")
                failures += 1
                self._backoff(handle, failures, error)
            except Exception as error:  # noqa: BLE001 - dropped connection, timeout, TLS reset...
                failures += 1
                self._backoff(handle, failures, error)

    def _backoff(self, handle: RunJob, failures: int, error: BaseException) -> None:
        handle.reconnects += 1
        log.warning("run %s: watching Job %s: %s: %s (retrying)", handle.run_id, handle.name,
                    type(error).__name__, error)
        # Never give up on a Job because its API is away: the run may well be healthy; a stopping
        # worker is ended by its process, and a restarted one recovers the Job.
        time.sleep(min(10.0, 0.2 * 2 ** min(failures, 6)))

    def _pending_left(self, handle: RunJob) -> float:
        if handle.running_pod is not None:
            return float(self.watch_seconds)
        return handle.created + handle.pod_watch_timeout - time.time()

    def _on_pod(self, handle: RunJob, event: str, pod: Any) -> InfrastructureResult | None:
        status = pod.status
        name = pod.metadata.name
        if event == "DELETED":
            return self._check_job(handle, deleted_pod=name)
        self._report_pod(handle, pod)
        if status.phase in ("Succeeded", "Failed"):
            return self._ended(handle, pod)
        if status.phase == "Running":
            if handle.running_pod != name:
                handle.running_pod = name
                self._note(handle, f"pod {name} is running on node {pod.spec.node_name}")
                if handle.stream_output:
                    handle.log_thread = threading.Thread(target=kstatus.stream_logs, args=(self.core, handle, name),
                                                         daemon=True, name=f"k8s-logs-{name}")
                    handle.log_thread.start()
            return None
        # Pending: a reason that will not fix itself ends the run now; otherwise report why it waits.
        for c in status.container_statuses or []:
            waiting = c.state.waiting if c.state else None
            if waiting is not None and waiting.reason in kstatus.FATAL_WAITING:
                return self._give_up(handle, f"pod {name}: {waiting.reason}: {waiting.message or ''}".rstrip(": "))
        reason = kstatus.pending_reason(pod)
        if reason != handle.pending:
            handle.pending = reason
            self._note(handle, f"InfrastructurePending: pod {name} is Pending: {reason}")
        if self._pending_left(handle) <= 0:
            return self._pending_timeout(handle)
        return None

    def _report_pod(self, handle: RunJob, pod: Any) -> None:
        """Send what happened to the pod since it was last seen (scheduled, running, an image-pull
        error, its end): each once per pod, with an id derived from the pod's uid."""
        uid, name = pod.metadata.uid, pod.metadata.name
        job = related("kubernetes-job", handle.subject[RESOURCE_ID], handle.name)
        for key, event, payload in kstatus.pod_happenings(pod, handle.container):
            if f"{uid}/{key}" in handle.reported:
                continue
            handle.reported.add(f"{uid}/{key}")
            self.events.emit(handle.run_id, f"kubernetes.pod.{event}", handle.pod_subject(name, pod.spec.node_name),
                             payload, event_id=derived_id(uid, key), extra_related=[job])

    def _ended(self, handle: RunJob, pod: Any) -> InfrastructureResult | None:
        status = pod.status
        if status.reason == "Evicted":
            return InfrastructureResult(-1, crash_reason=f"pod {pod.metadata.name} was Evicted: {status.message}")
        terminated = None
        for c in status.container_statuses or []:
            if c.name == handle.container and c.state and c.state.terminated:
                terminated = c.state.terminated
        code = terminated.exit_code if terminated is not None else (0 if status.phase == "Succeeded" else -1)
        handle.exit_code = code
        if terminated is not None and terminated.reason == "OOMKilled":
            return InfrastructureResult(code, crash_reason=f"container {handle.container} of pod "
                                        f"{pod.metadata.name} was OOMKilled (out of memory): raise memory_limit")
        detail = f"{terminated.reason}: {terminated.message}" if terminated is not None and terminated.message else ""
        if status.phase == "Succeeded":
            return InfrastructureResult(code, detail)
        # A failed pod: the Job says whether it was the last one and whether Kubernetes killed it
        # (DeadlineExceeded); its controller records that a moment after the pod's end.
        job = self._settled_job(handle)
        if job is None or job is _DELETED:
            return InfrastructureResult(code, detail)
        condition = kstatus.job_outcome(job)
        if condition is None and (job.spec.backoff_limit or 0) > 0:
            return None  # the Job will try another pod
        if condition is not None and condition.reason == "DeadlineExceeded":
            return InfrastructureResult(code, crash_reason=f"Job {handle.name}: DeadlineExceeded: {condition.message}")
        return InfrastructureResult(code, detail)

    def _settled_job(self, handle: RunJob, seconds: float = 5.0) -> Any:
        """The Job once it has an outcome or is being deleted (``_DELETED`` when gone), or as it is
        after ``seconds`` (None if it could not be read). Bounded polling: no event tells us."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                job = self._read_job(handle)
            except Exception as error:  # noqa: BLE001 - the caller decides without it
                log.warning("run %s: reading Job %s: %s", handle.run_id, handle.name, error)
                return None
            if job is None:
                return _DELETED
            if kstatus.job_outcome(job) is not None or job.metadata.deletion_timestamp is not None:
                return job
            if time.monotonic() >= deadline:
                return job
            time.sleep(0.2)

    def _check_job(self, handle: RunJob, deleted_pod: str | None = None) -> InfrastructureResult | None:
        """After a pod vanished or a watch ended: did the Job itself end (deadline, deletion) or the
        pending time run out?"""
        job = self._settled_job(handle, 5.0 if deleted_pod else 0.0)
        if job is None:
            return None
        if job is _DELETED or job.metadata.deletion_timestamp is not None:
            return InfrastructureResult(-1, crash_reason=f"Job {handle.namespace}/{handle.name} was deleted")
        condition = kstatus.job_outcome(job)
        if condition is not None and condition.type == "Failed":
            return InfrastructureResult(handle.exit_code if handle.exit_code is not None else -1,
                                        crash_reason=f"Job {handle.name}: {condition.reason}: {condition.message}")
        if condition is not None:  # Complete, and its pod already gone (TTL): it succeeded
            return InfrastructureResult(handle.exit_code or 0)
        if handle.running_pod is None and self._pending_left(handle) <= 0:
            return self._pending_timeout(handle)
        return None

    def _pending_timeout(self, handle: RunJob) -> InfrastructureResult:
        why = handle.pending or "no pod was created"
        warnings = kstatus.events(self.core, handle)
        self.events.emit(handle.run_id, "kubernetes.job.pending-timeout", handle.subject,
                         {"pod_watch_timeout": handle.pod_watch_timeout, "pending": why, "warnings": warnings},
                         event_id=derived_id(handle.uid, "pending-timeout"))
        return self._give_up(handle, f"pod did not start within {handle.pod_watch_timeout:g}s ({why})"
                             + (f"; events: {warnings}" if warnings else ""))

    def _give_up(self, handle: RunJob, reason: str) -> InfrastructureResult:
        """The pod will never run: delete the Job so it does not start later behind our back."""
        self.kill(handle, grace_seconds=0)
        return InfrastructureResult(-1, crash_reason=reason)

    # --- kill ----------------------------------------------------------------------------------

    def kill(self, infrastructure: Infrastructure, grace_seconds: float) -> None:
        """Delete the Job with foreground propagation, and its pods with ``grace_seconds`` between
        SIGTERM and SIGKILL (the garbage collector alone would use the pod's own grace period)."""
        from kubernetes.client.exceptions import ApiException

        assert isinstance(infrastructure, RunJob)
        handle = infrastructure
        grace = max(0, round(grace_seconds))
        try:
            self.batch.delete_namespaced_job(handle.name, handle.namespace, propagation_policy="Foreground",
                                             _request_timeout=30)
            for pod in self.core.list_namespaced_pod(handle.namespace, label_selector=handle.selector,
                                                     _request_timeout=30).items:
                try:
                    self.core.delete_namespaced_pod(pod.metadata.name, handle.namespace,
                                                    grace_period_seconds=grace, _request_timeout=30)
                except ApiException as error:
                    if error.status != 404:
                        raise
        except ApiException as error:
            if error.status != 404:
                log.warning("run %s: deleting Job %s: %s", handle.run_id, handle.name, kstatus.explain(error))
        except Exception as error:  # noqa: BLE001 - unreachable API: the Job stays; say so
            log.warning("run %s: deleting Job %s: %s", handle.run_id, handle.name, error)

    # --- restart recovery (the policy: workers/recovery.py) -------------------------------------

    def leftovers(self, namespaces: list[str] | None = None) -> Iterator[Leftover]:
        """The Jobs labelled with this worker's pool and name, in ``namespaces`` (default: the pool
        template's namespace): ``workers/kubernetes/recover.py``."""
        from job_templates.render import render
        from workers.kubernetes.recover import job_leftovers

        if namespaces is None:
            template = self.client.read_work_pool(self.pool).base_job_template
            namespaces = [str(render(template, environ=os.environ).get("namespace") or "default")]
        return job_leftovers(self.batch, self.pool, self.name, namespaces)

    def recover(self, namespaces: list[str] | None = None) -> Recovery:
        """``BaseWorker.recover``, looking for Jobs in ``namespaces`` (default: the pool template's)."""
        return self.recover_from(self.leftovers(namespaces))

    # --- helpers -------------------------------------------------------------------------------

    def _read_job(self, handle: RunJob) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.batch.read_namespaced_job(handle.name, handle.namespace, _request_timeout=30)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _note(self, handle: RunJob, message: str) -> None:
        """Tell the run's logs (``orch flow-run logs``) what only the worker sees."""
        message = REDACTOR.scrub(message)
        log.info("run %s: %s", handle.run_id, message)
        entry = {"timestamp": dt.datetime.now(dt.UTC), "level": logging.INFO,
                 "name": "orchestrator.worker", "message": message}
        try:
            self.client.write_logs(handle.run_id, [entry])
        except OrchestratorError as error:
            log.warning("run %s: could not write to its logs: %s", handle.run_id, error)
