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
    """Exited (a zombie nobody reaped yet counts: it runs nothing). A standby has a thread (its output
    capture's reader): its first thread shows as a zombie while the others still exit, and their
    descriptors (its socket) close with the last, so that one must be gone too."""
    try:
        zombie = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        return zombie and len(list(Path(f"/proc/{pid}/task").iterdir())) <= 1
    except (FileNotFoundError, ProcessLookupError):
        return True


def standby_of(forks: ForkServer) -> int:
    """``prepare``, and the child it made the server fork, once handed to this side."""
    server = forks.server_pid
    assert server is not None
    before = children(server)
    forks.prepare()
    [standby] = wait_until("the standby", lambda: children(server) - before, 30, 0.01)
    wait_until("the standby handed over", lambda: standby in forks.standbys, 30, 0.01)
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


def test_a_standby_captures_its_output_and_connects_to_the_last_order_s_api_before_its_order() -> None:
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    api = f"http://127.0.0.1:{listener.getsockname()[1]}/api"
    forks = ready_fork_server()
    try:
        first = forks.take({"ORCH_FLOW_RUN_ID": "names-the-api", "ORCH_API_URL": api}, None)
        assert first is not None and first.wait(timeout=60) == 2 and first.stdout is not None
        first.stdout.close()
        standby = standby_of(forks)
        # No order yet: it has connected to the API the last order named (the lease's connection and
        # the RUNNING report's) ...
        accepted = [listener.accept()[0] for _ in range(2)]
        # ... and captured its output: descriptor 1 is the capture's pipe, no longer the server's.
        wait_until("the standby's capture", lambda: os.readlink(f"/proc/{standby}/fd/1").startswith("pipe:"), 30, 0.01)
        process = forks.take({"ORCH_FLOW_RUN_ID": "given-after-the-set-up", "ORCH_API_URL": api}, None)
        assert process is not None and process.pid == standby
        assert process.wait(timeout=60) == 2 and process.stdout is not None
        output = process.stdout.read()  # what it wrote reached the order's pipe, the console
        process.stdout.close()
        assert b"got 'given-after-the-set-up'" in output
        for connection in accepted:
            connection.close()
    finally:
        forks.close()
        listener.close()


def test_the_order_of_a_prepared_run_reaches_its_standby_without_waiting_on_the_fork_server() -> None:
    """The worker hands the order to the standby itself: a fork server that cannot run at that moment
    (stopped here) neither delays nor loses the run's start; its exit is still reported once it runs."""
    forks = ready_fork_server()
    server = forks.server_pid
    assert server is not None
    try:
        standby = standby_of(forks)
        os.kill(server, signal.SIGSTOP)
        try:
            process = forks.take({"ORCH_FLOW_RUN_ID": "the-server-stopped"}, None)
            assert process is not None and process.pid == standby and process.stdout is not None
            output = process.stdout.read()  # it ran to its end while the server was stopped
            process.stdout.close()
            assert b"got 'the-server-stopped'" in output
            assert process.poll() is None  # its exit code comes from the server, which has not run
        finally:
            os.kill(server, signal.SIGCONT)
        assert process.wait(timeout=60) == 2
    finally:
        forks.close()


def test_runs_in_a_stream_find_a_standby_forked_as_the_last_one_ended_and_fork_none_during_their_claim() -> None:
    """A second delivery soon after a first: as its run's process ends, a spare standby is forked for
    the next delivery (none was asked for); that delivery takes it, and its order goes to it
    while the fork server cannot even run (stopped): nothing is forked while its claim is under way.
    The spare is dismissed (it exits) once the next run took the spare's place or no delivery came."""
    forks = ready_fork_server()
    server = forks.server_pid
    assert server is not None
    try:
        for run in ("first", "second"):  # delivered within SPARE_SECONDS of each other: a stream
            standby = standby_of(forks)  # a first delivery leaves no spare: this one forks its own
            assert forks.standbys == [standby]
            assert take_refused_order(forks, run).pid == standby
        [spare] = wait_until("a spare standby", lambda: forks.standbys, 30, 0.01)
        assert spare != standby and spare in children(server)
        os.kill(server, signal.SIGSTOP)
        try:
            forks.prepare()  # the next delivery: the spare is its standby
            assert forks.standbys == [spare]
            process = forks.take({"ORCH_FLOW_RUN_ID": "given-to-the-spare"}, None)
            assert process is not None and process.pid == spare and process.stdout is not None
            output = process.stdout.read()  # it ran to its end while the server was stopped
            process.stdout.close()
            assert b"got 'given-to-the-spare'" in output
        finally:
            os.kill(server, signal.SIGCONT)
        assert process.wait(timeout=60) == 2
        # As that run ended (a stream still), another spare; no delivery comes for it: dismissed.
        [another] = wait_until("another spare", lambda: forks.standbys, 30, 0.01)
        wait_until("the spare dismissed", lambda: gone(another) and not forks.standbys, 30, 0.05)
    finally:
        forks.close()

