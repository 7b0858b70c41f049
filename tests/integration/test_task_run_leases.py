"""Task runs outside any flow reach a final state whatever dies: a program killed with SIGKILL
stops beating its one lease, and the reaper marks its open task runs CRASHED; a live program's
task runs are left alone, however long they run. Real subprocesses, a real server, SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from orchestrator import schemas
from orchestrator.server.db import models as m
from orchestrator.server.reaper import Reaper
from orchestrator.server.services import task_runs
from tests.conftest import LiveServer
from tests.harness import clean_env, wait_until

pytestmark = pytest.mark.integration


SCRIPT = '''\
import sys
import time
from pathlib import Path

from orchestrator import task


@task
def quick() -> int:
    return 1


@task
def hangs(name: str) -> None:
    time.sleep(600)


quick()
futures = [hangs.submit(str(i)) for i in range(3)]  # three open task runs, one lease
Path(sys.argv[1]).write_text("started")
futures[0].result()
'''


def start(api: LiveServer, tmp_path: Path, name: str) -> subprocess.Popen[str]:
    script = tmp_path / "tasks.py"
    script.write_text(SCRIPT)
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / name)], text=True,
                            env={**clean_env(), "ORCH_API_URL": api.url}, stderr=subprocess.PIPE)


def states(api: LiveServer) -> dict[str, str]:
    return {f"{t.name}@{t.id}": t.state_type for t in api.client().list_task_runs_outside_flows()}


def test_a_killed_programs_open_task_runs_are_crashed_a_live_ones_are_not(fast_api: LiveServer,
                                                                           tmp_path: Path) -> None:
    killed = start(fast_api, tmp_path, "killed")
    alive = start(fast_api, tmp_path, "alive")
    try:
        for process in (killed, alive):  # six hanging task runs, each program's reported RUNNING
            wait_until("both programs' tasks to run", lambda: (tmp_path / "killed").exists()
                       and (tmp_path / "alive").exists(), timeout=60, alive=lambda p=process: p.poll() is None)
        wait_until("six task runs reported RUNNING",
                   lambda: list(states(fast_api).values()).count("RUNNING") == 6, timeout=30)
        killed.send_signal(signal.SIGKILL)
        assert killed.wait(timeout=30) == -signal.SIGKILL

        def crashed() -> list[schemas.TaskRun]:
            runs = [t for t in fast_api.client().list_task_runs_outside_flows() if t.state_type == "CRASHED"]
            return runs if len(runs) == 3 else []

        lost = wait_until("the killed program's three task runs to be CRASHED", crashed, timeout=60, interval=0.2)
        assert {t.name for t in lost} == {"hangs-0", "hangs-1", "hangs-2"}
        with fast_api.ctx.sessions() as session:  # one lease per program, not one per task run
            holders = dict(session.execute(select(m.TaskRun.id, m.TaskRun.holder_id)
                                           .where(m.TaskRun.task_name == "hangs")).all())
            # the killed program's lease is forgotten with nothing open left; the live one's stays
            assert list(session.scalars(select(m.task_run_holders.c.id))) == list(set(holders.values()) - {
                holders[t.id] for t in lost})
        assert len(set(holders.values())) == 2 and len({holders[t.id] for t in lost}) == 1
        assert all(t.state_name == "Crashed" and t.end_time is not None and "stopped reporting" in
                   (t.state_message or "") for t in lost), lost
        # The live program's three, running as long by now, are RUNNING still; each quick() COMPLETED.
        now = sorted(states(fast_api).values())
        assert now == ["COMPLETED"] * 2 + ["CRASHED"] * 3 + ["RUNNING"] * 3, now
        assert alive.poll() is None
    finally:
        for process in (killed, alive):
            process.kill()
            process.communicate(timeout=30)


def test_a_program_that_exits_ends_its_lease(fast_api: LiveServer, tmp_path: Path) -> None:
    """A program that finishes its tasks ends its lease at exit: no holder row is left behind."""
    script = tmp_path / "quick.py"
    script.write_text("from orchestrator import task\n\n@task\ndef one() -> int:\n    return 1\n\nprint(one())\n")
    done = subprocess.run([sys.executable, str(script)], env={**clean_env(), "ORCH_API_URL": fast_api.url},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "1", done
    assert list(states(fast_api).values()) == ["COMPLETED"]
    with fast_api.ctx.sessions() as session:
        assert session.scalar(select(func.count()).select_from(m.task_run_holders)) == 0


T0 = dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC)


def wire(name: str, state: str) -> schemas.TaskRunWrite:
    return schemas.TaskRunWrite(id=uuid.uuid4(), name=name, task_name="t", state_type=state,
                                state_name=state.title(), created=T0)


def test_the_reaper_judges_a_holder_by_its_heartbeat_at_the_boundary(sessions: Any) -> None:
    """Silence is three heartbeats of the holder (its one beat covers all its runs); a final task
    run, or one without a holder (a flow run's, whose lease is the flow run's), is never touched."""
    # Imported here: on the old tree the test fails rather than the module erroring.
    from orchestrator.server.services import task_run_leases

    holder = uuid.uuid4()
    open_run, done_run, in_flow = wire("a", "RUNNING"), wire("b", "COMPLETED"), wire("c", "RUNNING")
    with sessions.begin() as session:
        task_runs.write(session, None, [open_run, done_run], holder_id=holder)
        task_runs.write(session, None, [in_flow])
        task_run_leases.beat(session, holder, T0)
    reaper = Reaper(sessions, heartbeat_seconds=10, interval_seconds=1, cancelling_timeout_seconds=60)

    def state(run: schemas.TaskRunWrite) -> str:
        with sessions() as session:
            return session.get(m.TaskRun, run.id).state_type

    reaper.tick(T0 + dt.timedelta(seconds=29))
    assert (state(open_run), state(done_run), state(in_flow)) == ("RUNNING", "COMPLETED", "RUNNING")
    reaper.tick(T0 + dt.timedelta(seconds=31))
    assert (state(open_run), state(done_run), state(in_flow)) == ("CRASHED", "COMPLETED", "RUNNING")
    with sessions() as session:  # the silent holder, nothing open left, is forgotten
        assert session.scalar(select(m.task_run_holders.c.id).where(m.task_run_holders.c.id == holder)) is None
