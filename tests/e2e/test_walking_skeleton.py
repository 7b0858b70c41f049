"""The walking skeleton, as a user types it: server, pool, deploy, worker, runs, logs."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

FLOWS = textwrap.dedent('''
    from orchestrator import flow, get_run_logger

    @flow
    def add(x: int, y: int = 2) -> int:
        """Add two numbers."""
        print(f"adding {x} + {y}")
        get_run_logger().info("result is %d", x + y)
        return x + y

    @flow
    def explode(reason: str = "boom") -> None:
        raise ValueError(reason)
''')

RUN_AND_REPORT = textwrap.dedent('''
    import json, sys
    from orchestrator import run_deployment
    run = run_deployment(sys.argv[1] if len(sys.argv) > 1 else "add/sum", parameters={"x": 5}, timeout=90)
    print(json.dumps({"id": str(run.id), "state": run.state.type, "message": run.state.message,
                      "result": run.result}))
''')


def deploy(stack: Stack, code: str) -> None:
    result = stack.python(code)
    assert result.returncode == 0, result.stderr


def run_id_from(output: str) -> str:
    match = re.search(r"\(([0-9a-f-]{36})\)", output)
    assert match, output
    return match.group(1)


def test_a_deployment_runs_end_to_end(stack: Stack) -> None:
    stack.start("server", "server", "start", "--port", str(stack.port))
    stack.wait_healthy()
    created = stack.orch("work-pool", "create", "local", "--type", "process")
    assert created.returncode == 0, created.stderr
    (stack.project / "flows.py").write_text(FLOWS)
    deploy(stack, 'from flows import add; add.deploy(name="sum", work_pool_name="local", parameters={"x": 1})')
    stack.start("worker", "worker", "start", "--pool", "local")

    # 1. run_deployment waits for the final state.
    reported = stack.python(RUN_AND_REPORT)
    assert reported.returncode == 0, reported.stderr + stack.all_logs()
    run = json.loads(reported.stdout.strip().splitlines()[-1])
    assert run["state"] == "COMPLETED", run
    assert run["result"] == 7

    # 2. The CLI runs and watches; --param values are read as JSON.
    watched = stack.orch("deployment", "run", "add/sum", "--param", "x=7", "--watch")
    assert watched.returncode == 0, watched.stdout + watched.stderr + stack.all_logs()
    assert "COMPLETED" in watched.stdout
    run_id = run_id_from(watched.stdout)

    # 3. What the flow printed and logged is in its logs.
    logs = stack.orch("flow-run", "logs", run_id)
    assert logs.returncode == 0, logs.stderr
    assert "adding 7 + 2" in logs.stdout
    assert "result is 9" in logs.stdout

    details = json.loads(stack.orch("flow-run", "inspect", run_id).stdout)
    assert details["parameters"] == {"x": 7}
    assert details["result"] == 9
    assert details["worker_name"]
    # its latest events, oldest first: the state changes and what its process reported
    names = [e["event"] for e in details["events"]]
    assert [n for n in names if n.startswith("orchestrator.flow-run.")] == [
        "orchestrator.flow-run.Scheduled", "orchestrator.flow-run.Pending", "orchestrator.flow-run.Running",
        "orchestrator.flow-run.Completed"]
    assert names.index("orchestrator.process.started") < names.index("orchestrator.flow-run.Running")
    states = [s["type"] for s in stack.get(f"/flow_runs/{run_id}/states")]
    assert states == ["SCHEDULED", "PENDING", "RUNNING", "COMPLETED"]


def test_bad_input_gets_clear_errors(stack: Stack) -> None:
    stack.start("server", "server", "start", "--port", str(stack.port))
    stack.wait_healthy()
    assert stack.orch("work-pool", "create", "local", "--type", "process").returncode == 0
    (stack.project / "flows.py").write_text(FLOWS)
    (stack.project / "gone.py").write_text("from orchestrator import flow\n\n@flow\ndef gone() -> None:\n    pass\n")
    deploy(stack, 'from flows import add, explode\n'
                  'add.deploy(name="sum", work_pool_name="local")\n'
                  'explode.deploy(name="e", work_pool_name="local")\n'
                  'from gone import gone; gone.deploy(name="g", work_pool_name="local")')
    (stack.project / "gone.py").unlink()
    stack.start("worker", "worker", "start", "--pool", "local")

    # Unknown deployment: 404 -> one line, non-zero.
    unknown = stack.orch("deployment", "run", "add/nope")
    assert unknown.returncode != 0
    assert unknown.stderr.strip() == "Error: deployment 'add/nope' not found"

    # A parameter failing the schema: named, nothing created.
    bad = stack.orch("deployment", "run", "add/sum", "--param", "x=abc")
    assert bad.returncode != 0
    assert "parameter 'x'" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    missing = stack.orch("deployment", "run", "add/sum")
    assert missing.returncode != 0 and "parameter 'x'" in missing.stderr
    assert stack.get("/flow_runs")["total"] == 0

    # The flow raises: FAILED with the exception type and message; --watch exits non-zero.
    failed = stack.orch("deployment", "run", "explode/e", "--param", "reason=kaput", "--watch")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "FAILED" in failed.stdout and "ValueError: kaput" in failed.stdout
    failed_logs = stack.orch("flow-run", "logs", run_id_from(failed.stdout)).stdout
    assert "Traceback" in failed_logs and "ValueError: kaput" in failed_logs

    # The entrypoint's file is gone: FAILED naming the entrypoint.
    gone = stack.orch("deployment", "run", "gone/g", "--watch")
    assert gone.returncode == 1
    assert "FAILED" in gone.stdout and "gone.py:gone" in gone.stdout

    # A flow defined in a REPL cannot be deployed.
    repl = stack.python('from orchestrator import flow\n'
                        '@flow\ndef f() -> None: pass\n'
                        'f.deploy(name="x", work_pool_name="local")')
    assert repl.returncode != 0 and "interactive session" in repl.stderr


def test_server_unreachable_is_one_line(tmp_path: Path) -> None:
    stack = Stack(tmp_path, {})
    stack.env["ORCH_API_URL"] = "http://127.0.0.1:9/api"
    result = stack.orch("deployment", "ls")
    assert result.returncode != 0
    assert result.stderr.strip().startswith("Error: cannot reach the API at http://127.0.0.1:9/api")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_setting_is_one_line(tmp_path: Path) -> None:
    stack = Stack(tmp_path, {"ORCH_SERVER_PORT": "not-a-port"})
    result = stack.orch("server", "start")
    assert result.returncode != 0
    assert result.stderr.strip().startswith("Error: invalid setting: ORCH_SERVER_PORT:")
    assert "Traceback" not in result.stderr


def test_orch_dev_runs_everything_with_one_command(tmp_path: Path) -> None:
    stack = Stack(tmp_path, {})
    try:
        _dev_scenario(stack)
    finally:
        stack.stop()


def _dev_scenario(stack: Stack) -> None:
    dev = stack.start("dev", "dev", "--port", str(stack.port))
    stack.wait_healthy()
    (stack.project / "flows.py").write_text(FLOWS)
    # The bundled worker creates pool 'default'; deploy once it exists.
    waited = stack.python(textwrap.dedent('''
        import time
        from orchestrator.client import Client
        from orchestrator.errors import NotFound
        from orchestrator.settings import Settings
        client = Client.from_settings(Settings())
        deadline = time.monotonic() + 60
        while True:
            try:
                client.read_work_pool("default")
                break
            except NotFound:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        from flows import add
        add.deploy(name="sum", work_pool_name="default")
    '''))
    assert waited.returncode == 0, waited.stderr + stack.all_logs()
    reported = stack.python(RUN_AND_REPORT)
    assert reported.returncode == 0, reported.stderr + stack.all_logs()
    assert json.loads(reported.stdout.strip().splitlines()[-1])["state"] == "COMPLETED", stack.all_logs()
    dev.terminate()
    assert dev.wait(timeout=30) == 0, stack.all_logs()
