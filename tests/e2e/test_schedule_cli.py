"""``orch deployment schedule ...`` and ``orch deployment backfill`` as a user types them, and a
scheduled run that really runs -- on both stacks."""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from tests.e2e.conftest import Stack
from tests.harness import wait_until

pytestmark = pytest.mark.e2e
T = TypeVar("T")

FLOWS = textwrap.dedent('''
    from orchestrator import flow

    @flow
    def tick(n: int = 0) -> int:
        print("tick", n)
        return n
''')


def ok(done: subprocess.CompletedProcess[str], stack: Stack) -> str:
    assert done.returncode == 0, done.stdout + done.stderr + stack.all_logs()
    return done.stdout


def refused(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    """A user mistake: non-zero exit, one line on stderr naming the problem, no traceback."""
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def runs(stack: Stack, deployment_id: str) -> list[dict[str, Any]]:
    return list(stack.get(f"/flow_runs?deployment_id={deployment_id}&limit=1000")["items"])


def wait_for(what: str, condition: Callable[[], T], stack: Stack, timeout: float = 60.0) -> T:
    return wait_until(what, condition, timeout, describe=stack.all_logs)


@pytest.fixture
def deployed(stack: Stack) -> str:
    stack.start("server", "server", "start", "--port", str(stack.port))
    stack.wait_healthy()
    ok(stack.orch("work-pool", "create", "local", "--type", "process"), stack)
    (stack.project / "flows.py").write_text(FLOWS)
    ok(stack.python('from flows import tick; tick.deploy("every", "local", interval=3600)'), stack)
    return str(stack.get("/deployments/name/tick/every")["id"])


def test_schedule_commands(stack: Stack, deployed: str) -> None:
    out = ok(stack.orch("deployment", "schedule", "ls", "tick/every"), stack)
    assert "interval-" in out and "every 1h" in out

    out = ok(stack.orch("deployment", "schedule", "create", "tick/every", "--cron", "0 9 * * 1-5", "--timezone",
                        "Europe/Berlin", "--slug", "weekdays", "--param", "n=5"), stack)
    assert "Created schedule 'weekdays'" in out and "cron '0 9 * * 1-5' (Europe/Berlin)" in out
    wait_for("3 runs with n=5", lambda: sum(r["parameters"] == {"n": 5} for r in runs(stack, deployed)) == 3, stack)

    preview = ok(stack.orch("deployment", "schedule", "preview", "tick/every", "weekdays", "-n", "4"), stack)
    times = [line.strip() for line in preview.splitlines() if line.startswith("  ")]
    assert len(times) == 4 and all(" 09:00:00 CE" in t for t in times), preview  # CET or CEST

    refused(stack.orch("deployment", "schedule", "pause", "tick/every"), "has 2 schedules", "weekdays")
    ok(stack.orch("deployment", "schedule", "pause", "tick/every", "weekdays"), stack)
    assert not any(r["parameters"] == {"n": 5} for r in runs(stack, deployed))  # gone at once
    assert "paused" in ok(stack.orch("deployment", "schedule", "ls", "tick/every"), stack)
    ok(stack.orch("deployment", "schedule", "resume", "tick/every", "weekdays"), stack)
    wait_for("3 runs with n=5", lambda: sum(r["parameters"] == {"n": 5} for r in runs(stack, deployed)) == 3, stack)
    ok(stack.orch("deployment", "schedule", "delete", "tick/every", "weekdays"), stack)
    assert not any(r["parameters"] == {"n": 5} for r in runs(stack, deployed))

    out = ok(stack.orch("deployment", "schedule", "create", "tick/every", "--interval", "90m", "--anchor-date",
                        "2025-01-01T00:15:00", "--timezone", "America/New_York", "--slug", "odd"), stack)
    assert "every 90m from 2025-01-01T00:15:00-05:00 (America/New_York)" in out


def test_bad_schedule_commands_fail_with_one_line(stack: Stack, deployed: str) -> None:
    create = ("deployment", "schedule", "create", "tick/every")
    refused(stack.orch(*create, "--cron", "61 * * * *"), "cron expression '61 * * * *' is not valid")
    refused(stack.orch(*create, "--cron", "* * * * *", "--interval", "60"), "exactly one of --cron")
    refused(stack.orch(*create, "--rrule", "FREQ=DAILY;COUNT=2"), "COUNT needs a DTSTART")
    refused(stack.orch(*create, "--interval", "P1M"), "months and years")
    refused(stack.orch(*create, "--cron", "* * * * *", "--timezone", "Mars/Base"), "unknown time zone 'Mars/Base'")
    refused(stack.orch(*create, "--cron", "* * * * *", "--param", "n=ten"), "parameter 'n'")
    refused(stack.orch("deployment", "schedule", "pause", "tick/every", "nope"), "schedule 'nope' not found")
    refused(stack.orch("deployment", "schedule", "ls", "tick/nope"), "not found")
    refused(stack.orch("deployment", "backfill", "tick/every", "--start", "yesterday", "--end", "now"),
            "Invalid value for '--start': 'yesterday' is not an ISO 8601 time")


def test_backfill(stack: Stack, deployed: str) -> None:
    args = ("deployment", "backfill", "tick/every", "--start", "2025-01-01T00:00:00+00:00", "--end",
            "2025-01-01T03:00:00+00:00")
    assert "4 runs created, 0 already existed" in ok(stack.orch(*args), stack)
    assert "0 runs created, 4 already existed" in ok(stack.orch(*args), stack)
    backfilled = [r for r in runs(stack, deployed) if "backfill" in r["tags"]]
    assert sorted(r["expected_start_time"][:16] for r in backfilled) == [
        "2025-01-01T00:00", "2025-01-01T01:00", "2025-01-01T02:00", "2025-01-01T03:00"]


def test_a_scheduled_run_runs(stack: Stack, deployed: str) -> None:
    stack.start("worker", "worker", "start", "--pool", "local")
    ok(stack.orch("deployment", "schedule", "create", "tick/every", "--interval", "2", "--slug", "fast",
                  "--param", "n=7"), stack)

    def completed() -> list[dict[str, Any]]:
        return [r for r in runs(stack, deployed)
                if r["parameters"] == {"n": 7} and r["state"]["type"] == "COMPLETED"]

    [first, *_] = wait_for("a completed run", completed, stack)
    assert first["tags"] == ["auto-scheduled"] and first["idempotency_key"].startswith("scheduled:fast:")
    ok(stack.orch("deployment", "schedule", "delete", "tick/every", "fast"), stack)
