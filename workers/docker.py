"""The Docker worker: each run is a container on a Docker engine (``DOCKER_HOST`` or the local socket).

The container runs ``python -m orchestrator.engine`` (or the job's ``command``) with the run's
environment; the flow-run process reports its own states and ships its own logs, so this module only
creates the container, watches it exit and stops it on cancel. Containers carry labels naming the
run, the pool and the worker, so that a restarted worker finds them again (``recover``).

Images are never pulled implicitly: ``image_pull_policy`` says when (``Never``, ``IfNotPresent`` --
only when the engine lacks the image --, ``Always``), and containers are made with
``containers.create`` + ``start`` (``containers.run`` would pull).
"""

from __future__ import annotations

import collections
import logging
import re
import secrets
import shlex
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from job_templates import DEFAULT_COMMAND, LABEL_POOL, LABEL_RUN, LABEL_WORKER
from orchestrator import schemas
from workers.base import BaseWorker, Infrastructure, InfrastructureError, InfrastructureResult
from workers.events import derived_id, resource_id, subject
from workers.recovery import Leftover
from workers.redaction import REDACTOR

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

log = logging.getLogger("orchestrator.worker.docker")

TAIL_LINES = 20
# Docker's own labels, beside the shared LABEL_RUN / LABEL_POOL / LABEL_WORKER (job_templates).
LABEL_RUN_NAME = "orchestrator.flow-run-name"
LABEL_DEPLOYMENT = "orchestrator.deployment-id"
LABEL_AUTO_REMOVE = "orchestrator.auto-remove"
PULL_POLICIES = ("Never", "IfNotPresent", "Always")
# How long one blocking ``wait`` call may last before it is re-issued: a dockerd restart or a
# dropped socket then costs one retry, not the run.
WAIT_SLICE_SECONDS = 60


@dataclass
class RunContainer:
    """One run's container, as ``start`` made it (or ``recover`` found it)."""

    run_id: uuid.UUID
    container_id: str
    name: str
    auto_remove: bool
    stream_output: bool
    image: str = ""
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))
    pump: threading.Thread | None = None
    # Filled by ``wait`` from the container's final inspection.
    exit_code: int | None = None
    oom_killed: bool = False

    @property
    def infrastructure_id(self) -> str:
        return f"docker:{self.container_id}"

    @property
    def subject(self) -> dict[str, str]:
        """The container as an event's resource: ``orchestrator.docker.container.<id>``."""
        return container_subject(self.container_id, self.name, self.image)


class DockerWorker(BaseWorker):
    type = "docker"

    def __init__(self, *args: Any, docker_client: docker.DockerClient | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._docker = docker_client
        self._docker_lock = threading.Lock()

    @property
    def docker(self) -> docker.DockerClient:
        """The engine's client, made on first use from the environment (``DOCKER_HOST``...)."""
        with self._docker_lock:
            if self._docker is None:
                import docker as docker_sdk

                try:
                    # Each running run holds one connection in ``wait`` and one for its output.
                    self._docker = docker_sdk.from_env(max_pool_size=2 * self.limit + 4)
                except docker_sdk.errors.DockerException as error:
                    raise InfrastructureError(f"cannot reach the Docker engine: {error}") from error
            return self._docker

    # --- start ---------------------------------------------------------------------------------

    def start(self, claim: schemas.Claim, job: dict[str, Any]) -> RunContainer:
        from docker.errors import APIError, DockerException, ImageNotFound

        run = claim.flow_run
        image = job.get("image")
        if not image or not isinstance(image, str):
            raise InfrastructureError("the job has no 'image'")
        self._ensure_image(run.id, image, str(job.get("image_pull_policy") or "IfNotPresent"))
        auto_remove = bool(job.get("auto_remove", False))
        labels = {str(k): str(v) for k, v in (job.get("labels") or {}).items()}
        labels.update({
            LABEL_RUN: str(run.id), LABEL_RUN_NAME: run.name, LABEL_POOL: self.pool, LABEL_WORKER: self.name,
            LABEL_AUTO_REMOVE: "true" if auto_remove else "false",
        })
        if run.deployment_id:
            labels[LABEL_DEPLOYMENT] = str(run.deployment_id)
        env = {str(k): str(v) for k, v in (job.get("env") or {}).items()}
        env.update(self.run_environment(run.id, claim))
        options: dict[str, Any] = {
            "command": _command(job.get("command")),
            # No entrypoint unless the job names one: the command is the whole command line, whatever
            # the image's ENTRYPOINT (the project's own image has ENTRYPOINT ["orch"]).
            "entrypoint": _argv(job.get("entrypoint"), "entrypoint") if job.get("entrypoint") else [],
            "environment": env,
            "labels": labels,
            "name": _container_name(run.name),
            # Under an init process a ``docker stop`` SIGTERM reaches the flow-run process: as PID 1
            # itself it would ignore it and only die by SIGKILL after the grace period.
            "init": True,
            "detach": True,
        }
        for key in ("network_mode", "user", "working_dir", "volumes"):
            if job.get(key):
                options[key] = job[key]
        if job.get("mem_limit"):
            options["mem_limit"] = job["mem_limit"]
            # No swap beyond the limit: a flow over its memory is OOM-killed, not slowed to a crawl.
            options["memswap_limit"] = job["mem_limit"]
        if job.get("cpus"):
            options["nano_cpus"] = int(float(job["cpus"]) * 1e9)
        try:
            container = self.docker.containers.create(image, **options)
        except ImageNotFound as error:
            raise InfrastructureError(f"image {image} not found on the Docker engine: {_explain(error)}") from error
        except (APIError, DockerException, TypeError, ValueError) as error:
            raise InfrastructureError(f"cannot create the container: {_explain(error)}") from error
        handle = RunContainer(run.id, container.id, container.name, auto_remove, bool(job.get("stream_output", True)),
                              image)
        self.events.emit(run.id, "docker.container.created", handle.subject, {"image": image},
                         event_id=derived_id(container.id, "created"))
        try:
            container.start()
        except (APIError, DockerException) as error:
            self.events.emit(run.id, "docker.container.start-failed", handle.subject, {"error": _explain(error)},
                             event_id=derived_id(container.id, "start-failed"))
            self._remove(container)
            raise InfrastructureError(f"cannot start container {container.name}: {_explain(error)}") from error
        self.events.emit(run.id, "docker.container.started", handle.subject, {},
                         event_id=derived_id(container.id, "started"))
        log.info("run %s: started container %s (%s)", run.id, container.name, container.short_id)
        self._start_pump(container, handle, run.name)
        return handle

    def _ensure_image(self, run_id: uuid.UUID, image: str, policy: str) -> None:
        """Make the image present as the pull policy says; never pull unless it says so."""
        from docker.errors import APIError, DockerException, ImageNotFound

        if policy not in PULL_POLICIES:
            raise InfrastructureError(f"image_pull_policy must be one of {', '.join(PULL_POLICIES)}, not {policy!r}")
        if policy != "Always":
            try:
                self.docker.images.get(image)
                return
            except ImageNotFound:
                if policy == "Never":
                    raise InfrastructureError(
                        f"image {image} is not on the Docker engine and image_pull_policy is Never") from None
            except (APIError, DockerException) as error:
                raise InfrastructureError(f"cannot inspect image {image}: {_explain(error)}") from error
        from docker.utils import parse_repository_tag

        repository, tag = parse_repository_tag(image)
        log.info("pulling image %s (image_pull_policy %s)", image, policy)
        image_subject = subject(resource_id("docker.image", image), image)
        try:
            # An explicit tag: without one the SDK would pull every tag of the repository.
            pulled = self.docker.images.pull(repository, tag=tag or "latest")
        except (APIError, DockerException) as error:
            self.events.emit(run_id, "docker.image.pull-failed", image_subject,
                             {"image": image, "image_pull_policy": policy, "error": _explain(error)})
            raise InfrastructureError(
                f"cannot pull image {image} (image_pull_policy {policy}): {_explain(error)}") from error
        self.events.emit(run_id, "docker.image.pulled", image_subject,
                         {"image": image, "image_pull_policy": policy, "image_id": getattr(pulled, "id", None)})

    def _start_pump(self, container: Container, handle: RunContainer, prefix: str) -> None:
        handle.pump = threading.Thread(target=_pump, args=(container, handle, prefix), daemon=True,
                                       name=f"docker-logs-{handle.name}")
        handle.pump.start()

    # --- wait / kill ---------------------------------------------------------------------------

    def wait(self, infrastructure: Infrastructure) -> InfrastructureResult:
        import requests
        from docker.errors import APIError, NotFound

        assert isinstance(infrastructure, RunContainer)
        handle = infrastructure
        failures = 0
        while True:
            try:
                self.docker.api.wait(handle.container_id, timeout=WAIT_SLICE_SECONDS)
                inspected = self.docker.api.inspect_container(handle.container_id)
                state = inspected["State"]
            except NotFound:
                return InfrastructureResult(
                    exit_code=-1, crash_reason=f"container {handle.name} was removed while the run was in it")
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, APIError) as error:
                # A still-running container past the slice, or an engine restart: ask again.
                failures = 0 if _is_read_timeout(error) else failures + 1
                if failures:  # the engine is away: the container may well be fine; keep asking
                    log.warning("run %s: waiting on container %s: %s", handle.run_id, handle.name, error)
                    time.sleep(min(10.0, 0.5 * 2 ** min(failures, 5)))
                continue
            if not state.get("Running"):
                break
        if handle.pump is not None:
            handle.pump.join(timeout=5)
        result = _result(handle, state)
        self._report_exit(handle, state, inspected.get("HostConfig") or {})
        if handle.auto_remove:
            self._remove_id(handle.container_id)
        return result

    def _report_exit(self, handle: RunContainer, state: dict[str, Any], host: dict[str, Any]) -> None:
        """``exited`` (and ``oom-killed`` after it): ids derived from the container, so a restarted
        worker that sees the same exit again reports it once."""
        payload = {"exit_code": handle.exit_code, "oom_killed": handle.oom_killed,
                   "error": state.get("Error") or None, "finished_at": state.get("FinishedAt")}
        self.events.emit(handle.run_id, "docker.container.exited", handle.subject, payload,
                         event_id=derived_id(handle.container_id, "exited"))
        if handle.oom_killed:
            self.events.emit(handle.run_id, "docker.container.oom-killed", handle.subject,
                             {"exit_code": handle.exit_code, "memory_limit": host.get("Memory") or None},
                             event_id=derived_id(handle.container_id, "oom-killed"))

    def kill(self, infrastructure: Infrastructure, grace_seconds: float) -> None:
        """``docker stop``: SIGTERM, SIGKILL after ``grace_seconds``."""
        from docker.errors import APIError, NotFound

        assert isinstance(infrastructure, RunContainer)
        try:
            self.docker.api.stop(infrastructure.container_id, timeout=max(0, round(grace_seconds)))
        except NotFound:
            pass
        except APIError as error:
            log.warning("run %s: stopping container %s: %s", infrastructure.run_id, infrastructure.name, error)

    # --- restart recovery (the policy: workers/recovery.py) -------------------------------------

    def leftovers(self) -> Iterator[Leftover]:
        """The containers labelled with this worker's pool and name, running or exited."""
        found = self.docker.api.containers(all=True, filters={"label": [f"{LABEL_POOL}={self.pool}",
                                                                         f"{LABEL_WORKER}={self.name}"]})
        for summary in found:
            labels = summary.get("Labels") or {}
            try:
                run_id = uuid.UUID(labels.get(LABEL_RUN, ""))
            except ValueError:  # labelled by hand, not by ``start``
                continue
            handle = RunContainer(run_id, summary["Id"], summary["Names"][0].lstrip("/"),
                                  labels.get(LABEL_AUTO_REMOVE) == "true", stream_output=False,
                                  image=summary.get("Image") or "")
            yield Leftover(run_id, handle, running=summary.get("State") == "running")

    def clean_up(self, leftover: Leftover) -> None:
        """Stop it, and remove it if the job said ``auto_remove`` (its ``wait`` never ran to do it)."""
        super().clean_up(leftover)
        assert isinstance(leftover.infrastructure, RunContainer)
        if leftover.infrastructure.auto_remove:
            self._remove_id(leftover.infrastructure.container_id)

    def adopt(self, run_id: uuid.UUID, infrastructure: Infrastructure) -> threading.Thread:
        """Follow the container's output again (its tail goes into a crash message), then watch it."""
        assert isinstance(infrastructure, RunContainer)
        self._start_pump(self.docker.containers.get(infrastructure.container_id), infrastructure, infrastructure.name)
        return super().adopt(run_id, infrastructure)

    # --- helpers -------------------------------------------------------------------------------

    def _remove(self, container: Container) -> None:
        self._remove_id(container.id)

    def _remove_id(self, container_id: str) -> None:
        from docker.errors import APIError, NotFound

        try:
            self.docker.api.remove_container(container_id, force=True)
        except NotFound:
            pass
        except APIError as error:
            log.warning("could not remove container %s: %s", container_id[:12], error)


def container_subject(container_id: str, name: str, image: str) -> dict[str, str]:
    return subject(resource_id("docker.container", container_id), name, **({"image": image} if image else {}))


def _result(handle: RunContainer, state: dict[str, Any]) -> InfrastructureResult:
    code = int(state.get("ExitCode", -1))
    handle.exit_code = code
    handle.oom_killed = bool(state.get("OOMKilled"))
    tail = " | ".join(handle.tail)[-1000:]
    if handle.oom_killed:
        reason = f"container {handle.name} was OOM-killed (out of memory; exit code {code}): raise mem_limit"
        return InfrastructureResult(exit_code=code, detail=tail, crash_reason=reason)
    detail = ""
    if state.get("Error"):
        detail = f"docker: {state['Error']}"
    elif code in (137, 143):
        detail = f"killed by {'SIGKILL' if code == 137 else 'SIGTERM'}"
    elif code != 0 and tail:
        detail = f"last output: {tail}"
    return InfrastructureResult(exit_code=code, detail=detail)


def _is_read_timeout(error: Exception) -> bool:
    """The wait slice ran out (requests reports it as a ConnectionError wrapping urllib3's)."""
    import requests
    import urllib3

    return isinstance(error, requests.exceptions.ReadTimeout) or (
        bool(error.args) and isinstance(error.args[0], urllib3.exceptions.ReadTimeoutError))


def _pump(container: Container, handle: RunContainer, prefix: str) -> None:
    """Follow the container's output: keep a tail for crash reports, echo it if asked."""
    pending = b""
    try:
        for chunk in container.logs(stream=True, follow=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                _line(raw, handle, prefix)
    except Exception as error:  # noqa: BLE001 - output is best effort; ``wait`` decides the outcome
        log.debug("run %s: output stream ended: %s", handle.run_id, error)
    if pending:
        _line(pending, handle, prefix)


def _line(raw: bytes, handle: RunContainer, prefix: str) -> None:
    line = REDACTOR.scrub(raw.decode(errors="replace").rstrip("\r"))  # the echo and a crash's detail
    handle.tail.append(line)
    if handle.stream_output:
        print(f"{prefix} | {line}", flush=True)


def _command(command: Any) -> list[str]:
    return _argv(command, "command") if command else list(DEFAULT_COMMAND)


def _argv(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return list(value)
    raise InfrastructureError(f"'{key}' must be a string or a list of strings, not {value!r}")


def _container_name(run_name: str) -> str:
    """``orch-<run name>-<random>``: readable in ``docker ps``, never colliding across retries."""
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", run_name).strip("-.")[:40] or "run"
    return f"orch-{slug}-{secrets.token_hex(3)}"


def _explain(error: Exception) -> str:
    explanation = getattr(error, "explanation", None)
    return str(explanation or error)
