"""An async flow with tasks, served with ``Flow.serve``, run and inspected with the CLI, and the
deployment's history as ``orch deployment history`` shows it -- as a user types it, on both stacks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import urllib.error
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack
from tests.e2e.test_deploy_and_serve import ok, run_result
from tests.harness import wait_until

pytestmark = pytest.mark.e2e

SERVED = textwrap.dedent('''
    import asyncio
    from orchestrator import flow, task

    @task(version="t1", tags=["io"])
    async def shout(text: str) -> str:
        await asyncio.sleep(0.01)
        return text.upper()

    @flow(version="v1", flow_run_name="hello-{name}")
    async def hello(name: str = "world") -> str:
        loud = await shout(name)
        return f"served: hello {loud}"

    if __name__ == "__main__":
        hello.serve("served")
''')


def test_a_served_async_flow_records_its_tasks_and_the_deployment_keeps_its_history(stack: Stack,
                                                                                   tmp_path: Path) -> None:
    (stack.project / "serve_it.py").write_text(SERVED)
    stack.start("server", "server", "start", "--port", str(stack.port))
    stack.wait_healthy()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    serving = subprocess.Popen([sys.executable, "serve_it.py"], cwd=stack.project, env=stack.env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        def serving_alive() -> None:
            assert serving.poll() is None, (tmp_path / "serve.log").read_text()

        wait_until("serve() to register its deployment", lambda: stack.get("/deployments/name/hello/served"), 60,
                   0.2, alive=serving_alive, ignore=(urllib.error.HTTPError,))

        watched = stack.orch("deployment", "run", "hello/served", "--param", "name=e2e", "--watch")
        assert watched.returncode == 0, watched.stdout + watched.stderr + (tmp_path / "serve.log").read_text()
        run = run_result(stack, watched.stdout)
        serving.send_signal(signal.SIGINT)  # Ctrl-C: the deployment is paused
        assert serving.wait(timeout=60) is not None
    finally:
        if serving.poll() is None:
            serving.kill()
            serving.wait(timeout=10)
        log.close()

    assert (run["state"]["type"], run["result"]) == ("COMPLETED", "served: hello E2E")
    assert (run["flow_version"], run["name"]) == ("v1", "hello-e2e")
    [task_run] = run["task_runs"]
    assert (task_run["name"], task_run["task_name"], task_run["version"], task_run["tags"]) == \
        ("shout-0", "shout", "t1", ["io"])
    assert (task_run["state_type"], task_run["run_count"]) == ("COMPLETED", 1)

    history = json.loads(ok(stack.orch("deployment", "history", "hello/served", "--json"), stack))
    assert [entry["action"] for entry in history] == ["created", "paused"]
    assert history[0]["changes"]["version"] == {"from": None, "to": "v1"}
    assert history[1]["changes"] == {"paused": {"from": False, "to": True}}
    assert all(entry["api_key_fingerprint"] is None for entry in history)
    table = ok(stack.orch("deployment", "history", "hello/served"), stack)
    assert "paused: false -> true" in table and "created" in table

    missing = stack.orch("deployment", "history", "nope/missing")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "Error: deployment 'nope/missing' not found", missing.stderr
