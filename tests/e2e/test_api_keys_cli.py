"""API keys as a user types them: a bootstrap key creates a pool-limited worker key with the CLI, a
worker runs a flow with it (the flow sees its run's own key, never the worker's), then the worker's
key is revoked and the running worker's next call is refused."""

from __future__ import annotations

import textwrap
import urllib.request

import pytest

from orchestrator.client import Client
from tests.e2e.conftest import Stack
from tests.harness import wait_until

pytestmark = pytest.mark.e2e

BOOT = "e2e-bootstrap-admin-key-0123456789"
FLOWS = textwrap.dedent('''
    import os
    from pathlib import Path
    from orchestrator import flow

    @flow
    def spy() -> None:
        Path("seen-key").write_text(os.environ.get("ORCH_API_KEY", ""))
''')


def metrics(stack: Stack) -> str:
    request = urllib.request.Request(stack.api_url.removesuffix("/api") + "/metrics",
                                     headers={"Authorization": f"Bearer {BOOT}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())


def test_a_worker_key_runs_flows_with_run_keys_and_is_revoked_at_once(stack: Stack) -> None:
    stack.env.update({"ORCH_SERVER_API_KEYS": BOOT, "ORCH_API_KEY": BOOT, "ORCH_WORKER_HEARTBEAT_SECONDS": "1"})
    stack.start_server()
    assert stack.orch("work-pool", "create", "local", "--type", "process").returncode == 0
    created = stack.orch("api-key", "create", "workers", "--scope", "worker", "--pool", "local")
    assert created.returncode == 0, created.stderr
    worker_key = created.stdout.strip().splitlines()[-1]
    assert worker_key.startswith("orch_")
    (stack.project / "flows.py").write_text(FLOWS)
    deployed = stack.python('from flows import spy; spy.deploy(name="d", work_pool_name="local")')
    assert deployed.returncode == 0, deployed.stderr

    admin = Client(stack.api_url, api_key=BOOT)
    try:
        stack.spawn("worker", [*stack.orch_argv, "worker", "start", "--pool", "local"], cwd=stack.project,
                    env={**stack.env, "ORCH_API_KEY": worker_key})
        wait_until("the worker online", lambda: [w for w in admin.list_workers("local") if w.status == "ONLINE"],
                   60, alive=stack.check_alive, describe=stack.all_logs)
        ran = stack.orch("deployment", "run", "spy/d", "--watch")
        assert ran.returncode == 0 and "COMPLETED" in ran.stdout, ran.stdout + ran.stderr + stack.all_logs()
        seen = (stack.project / "seen-key").read_text()
        assert seen.startswith("orch_") and seen not in (worker_key, BOOT)  # the run's own key

        revoked = stack.orch("api-key", "revoke", "workers")
        assert revoked.returncode == 0, revoked.stderr
        wait_until("the worker's next call refused", lambda: 'orch_auth_failures_total{reason="revoked"} 0.0'
                   not in metrics(stack), 10, 0.1, describe=stack.all_logs)
        wait_until("the worker to log the refusal", lambda: "API key revoked" in stack.log_tail("worker"), 10)
    finally:
        admin.close()
