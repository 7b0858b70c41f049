"""Infrastructure events a worker reports (``orchestrator.process.exited``,
``orchestrator.docker.container.oom-killed``, ``orchestrator.kubernetes.pod.evicted`` ...): what a
user reads when a run CRASHED. The names, resources and payloads are listed in docs/events.md,
"Infrastructure events reported by workers".

A worker has no database: it sends its events through the API with one ``EventEmitter`` of its own
(made on its first event, closed when the worker stops), so an event never makes the worker wait
on the network. Each kind says what happened to which infrastructure (``WorkerEvents.emit``); this
module adds the related resources of the run that infrastructure serves -- the flow run, its flow,
deployment and tags (from the claim), the work pool and the worker -- and chains a run's
infrastructure events with ``follows``.

Resource ids follow the server's scheme (``orchestrator/server/services/emitted.py``); the worker's
own id is rebuilt here (``worker_resource_id``) because workers never import the server.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.schemas.events import EventIn, related, resource

if TYPE_CHECKING:
    from orchestrator import schemas
    from orchestrator.client import Client
    from orchestrator.emitting import EventEmitter

log = logging.getLogger("orchestrator.worker")

PREFIX = "orchestrator"
CLOSE_SECONDS = 5.0  # how long a stopping worker waits for its last events to be sent
# How long a worker's first queued event waits for others to share its POST (a flow-run process's
# wait 50 ms): each run makes two (process started, exited), and a burst of short runs then sends
# one batch for several runs instead of one or two requests per run, API CPU the runs need. When
# the worker's last run ends, what is queued goes at once (``send_now``): lingering on, the batch and
# the API's work on it (its commit, a trigger pass) landed in the way of a run created meanwhile --
# one in five of a one-at-a-time loop, ~15 ms slower each (bench/RESULTS.md, issue 22, branch h3).
LINGER_SECONDS = 0.25
# Ids of events about infrastructure that has an id of its own (a container, a pod) are derived
# from it: a restarted worker watching the same container again reports "exited" once, not twice.
_NAMESPACE = uuid.UUID("0c7c6d0e-2f4b-4f0e-9a57-5b0e6f1d2a93")


def derived_id(*words: object) -> uuid.UUID:
    """The same words, the same event id (the API keeps the first event of an id)."""
    return uuid.uuid5(_NAMESPACE, "/".join(str(w) for w in words))


def resource_id(kind: str, *keys: object) -> str:
    """``orchestrator.<kind>.<key>[.<key>...]``: ``resource_id("docker.container", cid)``."""
    return ".".join([PREFIX, kind, *(str(k) for k in keys)])


def worker_resource_id(pool_name: str, worker_name: str) -> str:
    """As the server names a worker (``emitted.worker_resource_id``): workers are named within their pool."""
    return resource_id("worker", pool_name, worker_name)


class _Worker(Protocol):
    """What of a worker (``workers.base.BaseWorker``) its events need."""

    type: str
    client: Client
    pool: str
    name: str
    api_url: str
    api_key: str | None


@dataclass
class _RunContext:
    related: list[dict[str, str]]
    last_event: uuid.UUID | None = None  # the run's previous infrastructure event: the next ``follows`` it
    lock: threading.Lock = field(default_factory=threading.Lock)


class WorkerEvents:
    """One worker's emitter and the related resources of each run it holds."""

    def __init__(self, worker: _Worker) -> None:
        self._worker = worker
        self._lock = threading.Lock()
        self._emitter: EventEmitter | None = None
        self._closed = False
        self._runs: dict[uuid.UUID, _RunContext] = {}
        self._pool: dict[str, str] | None = None  # the work pool's related labels, read once

    # --- the runs ---------------------------------------------------------------------------------

    def remember(self, claim: schemas.Claim) -> None:
        """Keep the related resources of a run just claimed (its flow, deployment, tags)."""
        run, deployment = claim.flow_run, claim.deployment
        parts = [
            related("flow-run", resource_id("flow-run", run.id), run.name),
            related("flow", resource_id("flow", deployment.flow_id), deployment.flow_name),
            related("deployment", resource_id("deployment", deployment.id), deployment.name),
        ]
        parts += [related("tag", resource_id("tag", tag)) for tag in sorted(set(run.tags))]
        context = _RunContext(parts + self._worker_parts())
        with self._lock:
            self._runs[run.id] = context

    def forget(self, run_id: uuid.UUID) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def _context(self, run_id: uuid.UUID) -> _RunContext:
        """The run's context; for a run this worker did not claim in this life (adopted after a
        restart), the run, pool and worker alone."""
        with self._lock:
            context = self._runs.get(run_id)
        if context is not None:
            return context
        fresh = _RunContext([related("flow-run", resource_id("flow-run", run_id)), *self._worker_parts()])
        with self._lock:
            return self._runs.setdefault(run_id, fresh)

    def _worker_parts(self) -> list[dict[str, str]]:
        worker = self._worker
        parts = [related("worker", worker_resource_id(worker.pool, worker.name), worker.name,
                         **{f"{PREFIX}.worker.type": worker.type})]
        pool = self._pool_labels()
        return [pool, *parts] if pool is not None else parts

    def _pool_labels(self) -> dict[str, str] | None:
        """The work pool as a related resource: the server names pools by id, which a worker learns
        by reading its pool once (on the thread that has just claimed a run, which talks to the API
        anyway). Left out while the API cannot tell."""
        if self._pool is None:
            from orchestrator.errors import OrchestratorError

            try:
                pool = self._worker.client.read_work_pool(self._worker.pool)
            except OrchestratorError as error:
                log.warning("events: cannot read work pool %s for its id: %s", self._worker.pool, error)
                return None
            self._pool = related("work-pool", resource_id("work-pool", pool.id), pool.name,
                                 **{f"{PREFIX}.work-pool.type": pool.type})
        return self._pool

    # --- emitting ---------------------------------------------------------------------------------

    def emit(self, run_id: uuid.UUID, event: str, subject: dict[str, str], payload: dict[str, Any] | None = None,
             *, event_id: uuid.UUID | None = None, extra_related: list[dict[str, str]] | None = None) -> uuid.UUID | None:
        """Queue ``orchestrator.<event>`` about ``subject`` (a resource's labels) for the run
        ``run_id``; returns its id. Never raises and never waits: an event is information, the run
        goes on without it."""
        context = self._context(run_id)
        try:
            with context.lock:
                built = EventIn(id=event_id or uuid.uuid4(), event=f"{PREFIX}.{event}", resource=subject,
                                related=[*(extra_related or []), *context.related], payload=payload or {},
                                follows=context.last_event)
                context.last_event = built.id
            emitter = self._get_emitter()
            if emitter is not None:
                emitter.put(built.model_dump(mode="json"))
            return built.id
        except Exception:  # noqa: BLE001 - a malformed label must not cost the run
            log.exception("run %s: could not emit %s", run_id, event)
            return None

    def emitter(self) -> EventEmitter | None:
        """The worker's emitter (made now if none yet), None once closed."""
        return self._get_emitter()

    def _get_emitter(self) -> EventEmitter | None:
        with self._lock:
            if self._emitter is None and not self._closed:
                from orchestrator.emitting import EventEmitter

                self._emitter = EventEmitter(self._new_client, thread_name=f"events-{self._worker.name}",
                                             linger_seconds=LINGER_SECONDS)
            return self._emitter

    def _new_client(self) -> Client:
        """A client of its own for the emitter, which closes it; it does not retry by itself (the
        emitter keeps the batch and backs off instead)."""
        from orchestrator.client import Client

        worker = self._worker
        return Client(worker.api_url, api_key=worker.api_key, timeout=worker.client.timeout)

    def send_now(self) -> None:
        """Send what is queued now, without lingering and without waiting (``BaseWorker``: its last
        run has ended, so the POST and the API's work on it do not land in a run's way)."""
        with self._lock:
            emitter = self._emitter
        if emitter is not None:
            emitter.send_now()

    def flush(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until the events queued so far are sent."""
        with self._lock:
            emitter = self._emitter
        return True if emitter is None else emitter.flush(timeout)

    def close(self, timeout: float = CLOSE_SECONDS) -> bool:
        """Send what is queued (bounded) and stop the sending thread; later events are dropped."""
        with self._lock:
            emitter, self._emitter, self._closed = self._emitter, None, True
        return True if emitter is None else emitter.close(timeout)


def subject(resource_key: str, name: str | None = None, **labels: str) -> dict[str, str]:
    """The labels of the infrastructure an event is about, ``labels`` keys without the prefix:
    ``subject(resource_id("process", host, pid), host=host)`` gives ``orchestrator.process.host``."""
    kind = resource_key.split(".")[1]
    return resource(resource_key, name, **{f"{PREFIX}.{kind}.{k.replace('_', '-')}": str(v)
                                           for k, v in labels.items()})
