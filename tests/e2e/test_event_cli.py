"""``orch event emit | ls | stream`` as a user types them, against a live API (SQLite)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from orchestrator.settings import Settings
from pools.broker import MemoryBroker
from tests.conftest import LiveServer, live_server
from tests.harness import ORCH_MODULE, clean_env, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(sqlite_url: str, tmp_path: Path) -> Any:
    settings = Settings(home=tmp_path / "home", database_url=sqlite_url, api_url="http://unused/api")
    with live_server(settings, broker=MemoryBroker()) as live:
        yield live


def orch(api: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**clean_env(), "ORCH_API_URL": api.url}
    return subprocess.run([*ORCH_MODULE, *args], capture_output=True, text=True, env=env, timeout=60)


# The stream started as a terminal's foreground command is: SIGINT at its default. A process started
# with SIGINT ignored keeps it ignored (as Python and every Unix tool do: a shell's background job),
# and this test's process may be one (a suite run in the background of a script): the stream would
# then inherit it and sit out the Ctrl-C. ``python -c`` puts the default back and execs the stream.
AT_A_TERMINAL = (sys.executable, "-c", ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                                        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"))


def test_emit_then_ls_and_stream(server: LiveServer, tmp_path: Path) -> None:
    from orchestrator.server.hub import EVENTS

    # PYTHONFAULTHANDLER: a stream that does not stop at Ctrl-C is stopped by SIGABRT, which then
    # writes where each of its threads was into its stderr (the failure's message).
    env = {**clean_env(), "ORCH_API_URL": server.url, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    before = server.ctx.hub.subscriber_count(EVENTS)  # the server's own listeners (the trigger evaluator)
    # stderr to a file: a pipe nobody reads could fill and block the process; the file says what it said
    errors = tmp_path / "stream.stderr"
    with errors.open("w") as stderr:
        follower = subprocess.Popen([*AT_A_TERMINAL, *ORCH_MODULE[1:], "event", "stream", "--event", "my.app.*"],
                                    stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(follower.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until("the CLI's stream to subscribe", lambda: server.ctx.hub.subscriber_count(EVENTS) > before, 30)
        done = orch(server, "event", "emit", "my.app.uploaded", "--resource-id", "my.bucket.1",
                    "--resource", "orchestrator.resource.name=photos", "--payload", '{"size": 3}',
                    "--related", '{"orchestrator.resource.id": "orchestrator.tag.etl", '
                                 '"orchestrator.resource.role": "tag"}')
        assert done.returncode == 0, done.stderr
        assert "recorded" in done.stdout
        assert orch(server, "event", "emit", "other.thing", "--resource-id", "x.1").returncode == 0
        wait_until("the stream to print the event", lambda: any("my.app.uploaded" in line for line in lines), 30)
        assert not any("other.thing" in line for line in lines)
        shown = orch(server, "event", "ls", "--related", "orchestrator.tag.*", "--json")
        assert shown.returncode == 0, shown.stderr
        [event] = json.loads(shown.stdout)
        assert event["payload"] == {"size": 3} and event["resource"]["orchestrator.resource.name"] == "photos"
        table = orch(server, "event", "ls", "--event", "*.thing").stdout
        assert "other.thing" in table and "my.app.uploaded" not in table
    finally:
        signals: list[str] = []  # its signal state, read if it misses the Ctrl-C
        follower.send_signal(signal.SIGINT)
        try:
            follower.wait(10)
        except subprocess.TimeoutExpired:
            signals = [line for line in Path(f"/proc/{follower.pid}/status").read_text().splitlines()
                       if line.startswith(("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt"))]
            follower.send_signal(signal.SIGABRT)
            try:
                follower.wait(10)
            except subprocess.TimeoutExpired:
                follower.kill()
                follower.wait(10)
        finally:
            # Closed and reaped whatever happened: a pipe or a process left to the GC warns in a later test.
            reader.join(5)
            follower.stdout.close()
    said = errors.read_text()
    assert follower.returncode != -signal.SIGABRT, f"orch event stream did not stop within 10 s of Ctrl-C: {signals}; {said}"
    assert follower.returncode == 130 and "Traceback" not in said, said


@pytest.mark.parametrize(("args", "named"), [
    (["event", "emit", "x", "--resource-id", "r", "--payload", "[1]"], "--payload"),
    (["event", "emit", "x", "--resource-id", "r", "--related", "{"], "--related"),
    (["event", "emit", "x", "--resource-id", "r", "--related", '{"orchestrator.resource.id": "a"}'], "role"),
    (["event", "ls", "--since", "yesterday"], "--since"),
    (["event", "emit", "x", "--resource-id", "r", "--occurred", "yesterday"], "--occurred"),
    (["event", "emit", "x", "--resource-id", "r", "--occurred", "2026-01-31T09:00:00"], "zone"),
    (["event", "emit", "x", "--resource-id", "r", "--occurred", "2999-01-31T09:00:00Z"], "60 minutes"),
    (["event", "ls", "--label", "novalue"], "--label"),
])
def test_mistakes_are_one_line(server: LiveServer, args: list[str], named: str) -> None:
    done = orch(server, *args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1 and named in lines[0], done.stderr


def test_emit_when_it_occurred(server: LiveServer) -> None:
    """``--occurred`` sets the event's time (an offset is kept as the same instant, stored in UTC)."""
    done = orch(server, "event", "emit", "my.app.backfilled", "--resource-id", "my.bucket.2",
                "--occurred", "2026-01-31T10:30:00+01:00")
    assert done.returncode == 0, done.stderr
    shown = orch(server, "event", "ls", "--event", "my.app.backfilled", "--json")
    [event] = json.loads(shown.stdout)
    assert event["occurred"].startswith("2026-01-31T09:30:00"), event
