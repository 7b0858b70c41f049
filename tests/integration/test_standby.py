"""The process worker's standby flow-run process (workers/standby.py), as real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.harness import wait_until
from workers.standby import Standby, usable_for


def wait_for_standby(standby: Standby, timeout: float = 30) -> None:
    # The refill happens in the background.
    wait_until("a standby process", lambda: standby._process is not None, timeout, 0.01)


def test_a_standby_process_runs_with_the_environment_and_folder_it_is_given(tmp_path: Path) -> None:
    standby = Standby()
    try:
        wait_for_standby(standby)
        process = standby.take({"ORCH_FLOW_RUN_ID": "given-after-start"}, str(tmp_path))
        assert process is not None
        assert process.stdout is not None
        output = process.stdout.read()
        process.stdout.close()
        process.wait(timeout=60)
        # The engine saw the variable handed over after its interpreter had started.
        assert process.returncode == 2
        assert b"got 'given-after-start'" in output
        # And a new standby is being made ready for the next run.
        wait_for_standby(standby)
        second = standby._process
        assert second is not None and second.pid != process.pid
    finally:
        standby.close()
    assert second.wait(timeout=10) is not None  # close() stops the waiting one


def test_a_standby_exits_when_its_worker_goes_away() -> None:
    process = subprocess.Popen([sys.executable, "-m", "orchestrator.engine", "--standby"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdin is not None
    process.stdin.close()  # what the kernel does when the worker dies
    assert process.wait(timeout=60) == 0
    assert process.stdout is not None
    process.stdout.close()


def test_runs_that_change_interpreter_start_variables_get_a_fresh_process() -> None:
    assert usable_for({"ORCH_FLOW_RUN_ID": "x", "MY_VAR": "1"})
    assert not usable_for({"PYTHONPATH": "/somewhere"})
    assert not usable_for({"LD_PRELOAD": "lib.so"})
