"""The fork server's standby (orchestrator/runtime/forkserver.py): a child forked as a run is delivered,
while its claim is under way, that the run's order is then handed to; as real processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.forks import ready_fork_server, take_refused_order
from tests.harness import wait_until
from workers.forkserver import ForkServer


def children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped yet counts: it runs nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def standby_of(forks: ForkServer) -> int:
    """``prepare``, and the child it made the server fork."""
    server = forks.server_pid
    assert server is not None
    before = children(server)
    forks.prepare()
    [standby] = wait_until("the standby", lambda: children(server) - before, 30, 0.01)
    return standby


def test_the_order_of_a_prepared_run_goes_to_the_child_forked_ahead_with_its_environment_and_folder(
        tmp_path: Path) -> None:
    forks = ready_fork_server()
    try:
        standby = standby_of(forks)
        # The engine reads the variable handed over after the standby was forked, and its exit code
        # comes back from the server as any child's does.
        process = take_refused_order(forks, "given-to-the-standby", str(tmp_path))
        assert process.pid == standby  # no fork after the order
        # one standby, one order: the next order is forked as it comes
        assert take_refused_order(forks, "forked-at-once").pid != standby
    finally:
        forks.close()


def test_a_standby_killed_before_its_order_is_nobody_s_exit_and_the_order_is_forked() -> None:
    forks = ready_fork_server()
    try:
        standby = standby_of(forks)
        os.kill(standby, signal.SIGKILL)
        wait_until("the standby to die", lambda: gone(standby), 30, 0.01)
        assert take_refused_order(forks, "after-the-standby-died").pid != standby
    finally:
        forks.close()


def test_a_standby_ends_with_its_fork_server() -> None:
    forks = ready_fork_server()
    standby = standby_of(forks)
    forks.close()  # the worker stops: the server exits, the standby sees its socket end
    wait_until("the standby to exit", lambda: gone(standby), 30, 0.02)
