"""Tasks called outside any flow, as in Prefect 3: each call, ``.submit()`` and ``.map()`` element
is a task run of its own, with the task's retries, timeout, hooks, ``log_prints`` and
``return_state``, its INFO records shown on the console as a directly called flow's are.

They are recorded through the API (``POST /api/task_runs``, no flow run) when one is configured:
``ORCH_API_URL`` set in the environment. A thread sends them in batches, as the flow-run process
sends its task runs: a task never waits on the network and never fails because the API is down
(the shipper says so on stderr), and what is still queued is sent when the program exits. Without
``ORCH_API_URL`` nothing is sent and no server is needed or started: unlike Prefect, which starts
an ephemeral server in the process, a script's tasks then cost nothing but their own work.

While any of its task runs is open, the program keeps one lease for all of them (a heartbeat each
period, sent by the same thread): killed (SIGKILL, a lost machine), it stops beating, and the
server's reaper marks those task runs CRASHED, as Prefect does.
"""

from __future__ import annotations

import atexit
import os
import threading
import uuid
from typing import TYPE_CHECKING

from orchestrator.sdk import running

if TYPE_CHECKING:
    from orchestrator.sdk.task_runs import TaskRunShipper

API_URL_VARIABLE = "ORCH_API_URL"
_context: running.FlowContext | None = None
_lock = threading.Lock()


def context() -> running.FlowContext:
    """What task runs outside any flow share in this process: the task-run names' counters and the
    shipper (None when no API is configured). Made at the first such call."""
    global _context
    with _lock:
        if _context is None:
            _context = running.FlowContext(flow=None, shipper=_shipper())
        return _context


def api_configured() -> bool:
    """Whether runs of this program are recorded: ``ORCH_API_URL`` is in the environment (the
    settings read it whatever its case). Task runs outside flows and flows called directly
    (``sdk/direct_runs.py``) share this switch, read once, at the first of them: every direct call
    asks, and reading the environment's names costs more than a plain flow call (10-30 µs)."""
    global _configured
    if _configured is None:
        _configured = any(name.upper() == API_URL_VARIABLE for name in os.environ)
    return _configured


_configured: bool | None = None


def _shipper() -> TaskRunShipper | None:
    if not api_configured():
        return None
    try:
        from orchestrator.client import Client
        from orchestrator.sdk.task_runs import TaskRunShipper
        from orchestrator.settings import Settings

        settings = Settings()
        shipper = TaskRunShipper(Client.from_settings(settings), None, holder=uuid.uuid4(),
                                 heartbeat_seconds=settings.worker_heartbeat_seconds)
    except Exception as error:  # noqa: BLE001 - bad settings must not fail the task: it runs unrecorded
        running.log.warning("task runs outside flows are not recorded: %s", error)
        return None
    shipper.start()
    atexit.register(shipper.stop)  # after the task threads are joined (threading's exit hooks run first)
    return shipper
