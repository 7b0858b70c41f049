"""A new user's first hour with the CLI, typed as the README tells it: ``.deploy()`` says what it
did, ``--watch`` says what a run waits for and gives up after ``--timeout``, runs are found by
name, ``--state`` takes state names, and tables piped to another program keep whole ids."""

from __future__ import annotations

import os
import re
import sqlite3
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack
from tests.harness import wait_until

pytestmark = pytest.mark.e2e

FLOWS = '''
from orchestrator import flow


@flow
def add(x: int, y: int = 2) -> int:
    print(f"adding {x} + {y}")
    return x + y


if __name__ == "__main__":
    add.deploy(name="sum", work_pool_name="local", parameters={"x": 1})
'''


def ok(result: object) -> str:
    assert result.returncode == 0, f"rc={result.returncode}\nstdout:{result.stdout}\nstderr:{result.stderr}"  # type: ignore[attr-defined]
    return result.stdout  # type: ignore[attr-defined, no-any-return]


def started(stack: Stack) -> None:
    stack.start("server", "server", "start", "--port", str(stack.port))
    stack.wait_healthy()
    ok(stack.orch("work-pool", "create", "local", "--type", "process"))
    (stack.project / "flows.py").write_text(FLOWS)
    deployed = stack.python("import runpy; runpy.run_path('flows.py', run_name='__main__')")
    assert ok(deployed) == ("Deployment 'add/sum' deployed to work pool 'local'.\n"
                            "Run it with: orch deployment run add/sum\n")


def test_watch_says_what_a_run_waits_for_and_times_out(stack: Stack) -> None:
    started(stack)
    waited = stack.orch("deployment", "run", "add/sum", "--watch", "--timeout", "3")
    assert waited.returncode == 1, waited
    created, progress = waited.stdout.splitlines()
    name = re.match(r"Created flow run '([\w-]+)' \(([0-9a-f-]{36})\) of add/sum\.", created).group(1)  # type: ignore[union-attr]
    assert progress == "Scheduled: pool 'local' has no online worker (start one: orch worker start --pool local)"
    assert waited.stderr == (f"Error: flow run '{name}' is still Scheduled after 3 s (pool 'local' has no online "
                             f"worker (start one: orch worker start --pool local)); it was not cancelled "
                             f"(orch flow-run cancel {name})\n")
    assert stack.get(f"/flow_runs?name={name}")["items"][0]["state"]["type"] == "SCHEDULED"  # not cancelled

    stack.start("worker", "worker", "start", "--pool", "local")
    wait_until("the worker to be online", lambda: stack.get("/work_pools/local")["status"] == "READY")
    ran = stack.orch("deployment", "run", "add/sum", "--param", "x=7", "--watch", "--timeout", "60")
    lines = ok(ran).splitlines()
    assert not any("no online worker" in line for line in lines), lines
    assert lines[-1].startswith("Flow run '") and lines[-1].endswith("' ended COMPLETED (Completed)")
    assert len(lines) == len(set(lines)), "a progress line per change, not per poll"
    # The first run, waiting until now, is picked up by the worker too; --follow returns at its end.
    assert "adding 1 + 2" in ok(stack.orch("flow-run", "logs", name, "--follow", timeout=60))


def test_run_deployment_logs_what_the_run_waits_for_once(stack: Stack) -> None:
    started(stack)
    result = stack.python(
        "import logging\n"
        "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s %(message)s')\n"
        "from orchestrator import run_deployment\n"
        "run = run_deployment('add/sum', timeout=4)\n"
        "print(run.name, run.state.name)\n")
    name, state = ok(result).split()
    assert state == "Scheduled"
    assert result.stderr.splitlines() == [
        f"WARNING orchestrator.run_deployment flow run '{name}' is Scheduled: pool 'local' has no online worker "
        "(start one: orch worker start --pool local)"]


def test_timeout_without_watch_is_refused(stack: Stack) -> None:
    started(stack)
    refused = stack.orch("deployment", "run", "add/sum", "--timeout", "3")
    assert (refused.returncode, refused.stdout, refused.stderr) == (1, "", "Error: --timeout only applies with --watch\n")


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_runs_by_name_state_names_and_piped_tables(stack: Stack) -> None:
    started(stack)
    names = []
    for _ in range(3):
        out = ok(stack.orch("deployment", "run", "add/sum", "--start-in", "1h"))
        names.append(re.search(r"'([\w-]+)' \(([0-9a-f-]{36})\)", out).groups())  # type: ignore[union-attr]
    (first, first_id), (second, second_id), (third, third_id) = names

    listed = ok(stack.orch("flow-run", "ls", "--state", "scheduled"))  # piped: captured, not a terminal
    rows = [line for line in listed.splitlines() if first_id in line]
    assert len(rows) == 1 and re.search(rf"{first_id} \S* {first}\s+\S* add\s+\S* sum\s+\S* Scheduled", rows[0])
    assert all(len(line) > 80 for line in listed.splitlines()[1:4]), "not cut to 80 columns"
    for state in ("Scheduled", "SCHEDULED", "late", "Late", "awaiting-retry", "Completed"):
        ok(stack.orch("flow-run", "ls", "--state", state))
    assert first_id not in ok(stack.orch("flow-run", "ls", "--state", "Late"))
    bad = stack.orch("flow-run", "ls", "--state", "sleepy")
    assert bad.returncode == 2  # a usage error, as every option value the parser refuses
    assert bad.stderr.startswith("Error: Invalid value for '--state': unknown state 'sleepy'; a type (SCHEDULED, ")
    assert len(bad.stderr.splitlines()) == 1

    assert f'"id": "{first_id}"' in ok(stack.orch("flow-run", "inspect", first))
    assert ok(stack.orch("flow-run", "cancel", first)) == f"Flow run '{first}' is CANCELLED.\n"
    assert ok(stack.orch("flow-run", "logs", first)) == ""
    missing = stack.orch("flow-run", "logs", "no-such-run")
    assert (missing.returncode, missing.stderr) == (1, "Error: no flow run is named 'no-such-run' (nor is it a run id)\n")

    # Names are random; two runs sharing one is rare but possible, and must be an error naming both.
    with sqlite3.connect(Path(stack.env["ORCH_HOME"]) / "orchestrator.db") as db:
        db.execute("UPDATE flow_runs SET name = 'twin-otter' WHERE id IN (?, ?)",
                   (uuid.UUID(second_id).hex, uuid.UUID(third_id).hex))
    twins = stack.orch("flow-run", "cancel", "twin-otter")
    assert twins.returncode == 1 and len(twins.stderr.splitlines()) == 1, twins
    assert twins.stderr.startswith("Error: 2 flow runs are named 'twin-otter': ")
    assert second_id in twins.stderr and third_id in twins.stderr and twins.stderr.endswith("; give the id\n")


def test_a_paused_deployments_schedules_say_they_create_nothing(stack: Stack) -> None:
    """Pausing a deployment, then adding a schedule to it: `schedule ls` showed a next time no run
    would come at, and nothing said why no run came."""
    started(stack)
    ok(stack.orch("deployment", "pause", "add/sum"))
    note = ("Note: deployment add/sum is paused: its schedules create no runs until "
            "`orch deployment resume add/sum`")
    created = ok(stack.orch("deployment", "schedule", "create", "add/sum", "--interval", "1h", "--slug", "hourly"))
    assert created == f"Created schedule 'hourly' of add/sum: every 1h from 2020-01-01T00:00:00+00:00 (UTC).\n{note}.\n"
    listed = ok(stack.orch("deployment", "schedule", "ls", "add/sum"))
    assert listed.endswith(f"{note}.\n") and next_time(listed) == "", listed
    assert ok(stack.orch("deployment", "schedule", "preview", "add/sum", "-n", "1")).startswith(f"{note}; the times")

    ok(stack.orch("deployment", "resume", "add/sum"))
    listed = ok(stack.orch("deployment", "schedule", "ls", "add/sum"))
    assert "Note:" not in listed and re.fullmatch(r"\S+T\d\d:00:00\+00:00", next_time(listed)), listed


def next_time(listed: str) -> str:
    """The `next` cell of the schedule `hourly` in `orch deployment schedule ls`'s table."""
    row = next(line for line in listed.splitlines() if "hourly" in line)
    return row.split("│")[-2].strip()


def test_a_worker_run_as_root_does_not_tell_of_celerys_uid_option(stack: Stack) -> None:
    """Celery's warning to a worker run as root names an option (--uid) `orch worker start` lacks,
    about pickled messages this app never accepts: not shown (a container's default user is root)."""
    if os.geteuid() != 0:
        pytest.skip("Celery warns only a worker run as root")
    started(stack)
    stack.start_worker("local")
    ok(stack.orch("deployment", "run", "add/sum", "--watch", "--timeout", "60"))  # its Celery worker is up
    log = (stack.logs / "worker.log").read_text()
    assert "superuser privileges" not in log and "--uid" not in log, log


def test_version_and_help_need_no_server(tmp_path: Path) -> None:
    from importlib.metadata import version

    stack = Stack(tmp_path, {})
    assert ok(stack.orch("--version")) == f"orchestrator {version('orchestrator')}\n"
    for command in (["flow-run", "cancel"], ["deployment", "run"], ["deploy"], []):
        text = ok(stack.orch(*command, "--help"))
        assert "<bool>" not in text and "<list[str]>" not in text and "<str>" not in text
