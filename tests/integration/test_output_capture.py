"""Output capture at the file-descriptor level, through a real process worker and engine process:
what the flow, its subprocesses and C code write to descriptors 1 and 2 reaches the run's logs
and the worker's console; ``sys.stdout`` is a real text stream; odd bytes are kept escaped, ANSI
codes kept; nothing is lost at exit. With a fresh process and with one forked by the fork server."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.worker_runs import deploy, new_run
from workers.process import ProcessWorker

pytest_plugins = ["tests.worker_runs"]
pytestmark = pytest.mark.integration

FLOWS_PY = '''\
import ctypes
import logging
import os
import subprocess
import sys

from orchestrator import flow


@flow
def noisy() -> int:
    print("plain print")
    print("to stderr", file=sys.stderr)
    sys.stdout.buffer.write(b"bytes \\xff\\xfe not utf-8\\n")
    assert sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2
    subprocess.run([sys.executable, "-c", "print('child via sys.stdout')"], stdout=sys.stdout, check=True)
    subprocess.run(["sh", "-c", "echo child inherits stderr >&2"], check=True)
    os.write(1, b"raw write to fd 1\\n")
    ctypes.CDLL(None).printf(b"C printf, buffered by stdio\\n")
    print("\\x1b[31mred text\\x1b[0m")
    logging.getLogger("mine").warning("a log record")
    print("last words without a newline", end="")
    return 7


@flow
def flood_and_linger(lines: int = 20000) -> None:
    code = f"import sys\\nfor i in range({lines}): sys.stdout.write(f'line {{i}}\\\\n')"
    subprocess.run([sys.executable, "-c", code], check=True)
    # A child that outlives the run, holding descriptors 1 and 2: the run must not wait for it.
    subprocess.Popen(["sleep", "20"], start_new_session=True)
    print("done flooding")


@flow
def dies_hard(how: str = "exit") -> None:
    print("last words on stdout")  # no flush=True: sys.stdout is line-buffered
    print("last words on stderr", file=sys.stderr)
    if how == "exit":
        os._exit(7)
    elif how == "segfault":
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    elif how == "abort":
        ctypes.CDLL(None).abort()  # what a C extension does when an assertion fails
    elif how == "fatal_error":
        ctypes.pythonapi.Py_FatalError(b"the interpreter gives up")  # writes to descriptor 2, then abort()


@flow
def c_writes_holding_the_gil(size: int = 512 * 1024) -> None:
    line = b"y" * 99 + b"\\n"
    ctypes.PyDLL(None).write(1, line * (size // 100), size // 100 * 100)  # PyDLL: the GIL stays held


@flow
def exits(code: int = 3) -> None:
    print("said before sys.exit")
    sys.exit(code)
'''


@pytest.fixture
def flow_dir(tmp_path: Path) -> Path:
    path = tmp_path / "flows"
    path.mkdir()
    (path / "flows.py").write_text(FLOWS_PY)
    return path


def run_noisy(worker_api: Any, flow_dir: Path, *, prewarm: bool, function: str = "noisy",
              parameters: dict[str, Any] | None = None) -> tuple[Any, list[Any]]:
    from orchestrator import schemas

    client = worker_api.client()
    pool = f"process-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(schemas.WorkPoolCreate(name=pool, type="process"))
    run = new_run(client, deploy(client, pool, flow_dir, function, {}), parameters=parameters or {})
    worker = ProcessWorker(client, pool=pool, name="capture", api_url=worker_api.url, prewarm=prewarm)
    try:
        if prewarm:
            worker.start_heartbeat()  # starts the fork server
            assert worker._forks is not None and worker._forks.wait_ready(60), "no fork server ready"
        worker.handle(run.id)  # returns once the process has exited and the run is settled
    finally:
        worker.stop()
    logs: list[Any] = []
    while batch := client.read_logs(run.id, after=logs[-1].id if logs else 0):
        logs += batch
    return client.read_flow_run(run.id), logs


@pytest.mark.parametrize("prewarm", [False, True], ids=["fresh-process", "forked-process"])
def test_everything_written_to_fd_1_and_2_reaches_the_logs_and_the_console(
        worker_api: Any, flow_dir: Path, prewarm: bool, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # With PYTHONUNBUFFERED, Python makes C's stdout unbuffered too: without it, as for most users,
    # the printf line waits in a stdio buffer that os._exit would drop.
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    done, logs = run_noisy(worker_api, flow_dir, prewarm=prewarm)
    assert done.state.type == "COMPLETED", done.state
    assert done.result == 7
    lines = {(entry.name, entry.message): entry.level for entry in logs}
    expected = {
        ("stdout", "plain print"): 20,
        ("stderr", "to stderr"): 30,
        ("stdout", "bytes \\xff\\xfe not utf-8"): 20,  # kept, escaped
        ("stdout", "child via sys.stdout"): 20,
        ("stderr", "child inherits stderr"): 30,
        ("stdout", "raw write to fd 1"): 20,
        ("stdout", "C printf, buffered by stdio"): 20,  # flushed before the final report
        ("stdout", "\x1b[31mred text\x1b[0m"): 20,  # ANSI codes kept
        ("mine", "a log record"): 30,
        ("stdout", "last words without a newline"): 20,  # a partial last line is not lost
    }
    for key, level in expected.items():
        assert lines.get(key) == level, (key, sorted(lines))
    # Python-level writes go to the console at once and the rest through a pipe, yet a descriptor's
    # lines keep the order they were written in, in the logs and on the console.
    in_order = ["plain print", "bytes \\xff\\xfe not utf-8", "child via sys.stdout", "raw write to fd 1",
                "\x1b[31mred text\x1b[0m", "last words without a newline"]
    assert [e.message for e in logs if e.name == "stdout" and e.message in in_order] == in_order
    # A log record is shipped once, not a second time as a line of stderr.
    assert [e.message for e in logs].count("a log record") == 1
    # The worker's console (its stdout, where it echoes the run's output) got the same output.
    console = capsys.readouterr().out
    for text in ("plain print", "to stderr", "child via sys.stdout", "child inherits stderr", "raw write to fd 1",
                 "C printf, buffered by stdio", "\x1b[31mred text", "a log record", "last words without a newline"):
        assert text in console, (text, console)
    positions = [console.index(text) for text in ("plain print", "child via sys.stdout", "raw write to fd 1",
                                                  "\x1b[31mred text")]
    assert positions == sorted(positions), console


def orch_logs(api_url: str, run_id: uuid.UUID, *, terminal: bool, **env: str) -> bytes:
    """``orch flow-run logs RUN`` as a user types it: into a pipe, or into a terminal (a pty)."""
    import os
    import pty
    import subprocess
    import sys

    argv = [sys.executable, "-m", "orchestrator.cli.main", "flow-run", "logs", str(run_id)]
    environ = {**os.environ, "ORCH_API_URL": api_url, "NO_COLOR": "", **env}
    if not terminal:
        return subprocess.run(argv, env=environ, capture_output=True, timeout=60, check=True).stdout
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(argv, env=environ, stdout=follower, stderr=subprocess.DEVNULL)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process exited and the terminal closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=60) == 0
        return b"".join(chunks)
    finally:
        os.close(leader)


def test_flow_run_logs_renders_colours_on_a_terminal_and_strips_them_elsewhere(
        worker_api: Any, flow_dir: Path) -> None:
    done, _ = run_noisy(worker_api, flow_dir, prewarm=False)
    piped = orch_logs(worker_api.url, done.id, terminal=False)
    assert b"red text" in piped and b"\x1b" not in piped
    on_terminal = orch_logs(worker_api.url, done.id, terminal=True)
    assert b"\x1b[31mred text\x1b[0m" in on_terminal
    no_color = orch_logs(worker_api.url, done.id, terminal=True, NO_COLOR="1")
    assert b"red text" in no_color and b"\x1b" not in no_color


def test_a_flood_of_lines_is_all_shipped_and_a_child_left_running_does_not_hold_the_run(
        worker_api: Any, flow_dir: Path) -> None:
    began = time.monotonic()
    done, logs = run_noisy(worker_api, flow_dir, prewarm=False, function="flood_and_linger")
    took = time.monotonic() - began
    assert done.state.type == "COMPLETED", done.state
    printed = [e.message for e in logs if e.name == "stdout"]
    assert printed[-1] == "done flooding"
    assert printed[:-1] == [f"line {i}" for i in range(20000)]  # every line, in order
    assert took < 15, took  # the sleeping child (20 s) keeps the pipe open; the run ends regardless


@pytest.mark.parametrize("prewarm", [False, True], ids=["fresh-process", "forked-process"])
def test_the_last_lines_of_a_process_that_exits_hard_reach_the_console_and_the_crash_message(
        worker_api: Any, flow_dir: Path, prewarm: bool, capsys: pytest.CaptureFixture[str]) -> None:
    # os._exit kills the reading threads with the process: a line waiting in a pipe for them is lost.
    done, _ = run_noisy(worker_api, flow_dir, prewarm=prewarm, function="dies_hard",
                        parameters={"how": "exit"})
    assert done.state.type == "CRASHED", done.state
    assert "exited with code 7" in done.state.message
    assert "last words on stdout" in done.state.message  # the worker's tail of the process's output
    assert "last words on stderr" in done.state.message
    console = capsys.readouterr().out
    assert "last words on stdout" in console and "last words on stderr" in console


@pytest.mark.parametrize("how, signal_name, fatal", [("segfault", "SIGSEGV", "Segmentation fault"),
                                                     ("abort", "SIGABRT", "Aborted"),
                                                     ("fatal_error", "SIGABRT", "the interpreter gives up")])
def test_a_fatal_signal_leaves_its_traceback_on_the_console(
        worker_api: Any, flow_dir: Path, capsys: pytest.CaptureFixture[str],
        how: str, signal_name: str, fatal: str) -> None:
    done, _ = run_noisy(worker_api, flow_dir, prewarm=False, function="dies_hard", parameters={"how": how})
    assert done.state.type == "CRASHED", done.state
    assert f"killed by signal {signal_name}" in done.state.message
    console = capsys.readouterr().out
    assert "last words on stdout" in console and "last words on stderr" in console
    # faulthandler writes to the console's descriptor itself, not into the pipe that dies with the process;
    # at a Py_FatalError, the interpreter flushes sys.stderr after its report, and that waits for the reader.
    assert f"Fatal Python error: {fatal}" in console, console
    assert "in dies_hard" in console  # the flow's frame in the traceback of the crashing thread
    assert console.index("last words on stderr") < console.index("Fatal Python error")


def test_what_a_flow_prints_before_sys_exit_is_in_the_run_s_logs(worker_api: Any, flow_dir: Path) -> None:
    done, logs = run_noisy(worker_api, flow_dir, prewarm=False, function="exits", parameters={"code": 3})
    assert done.state.type == "FAILED", done.state
    assert "SystemExit: 3" in done.state.message
    assert ("stdout", "said before sys.exit") in [(entry.name, entry.message) for entry in logs]


def test_c_code_writing_more_than_a_pipe_s_default_capacity_while_holding_the_gil_does_not_block(
        worker_api: Any, flow_dir: Path) -> None:
    # The reader thread needs the GIL: until the C call returns, only the pipe's capacity holds what it
    # writes (64 KiB by default, which would block the flow for good; 1 MiB here).
    done, logs = run_noisy(worker_api, flow_dir, prewarm=False, function="c_writes_holding_the_gil")
    assert done.state.type == "COMPLETED", done.state
    assert [e.message for e in logs if e.name == "stdout"] == ["y" * 99] * (512 * 1024 // 100)
