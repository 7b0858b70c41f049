"""orchestrator: deployments, work pools and workers for Python flows.

``import orchestrator`` stays light: the SDK's heavy parts (pydantic models, the HTTP client)
load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.deployments import run_deployment
from orchestrator.flows import Flow, flow
from orchestrator.logging import get_run_logger

# Bound eagerly (the module is standard library only) so that the name always means the function:
# a lazy lookup would lose to the submodule attribute Python sets once ``orchestrator.serve`` is imported.
from orchestrator.serve import serve

if TYPE_CHECKING:
    from orchestrator.schemas import FlowRun, State
    from orchestrator.states import StateType
    from orchestrator.tasks import Task, task, unmapped

__all__ = ["Flow", "FlowRun", "State", "StateType", "Task", "flow", "get_run_logger", "run_deployment", "serve", "task",
           "unmapped"]
__version__ = "0.1.0"

# Names served lazily (PEP 562): they import pydantic, or (tasks) are not needed by every flow run.
_LAZY = {"FlowRun": "orchestrator.schemas", "State": "orchestrator.schemas", "StateType": "orchestrator.states",
         "Task": "orchestrator.tasks", "task": "orchestrator.tasks", "unmapped": "orchestrator.tasks"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
