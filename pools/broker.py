"""The broker interface: publish "run X is due" onto a pool's queue.

``CeleryBroker`` is the real one (Redis in production, kombu's SQLAlchemy transport as the
embedded default, ``memory://`` inside one process; on the first two it publishes without Celery's
per-message cost, ``pools/publish.py``); ``MemoryBroker`` is its in-memory twin for unit tests.
Both pass ``tests/unit/test_broker_conformance.py``. Delivery is at least once: a
duplicate message is harmless because the claim settles who runs a run.
"""

from __future__ import annotations

import collections
import threading
import uuid
from typing import TYPE_CHECKING, Protocol

from pools.errors import BrokerUnavailable
from pools.names import RUN_FLOW_TASK

if TYPE_CHECKING:
    from celery import Celery


class RunBroker(Protocol):
    url: str

    def identity(self) -> str:
        """This broker's id, the same for every client of the same broker (``pools/identity.py``):
        how a worker checks it listens where the server publishes. Raises ``BrokerUnavailable``
        when the broker cannot be reached within a few seconds."""

    def publish(self, queue: str, run_id: uuid.UUID) -> None:
        """Put one "run is due" message on ``queue``. Raises ``BrokerUnavailable`` when the
        broker cannot take it; the caller leaves the run to the dispatcher's retry."""

    def send(self, queue: str, run_id: uuid.UUID) -> None:
        """``publish``, perhaps without waiting for the broker to confirm it (Redis: its reply is
        read at the connection's next use). Raises ``BrokerUnavailable`` when the message cannot
        be sent; one the broker then refuses or may have lost shows in ``lost``."""

    def lost(self) -> list[tuple[uuid.UUID, str]]:
        """The runs of sent messages (``send``) the broker refused or may have lost, with the reason,
        each reported once: those found so far. The caller leaves them to the dispatcher's retry."""

    def settle(self) -> None:
        """Find out now what became of every message sent so far (``lost`` then says)."""

    def depth(self, queue: str) -> int | None:
        """How many messages wait on ``queue``, not yet taken by a consumer; None when this broker
        cannot tell cheaply. The dispatcher re-publishes an unclaimed run only when the queue holds
        fewer messages than it has unclaimed runs (a message was lost), never on top of a backlog.
        Raises ``BrokerUnavailable`` when the broker cannot be reached."""

    def drain(self, queue: str, *, timeout: float = 1.0) -> list[uuid.UUID]:
        """Take every message now on ``queue`` (waiting up to ``timeout`` for the first one).
        Used by tests and tools; workers consume through Celery."""

    def close(self) -> None:
        """Release connections."""


# ``sqla+sqlite:///...`` URLs are served by our tuned subclass of kombu's SQLAlchemy transport.
EMBEDDED_TRANSPORT = "orchsqla"


def celery_app(broker_url: str, *, name: str = "orchestrator") -> Celery:
    """The Celery app shared by the publishing control plane and the consuming workers."""
    from celery import Celery
    from kombu.transport import TRANSPORT_ALIASES

    if broker_url.startswith("sqla+"):
        TRANSPORT_ALIASES.setdefault(EMBEDDED_TRANSPORT, "pools.sqla_transport:Transport")
        broker_url = EMBEDDED_TRANSPORT + broker_url.removeprefix("sqla")
    app = Celery(name, broker=broker_url, set_as_current=False)
    # A worker lists its queues by priority (1 first) and always takes from the first non-empty
    # one, so when its slots are scarce the most important queue goes first.
    options: dict[str, object] = {"queue_order_strategy": "priority"}
    if broker_url.startswith(("redis://", "rediss://")):
        # No ack emulation: a message leaves Redis with the worker's BRPOP and is acknowledged in
        # memory, instead of being copied into kombu's "unacked" hash as it arrives and deleted from
        # it as the task starts: two MULTI/EXEC pipelines, ~0.9 ms of the consumer's CPU and ~1 ms
        # of the delivery's wall (bench/delivery_floor.py; bench/RESULTS.md, issue 22, "The
        # delivery hop"). That copy only guarded the instant between the BRPOP and the task's
        # start (the ack comes then: ``task_acks_late`` below), and its restore came after an
        # hour's visibility timeout; a message taken by a worker that dies before its claim is
        # the dispatcher's to publish again, as a lost one (``dispatcher_redispatch_seconds``).
        options.update(ack_emulation=False, socket_connect_timeout=5, socket_timeout=10)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        # Results off: a run's outcome is its final state, which the flow-run process reports to the
        # API; the task only starts it. No result backend is configured, so stored results would
        # go nowhere, and each task would pay to try.
        task_ignore_result=True,
        # The message is acknowledged when the task starts (Celery's default, stated): the run's
        # real safety net is the claim in the database and the dispatcher re-publishing unclaimed
        # due runs.
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        # Not ``worker_disable_prefetch``: it keeps a worker at its limit from taking a run another
        # worker could start (with the ack at the task's start, its credit comes back at once), but
        # its consumer then asks Redis again only when its event loop next wakes: 100 runs at limit
        # 8 went 1,841 -> 534 runs/min (bench/worker_path.py; bench/RESULTS.md, issue 22). Such a
        # held run waits for the worker's next free slot or the dispatcher's redispatch.
        broker_connection_retry_on_startup=True,
        broker_transport_options=options,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        # Task events off (Celery's defaults, stated): nothing here reads Celery's event stream
        # (no Flower); a run's states and events go to the API (``/api/events``), which is what
        # ``orch`` and the UI read. On the embedded broker Celery's events could not travel at all:
        # they are broadcasts, which kombu's SQLAlchemy transport does not carry.
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


class CeleryBroker:
    def __init__(self, broker_url: str) -> None:
        self.url = broker_url
        self._app: Celery | None = None
        self._app_lock = threading.Lock()
        # Redis and the embedded broker: the message is written straight into the broker, as Celery
        # would write it (pools/publish.py); any other transport goes through Celery.
        from pools.publish import direct_publisher

        self._direct = direct_publisher(broker_url, self._publish_with_celery)

    @property
    def app(self) -> Celery:
        """The Celery app, built on first use: importing celery and kombu is a large part of an API
        server's start and memory, and a server that publishes nothing (idle, or only answering
        reads) never needs them."""
        if self._app is None:
            with self._app_lock:  # the dispatcher thread and request threads may publish at once
                if self._app is None:
                    self._app = celery_app(self.url)
        return self._app

    def identity(self) -> str:
        from pools import identity

        return identity.ensure(self.url)

    def publish(self, queue: str, run_id: uuid.UUID) -> None:
        if self._direct is not None:
            self._direct.publish(queue, run_id)
        else:
            self._publish_with_celery(queue, run_id)

    def send(self, queue: str, run_id: uuid.UUID) -> None:
        if self._direct is not None:
            self._direct.send(queue, run_id)
        else:
            self._publish_with_celery(queue, run_id)

    def lost(self) -> list[tuple[uuid.UUID, str]]:
        return self._direct.lost() if self._direct is not None else []

    def settle(self) -> None:
        if self._direct is not None:
            self._direct.settle()

    def depth(self, queue: str) -> int | None:
        return self._direct.depth(queue) if self._direct is not None else None

    def _publish_with_celery(self, queue: str, run_id: uuid.UUID) -> None:
        app = self.app  # outside the try: a broken installation is not an unavailable broker
        try:
            app.send_task(RUN_FLOW_TASK, args=[str(run_id)], queue=queue, retry=False)
        except Exception as error:  # kombu raises transport-specific errors; one type for callers
            raise BrokerUnavailable(f"cannot publish to {queue}: {error}") from error

    def drain(self, queue: str, *, timeout: float = 1.0) -> list[uuid.UUID]:
        from queue import Empty

        found: list[uuid.UUID] = []
        with self.app.connection_for_read() as connection:
            simple = connection.SimpleQueue(queue, no_ack=True)
            try:
                wait = timeout
                while True:
                    try:
                        message = simple.get(block=True, timeout=wait)
                    except Empty:
                        return found
                    args = message.payload[0] if isinstance(message.payload, (list, tuple)) else []
                    found.append(uuid.UUID(args[0]))
                    wait = 0.2
            finally:
                simple.close()

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        if self._app is not None:
            self._app.close()


class MemoryBroker:
    """In-process twin of ``CeleryBroker``."""

    url = "twin://"

    def __init__(self) -> None:
        self._identity = str(uuid.uuid4())
        self._queues: dict[str, collections.deque[uuid.UUID]] = collections.defaultdict(collections.deque)
        self._ready = threading.Condition()
        self.available = True

    def identity(self) -> str:
        if not self.available:
            raise BrokerUnavailable("broker marked unavailable")
        return self._identity

    def publish(self, queue: str, run_id: uuid.UUID) -> None:
        if not self.available:
            raise BrokerUnavailable(f"cannot publish to {queue}: broker marked unavailable")
        with self._ready:
            self._queues[queue].append(run_id)
            self._ready.notify_all()

    def send(self, queue: str, run_id: uuid.UUID) -> None:
        self.publish(queue, run_id)

    def lost(self) -> list[tuple[uuid.UUID, str]]:
        return []

    def settle(self) -> None:
        pass

    def depth(self, queue: str) -> int | None:
        if not self.available:
            raise BrokerUnavailable(f"cannot read {queue}: broker marked unavailable")
        with self._ready:
            return len(self._queues[queue])

    def drain(self, queue: str, *, timeout: float = 1.0) -> list[uuid.UUID]:
        with self._ready:
            self._ready.wait_for(lambda: bool(self._queues[queue]), timeout=timeout)
            found = list(self._queues[queue])
            self._queues[queue].clear()
            return found

    def close(self) -> None:
        pass


def broker_for_url(url: str) -> RunBroker:
    return MemoryBroker() if url == "twin://" else CeleryBroker(url)
