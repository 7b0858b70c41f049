"""``orch worker start`` for a process pool forks its fork server from itself at its start
(``cli/worker_start.py``, ``runtime/forkserver_beside.fork_server_beside``), so that the two share the pages of
what both import instead of each holding its own; and the worker's key, which must never reach
the fork server or a flow-run process, is taken out of the worker's environment before that fork."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from pathlib import Path

import pytest

from orchestrator.client import Client
from tests.e2e.conftest import Stack
from tests.harness import wait_until

pytestmark = pytest.mark.e2e

BOOT = "e2e-bootstrap-admin-key-forked-beside-0123456789"
FLOWS = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    from orchestrator import flow

    WORKER_SIDE = ("celery", "kombu", "redis", "billiard", "typer", "click", "workers", "pools")

    @flow
    def parent() -> None:
        Path("parent").write_text(json.dumps({"ppid": os.getppid(), "worker side": sorted(
            name for name in sys.modules if name.split(".")[0] in WORKER_SIDE)}))
''')


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def fork_server_of(worker: int) -> int:
    """The worker's one child that is alive and not a zombie (at idle: its fork server)."""
    alive = [pid for pid in children(worker) if "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()]
    assert len(alive) == 1, alive
    return alive[0]


def shared_dirty_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Shared_Dirty:"):
            return int(line.split()[1])
    raise AssertionError("no Shared_Dirty")


def memory_holds(pid: int, text: bytes) -> bool:
    """Whether ``text`` is anywhere in the readable memory of process ``pid``."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r") or line.rstrip().endswith(("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                if text in mem.read(end - start):
                    return True
            except OSError:
                continue
    return False


def run_parent(stack: Stack) -> int:
    ran = stack.orch("deployment", "run", "parent/d", "--watch")
    assert ran.returncode == 0 and "COMPLETED" in ran.stdout, ran.stdout + ran.stderr + stack.all_logs()
    seen = json.loads((stack.project / "parent").read_text())
    assert seen["worker side"] == []  # forked before the worker imported Celery and its own code
    return int(seen["ppid"])


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_the_fork_server_is_forked_by_the_worker_without_its_key_and_replaced_when_it_dies(stack: Stack) -> None:
    stack.env.update({"ORCH_SERVER_API_KEYS": BOOT, "ORCH_API_KEY": BOOT})
    stack.start_server()
    assert stack.orch("work-pool", "create", "local", "--type", "process").returncode == 0
    (stack.project / "flows.py").write_text(FLOWS)
    deployed = stack.python('from flows import parent; parent.deploy(name="d", work_pool_name="local")')
    assert deployed.returncode == 0, deployed.stderr
    admin = Client(stack.api_url, api_key=BOOT)
    try:
        worker = stack.start("worker", "worker", "start", "--pool", "local", "--limit", "2")
        wait_until("the worker online", lambda: [w for w in admin.list_workers("local") if w.status == "ONLINE"],
                   60, alive=stack.check_alive, describe=stack.all_logs)
        server = fork_server_of(worker.pid)  # the worker is still the process started: same pid
        assert run_parent(stack) == server  # the run was forked by it
        assert worker.poll() is None and fork_server_of(worker.pid) == server

        # Forked from the worker: what both imported is one copy of pages, shared (a fresh
        # interpreter shares nothing with it: a few kB of dirty pages at most).
        assert shared_dirty_kb(server) > 4096
        # The key the worker was started with: in neither process's environment block, nowhere in
        # the fork server's memory; the worker still uses it (it is online and ran the run).
        assert BOOT.encode() not in Path(f"/proc/{server}/environ").read_bytes()
        assert BOOT.encode() not in Path(f"/proc/{worker.pid}/environ").read_bytes()
        assert not memory_holds(server, BOOT.encode())

        # The fork server dies: the worker reaps it, starts a fresh one, and runs go on.
        os.kill(server, signal.SIGKILL)
        def fresh() -> list[int]:  # its command line once exec'd (a fork on its way to exec has the worker's)
            return [p for p in children(worker.pid) if "--fork-server" in Path(f"/proc/{p}/cmdline").read_text()]

        wait_until("a fresh fork server", fresh, 30, 0.05)
        assert not Path(f"/proc/{server}").exists()  # reaped, not left a zombie
        again = fork_server_of(worker.pid)
        assert fresh() == [again]
        wait_until("a run forked by the new fork server", lambda: run_parent(stack) == again, 60, 0.5)
        assert worker.poll() is None
    finally:
        admin.close()
