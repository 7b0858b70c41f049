"""Helpers shared by both sides of bench/compare.py: processes, waits, timestamps, /proc readings."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1]
for _path in (BENCH, BENCH.parent):  # skeleton's helpers; tests.harness, which starts the systems
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from skeleton import pct

from tests.harness import Processes, free_port, wait_until

__all__ = ["FINAL", "Side", "cpu_seconds", "free_port", "kill_tree", "others_stopped", "parse_ts", "pct", "pid_gone", "tree_pids",
           "tree_rss_mb", "wait_until"]

FINAL = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
NOT_YET = (Exception,)  # a server still starting, a transient error: the waits here try again
# Health is polled this often while a server starts (bench/start_floor.py polls its floor as often:
# the cold-start figure and its floor are read to the same 10 ms).
HEALTH_POLL = 0.01


def parse_ts(text: str | None) -> float | None:
    """Server timestamp (ISO 8601, ``Z`` or offset) -> epoch seconds, comparable with ``time.time()``."""
    if not text:
        return None
    return dt.datetime.fromisoformat(text).timestamp()


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    return children


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children, out, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def cpu_seconds(pids: Iterable[int], *, reaped: bool = False) -> float:
    """CPU seconds (utime + stime) so far of the processes ``pids``; one gone meanwhile counts 0.
    ``reaped``: with their children's that they waited for (cutime + cstime: a worker's finished
    flow-run processes)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(field) for field in fields[11:15 if reaped else 13]) / tick
    return total


def tree_rss_mb(pid: int, *, children: bool = True) -> float:
    """Resident memory of a process and its descendants (sum of RSS; shared pages count twice)."""
    total_kb = 0
    for p in tree_pids(pid) if children else [pid]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def tree_pss_mb(pid: int) -> float:
    """Proportional memory of a process and its descendants (sum of PSS, ``/proc/PID/smaps_rollup``): a
    page shared by N processes counts 1/N in each, so a page the worker shares with its fork server
    (or a library shared with any process) is not counted twice, as the RSS sum counts it."""
    total_kb = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def pid_gone(pid: int) -> bool:
    """Exited (a zombie waiting for its parent counts as gone: it runs nothing any more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def halted(pid: int) -> bool:
    """Stopped by a signal (SIGSTOP takes effect when the process next runs, not at ``kill``), or gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "TtZX"
    except (OSError, IndexError):
        return True


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a process and every descendant at once (what losing the machine does); returns the pids."""
    pids = tree_pids(pid)
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    return pids


@contextlib.contextmanager
def others_stopped(sides: Sequence[Side], measured: Side | None, settle: float = 0.0) -> Iterator[None]:
    """SIGSTOP every process of the systems other than ``measured`` (``None``: of every system) for
    the block, SIGCONT after. A figure then has the 2 cores to itself, as in production, instead of
    sharing them with the idle loops of the systems not being measured (databases and Redis keep
    running). ``settle``: seconds to wait once the others are stopped, before the block: the
    measured system was itself stopped a moment ago (while another was measured), and the timers
    that fell due meanwhile (heartbeats, service passes, pollers) fire as it resumes -- that burst
    is not part of the figure."""
    stopped = [pid for side in sides if side is not measured for pid in side.processes()]
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        wait_until("the other systems' processes stopped", lambda: all(map(halted, stopped)), 10, 0.001)
        if settle:
            time.sleep(settle)
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


class Side:
    """One system under test: a server, a worker, three deployments (``noop``, ``sleeper`` on the
    worker's pool, ``idle`` on a pool nobody serves). Subclasses speak their system's API. Its
    processes are started and watched by ``procs`` (``tests.harness``; ours passes its ``Stack``)."""

    label = ""

    def __init__(self, tmp: Path, procs: Processes | None = None, port: int | None = None) -> None:
        from orchestrator.client import Client

        self.tmp = tmp
        self.procs = procs or Processes(tmp, {})
        self.port = port or free_port()
        self.api_base = f"http://127.0.0.1:{self.port}/api"
        self.api = Client(self.api_base, timeout=60.0)
        self.strict_api = self.api  # what the create-run API figure uses: no retries, errors are counted
        self.env: dict[str, str] = self.procs.env
        self.server: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.deployments: dict[str, str] = {}
        self.server_ready_seconds = 0.0

    # --- processes ---------------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], *, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        previous = getattr(self, name, None)
        if isinstance(previous, subprocess.Popen) and previous.poll() is not None:
            self.procs.forget(previous)  # a worker killed on purpose, now replaced
        return self.procs.spawn(name, argv, cwd=cwd, env=env or self.env)

    def processes(self) -> list[int]:
        """The pids of this system's server, worker and their descendants."""
        return [pid for proc in (self.server, self.worker) if proc is not None and proc.poll() is None
                for pid in tree_pids(proc.pid)]

    def check_alive(self) -> None:
        try:
            self.procs.check_alive()
        except RuntimeError as error:
            raise RuntimeError(f"{self.label}: {error}") from None

    def start_server(self, env: dict[str, str] | None = None) -> float:
        """Start the server; return seconds from process start to a healthy answer."""
        began = time.perf_counter()
        self.server = self.spawn("server", self.server_argv(), env=env)
        wait_until(f"{self.label} server health", self.healthy, 180, HEALTH_POLL, alive=self.check_alive,
                   ignore=NOT_YET)
        self.server_ready_seconds = time.perf_counter() - began
        return self.server_ready_seconds

    def healthy(self) -> bool:
        return self.strict_api.request("GET", "/health", timeout=2) is not None

    def stop_process(self, proc: subprocess.Popen[bytes] | None, grace: float = 20.0) -> None:
        """SIGTERM; after ``grace`` SIGKILL to its whole tree (a server may run its own children)."""
        if proc is None:
            return
        self.procs.forget(proc)
        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            kill_tree(proc.pid)
            proc.wait(timeout=10)

    def stop(self, *, keep_tmp: bool = False) -> None:
        if self.worker is not None:  # the worker's flow-run processes too (own sessions)
            pids = tree_pids(self.worker.pid) if self.worker.poll() is None else []
            self.stop_process(self.worker)
            for p in pids[1:]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        self.stop_process(self.server)
        self.api.close()
        self.strict_api.close()
        if not keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- what each system implements ----------------------------------------------------------

    def server_argv(self) -> list[str]:
        raise NotImplementedError

    def setup(self) -> None:
        """Server, pools, deployments and the worker (limit 8), all up."""
        raise NotImplementedError

    def start_worker(self) -> None:
        raise NotImplementedError

    def create_run(self, deployment: str, *, strict: bool = False) -> str:
        """Create a run of ``deployment`` (a key of ``self.deployments``) through the API; its id.
        ``strict``: through ``strict_api`` (never retried)."""
        raise NotImplementedError

    def read_run(self, run_id: str) -> dict[str, Any]:
        """``{"state", "start", "end", "pid"}`` (epoch seconds; pid of the flow-run process or None)."""
        raise NotImplementedError

    def cancel(self, run_id: str) -> None:
        raise NotImplementedError

    def count_final(self, deployment: str) -> int:
        raise NotImplementedError

    # --- common -------------------------------------------------------------------------------

    def wait_final(self, run_id: str, timeout: float, interval: float = 0.1) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            info = self.read_run(run_id)
            return info if info["state"] in FINAL else None

        return wait_until(f"{self.label} run {run_id} final", final, timeout, interval, alive=self.check_alive,
                          ignore=NOT_YET)

    def wait_running(self, run_id: str, timeout: float) -> dict[str, Any]:
        def running() -> dict[str, Any] | None:
            info = self.read_run(run_id)
            if info["state"] in FINAL:
                raise RuntimeError(f"{self.label}: run {run_id} ended {info['state']} before RUNNING")
            return info if info["state"] == "RUNNING" and info["pid"] else None

        return wait_until(f"{self.label} run {run_id} RUNNING", running, timeout, 0.05, alive=self.check_alive)


def new_id() -> str:
    return uuid.uuid4().hex[:8]


def compile_flows(folder: Path, python: str | Path = sys.executable) -> None:
    """Byte-compile a side's flows file once, with the interpreter that loads it: a user's flows are
    compiled by their first run's import and read from ``__pycache__`` after, but this environment
    sets PYTHONDONTWRITEBYTECODE=1, so without it every run of either side compiled its flows file
    again (~0.15-0.3 ms of each of our runs' way to RUNNING, bench/RESULTS.md, issue 22)."""
    subprocess.run([str(python), "-m", "compileall", "-q", str(folder)], check=True, capture_output=True,
                   timeout=120)
