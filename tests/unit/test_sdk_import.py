"""`from orchestrator import flow` stays light: every flow file and flow-run process starts with it, so
it loads the decorator and nothing a flow may never use (issue 22's SDK import figure)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["pydantic", "httpx", "sqlalchemy", "celery", "logging", "orchestrator.sdk.deployments",
         "orchestrator.sdk.serve", "orchestrator.sdk.tasks", "orchestrator.sdk.events", "orchestrator.schemas",
         # the standard library's costlier modules, needed only to deploy or run a flow: inspect (with ast,
         # dis, tokenize), hashlib (OpenSSL), subprocess, uuid -- together most of the import's time
         "inspect", "hashlib", "subprocess", "uuid"]


def _loaded_after(statement: str) -> dict[str, bool]:
    code = f"import json, sys\n{statement}\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def test_importing_the_flow_decorator_loads_nothing_heavy() -> None:
    loaded = _loaded_after("from orchestrator import flow")
    assert not any(loaded.values()), [m for m, yes in loaded.items() if yes]


def test_decorating_a_flow_loads_nothing_heavy() -> None:
    loaded = _loaded_after("from orchestrator import flow\n@flow\ndef f(x: int = 1) -> int:\n    return x")
    assert not any(loaded.values()), [m for m, yes in loaded.items() if yes]


def test_what_the_decorator_leaves_for_later_is_still_right() -> None:
    from orchestrator import flow

    def add(x: int) -> int:
        """Add.

        More."""
        return x

    async def later() -> None:
        pass

    assert (flow(add).isasync, flow(later).isasync) == (False, True)
    assert flow(add).description == "Add.\n\nMore."
    assert flow(description="given")(add).description == "given"
    assert flow(description="")(add).description == ""
    assert flow(later).description is None
    assert len(flow(add).source_hash()) == 12


def test_every_public_name_is_still_served() -> None:
    import orchestrator
    from orchestrator.sdk.deployments import run_deployment
    from orchestrator.sdk.logging import get_run_logger
    from orchestrator.sdk.serve import serve

    assert (orchestrator.run_deployment, orchestrator.serve, orchestrator.get_run_logger) == (
        run_deployment, serve, get_run_logger)
    assert all(hasattr(orchestrator, name) for name in orchestrator.__all__)
    loaded = _loaded_after("from orchestrator import serve, run_deployment")
    assert loaded["orchestrator.sdk.serve"] and loaded["orchestrator.sdk.deployments"]
