"""One run's Job, as the worker made it or found it again after a restart."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field

from workers.events import resource_id, subject


@dataclass
class RunJob:
    """One run's Job, as ``start`` made it (or ``recover`` found it)."""

    run_id: uuid.UUID
    namespace: str
    name: str
    uid: str
    container: str
    created: float  # epoch seconds: the pending deadline counts from here
    pod_watch_timeout: float
    stream_output: bool
    resource_version: str | None = None  # of the last pod event seen: a watch resumes from it
    relists: int = 0  # watches restarted from a fresh list after 410 Gone
    reconnects: int = 0  # watches resumed after a dropped connection or a server error
    running_pod: str | None = None
    pending: str = ""  # why the pod is not running yet, as last reported
    exit_code: int | None = None
    done: threading.Event = field(default_factory=threading.Event)
    log_thread: threading.Thread | None = None
    reported: set[str] = field(default_factory=set)  # pod happenings already sent as events ("<pod uid>/<key>")

    @property
    def infrastructure_id(self) -> str:
        return f"kubernetes:{self.namespace}:{self.name}"

    @property
    def subject(self) -> dict[str, str]:
        """The Job as an event's resource: ``orchestrator.kubernetes.job.<namespace>.<name>``."""
        return subject(resource_id("kubernetes.job", self.namespace, self.name), self.name,
                       namespace=self.namespace, uid=self.uid)

    def pod_subject(self, pod: str, node: str | None) -> dict[str, str]:
        """A pod of the Job: ``orchestrator.kubernetes.pod.<namespace>.<name>``."""
        return subject(resource_id("kubernetes.pod", self.namespace, pod), pod, namespace=self.namespace,
                       **({"node": node} if node else {}))

    @property
    def selector(self) -> str:
        return f"controller-uid={self.uid}"
