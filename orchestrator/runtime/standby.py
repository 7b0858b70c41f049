"""The flow-run process's side of a standby (``workers/standby.py`` starts it ahead of a run):
import what every run needs, then wait for the run's order on stdin."""

from __future__ import annotations

import json
import os
import sys


def serve_standby() -> dict[str, object] | None:
    """In the standby process: import the heavy parts, then wait for the run's order."""
    import orchestrator.parameters  # noqa: F401
    import orchestrator.schemas  # noqa: F401 - pydantic and the wire models: most of the import time
    import orchestrator.sdk.flows  # noqa: F401

    line = sys.stdin.readline()
    if not line:
        return None  # the worker stopped
    order: dict[str, object] = json.loads(line)
    os.environ.update(order.get("env") or {})  # type: ignore[arg-type]
    if order.get("cwd"):
        started_in = os.getcwd()
        os.chdir(str(order["cwd"]))
        if sys.path and sys.path[0] in ("", started_in):
            sys.path[0] = os.getcwd()  # as if started there, like a fresh `python -m` would be
    return order
