"""orchestrator: deployments, work pools and workers for Python flows.

``import orchestrator`` stays light: the SDK's heavy parts (pydantic models, the HTTP client)
load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.sdk.flows import Flow, flow

if TYPE_CHECKING:
    from orchestrator.schemas import FlowRun, State
    from orchestrator.sdk.deployments import run_deployment
    from orchestrator.sdk.events import emit_event
    from orchestrator.sdk.logging import get_run_logger
    from orchestrator.sdk.serve import serve
    from orchestrator.sdk.tasks import Task, task, unmapped
    from orchestrator.states import StateType

__all__ = ["Flow", "FlowRun", "State", "StateType", "Task", "emit_event", "flow", "get_run_logger", "run_deployment",
           "serve", "task", "unmapped"]
__version__ = "0.1.0"

# Names served lazily (PEP 562): they import pydantic, or are not needed by every flow run (tasks,
# events, run_deployment, serve, the run logger): `from orchestrator import flow` imports the decorator only.
_LAZY = {"FlowRun": "orchestrator.schemas", "State": "orchestrator.schemas", "StateType": "orchestrator.states",
         "Task": "orchestrator.sdk.tasks", "task": "orchestrator.sdk.tasks", "unmapped": "orchestrator.sdk.tasks",
         "emit_event": "orchestrator.sdk.events", "run_deployment": "orchestrator.sdk.deployments",
         "get_run_logger": "orchestrator.sdk.logging", "serve": "orchestrator.sdk.serve"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
