"""One way to start the system as a user would: the API server, workers and the CLI as
subprocesses, on the embedded defaults or on PostgreSQL + Redis, and one bounded ``wait_until``.

The end-to-end tests (``tests/e2e``), the fault suite (``tests/faults``) and the benchmarks
(``bench/``) all start the system through this module. The benchmarks run without pytest, so this
module imports nothing from pytest and nothing heavy at import time (the client is imported when
first used); what only tests need (``missing_service``, fixtures) stays in the conftest files.
Benchmarks put the repository root on ``sys.path`` and ``import tests.harness``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")

# The CLI as the tests run it (this interpreter, whatever is first on PYTHONPATH) and as a user types
# it (the console script of this interpreter's environment; the benchmarks time that one).
ORCH_MODULE: tuple[str, ...] = (sys.executable, "-m", "orchestrator.cli.main")
_SCRIPT = Path(sys.executable).parent / "orch"
ORCH_SCRIPT: tuple[str, ...] = (str(_SCRIPT) if _SCRIPT.exists() else "orch",)
FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})
PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
PG_ADMIN = ("psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qc")


def wait_until(what: str, check: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, *,
               alive: Callable[[], object] | None = None, ignore: tuple[type[BaseException], ...] = (),
               describe: Callable[[], str] | None = None) -> T:
    """Call ``check`` every ``interval`` seconds until it returns something truthy, and return that.

    Bounded: after ``timeout`` seconds it raises ``TimeoutError`` naming ``what`` was awaited, the
    last error ``check`` raised (if any) and ``describe()`` (logs, the last state seen). ``alive`` is
    called before each try and raises at once when a process the wait needs has died, so a crash is
    reported as itself, not as a timeout. An exception of a type in ``ignore`` means "not yet" (a
    server still starting, an API stopped on purpose); any other propagates."""
    deadline = time.monotonic() + timeout
    last_error = ""  # its text only: a kept exception would keep its traceback's objects (open sockets) alive
    while True:
        if alive is not None:
            alive()
        try:
            value = check()
        except ignore as error:
            last_error = f"{type(error).__name__}: {error}"
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout:g} s waiting for {what}"
            if last_error:
                message += f" (last error: {last_error})"
            if describe is not None:
                message += f"\n{describe()}"
            raise TimeoutError(message)
        time.sleep(interval)


class Sent(NamedTuple):
    """One statement a SQLAlchemy engine sent (``statements_sent``)."""

    statement: str
    parameters: Any
    autocommit: bool  # the DB-API connection was in autocommit mode


@contextlib.contextmanager
def statements_sent(engine: Any) -> Iterator[list[Sent]]:
    """The statements ``engine`` sends inside the block, in order (SQLAlchemy's
    ``before_cursor_execute`` event)."""
    from sqlalchemy import event

    sent: list[Sent] = []

    def seen(connection: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        dbapi = connection.connection.dbapi_connection
        sent.append(Sent(statement, parameters, bool(getattr(dbapi, "autocommit", False))))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def thread_wakeups(native_id: int) -> int:
    """How many times a thread of this process has slept and been woken so far (its voluntary
    context switches, from /proc): an idle loop that ticks shows here, one that blocks does not."""
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:", 1)[1].split()[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(drop: Iterable[str] = ("ORCH_",)) -> dict[str, str]:
    """This process's environment without the variables of the given prefixes (a developer's own
    ``ORCH_*`` settings must not leak into the system under test)."""
    prefixes = tuple(drop)
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def fresh_postgres(database: str, redis_db: int) -> tuple[str, str]:
    """Recreate ``database`` on the local PostgreSQL and flush Redis db ``redis_db`` (for the
    benchmarks, which own fixed names; tests get theirs from fixtures); their URLs."""
    subprocess.run([*PG_ADMIN, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"], check=True, timeout=60,
                   capture_output=True)
    subprocess.run([*PG_ADMIN, f"CREATE DATABASE {database}"], check=True, timeout=60, capture_output=True)
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "-n", str(redis_db), "FLUSHDB"], check=True, timeout=30,
                   capture_output=True)
    return f"{PG_SERVER}/{database}", f"redis://127.0.0.1:6379/{redis_db}"


class Processes:
    """Named subprocesses, each writing to ``<logs>/<name>.log``, watched until stopped."""

    def __init__(self, logs: Path, env: Mapping[str, str]) -> None:
        self.logs = logs
        self.env = dict(env)
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, argv: Sequence[str], *, cwd: Path | None = None,
              env: Mapping[str, str] | None = None, start_new_session: bool = False) -> subprocess.Popen[bytes]:
        """Start ``argv`` (``start_new_session``: in a session of its own, so that a signal to its
        group is what a terminal's Ctrl-C is)."""
        # Appended: a process restarted under the same name keeps the earlier life's lines.
        with open(self.logs / f"{name}.log", "ab") as log:  # the child holds its own descriptor
            process = subprocess.Popen(list(argv), cwd=cwd, env=dict(env or self.env), stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=start_new_session)
        self.processes.append((name, process))
        return process

    def check_alive(self) -> None:
        """Raise, with its log's tail, if a watched process has exited."""
        for name, process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{name} ({' '.join(map(str, process.args))}) exited with {process.returncode}; "
                                   f"its log:\n{self.log_tail(name)}")

    def forget(self, process: subprocess.Popen[bytes]) -> None:
        """Stop watching ``process`` (it exited, or a test stops it itself)."""
        self.processes = [(n, p) for n, p in self.processes if p is not process]

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """``kill -9`` one process (a fault on purpose) and stop watching it."""
        process.kill()
        process.wait(timeout=10)
        self.forget(process)

    def stop_process(self, process: subprocess.Popen[bytes] | None, grace: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; no longer watched."""
        if process is None:
            return
        self.forget(process)
        if process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def stop(self, grace: float = 20.0) -> None:
        """Stop every watched process, the last started first, all given the grace at once."""
        started = [p for _, p in reversed(self.processes)]
        for process in started:
            if process.poll() is None:
                process.terminate()
        for process in started:
            self.stop_process(process, grace)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def all_logs(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
                         for p in sorted(self.logs.glob("*.log")))


class Stack(Processes):
    """One orchestrator installation under ``root``: its own ``ORCH_HOME`` (``root/home``), an API
    port, a project folder (``root/project``, the working directory of the CLI and the workers) and
    the environment a user would set. ``env`` adds to it: nothing for the embedded defaults (SQLite
    and the SQLAlchemy broker in ``ORCH_HOME``), ``ORCH_DATABASE_URL`` and ``ORCH_BROKER_URL`` for
    PostgreSQL + Redis (``postgres_env``)."""

    def __init__(self, root: Path, env: Mapping[str, str] | None = None, *, orch: Sequence[str] = ORCH_MODULE,
                 drop: Iterable[str] = ("ORCH_",)) -> None:
        self.root = root
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.home = root / "home"
        self.project = root / "project"
        self.home.mkdir(parents=True, exist_ok=True)
        self.project.mkdir(exist_ok=True)
        self.orch_argv = tuple(orch)
        super().__init__(root, {**clean_env(drop), "ORCH_HOME": str(self.home), "ORCH_API_URL": self.api_url,
                                **(env or {})})
        self._client: Any = None

    # --- processes ----------------------------------------------------------------------------

    def start(self, name: str, *args: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """``orch ARGS...`` in the background, logged to ``<name>.log``."""
        return self.spawn(name, [*self.orch_argv, *args], cwd=cwd or self.project)

    def server_argv(self) -> list[str]:
        return [*self.orch_argv, "server", "start", "--port", str(self.port)]

    def start_server(self, timeout: float = 90) -> subprocess.Popen[bytes]:
        """``orch server start`` on this stack's port, once it answers ``GET /api/health``."""
        process = self.spawn("server", self.server_argv(), cwd=self.project)
        self.wait_healthy(timeout)
        return process

    def start_worker(self, pool: str, *args: str, name: str = "worker", timeout: float = 90,
                     cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """``orch worker start --pool POOL ARGS...``, once a worker ONLINE in ``pool`` is one that
        was not there before (its first heartbeat)."""
        before = self.online_workers(pool)
        process = self.start(name, "worker", "start", "--pool", pool, *args, cwd=cwd)
        wait_until(f"a new ONLINE worker in pool {pool!r}", lambda: self.online_workers(pool) - before, timeout,
                   alive=self.check_alive, ignore=(OSError,), describe=self.all_logs)
        return process

    def online_workers(self, pool: str) -> set[str]:
        try:
            workers = self.get(f"/work_pools/{pool}/workers")
        except urllib.error.HTTPError as error:
            if error.code == 404:  # the pool is not there yet
                return set()
            raise
        return {w["name"] for w in workers if w["status"] == "ONLINE"}

    def healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
            return bool(response.status == 200)

    def wait_healthy(self, timeout: float = 30) -> None:
        wait_until(f"GET {self.api_url}/health", self.healthy, timeout, 0.05, alive=self.check_alive,
                   ignore=(OSError,), describe=self.all_logs)

    # --- the CLI and the SDK, run to completion --------------------------------------------------

    def orch(self, *args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.orch_argv, *args], check=False, cwd=cwd or self.project, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def python(self, code: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code], check=False, cwd=cwd or self.project, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    # --- the API ------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """An ``orchestrator.client.Client`` of this stack (closed by ``stop``)."""
        if self._client is None:
            from orchestrator.client import Client

            self._client = Client(self.api_url, timeout=30.0)
        return self._client

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.api_url}{path}", timeout=10) as response:
            return json.loads(response.read())

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(f"{self.api_url}{path}", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read()
            return json.loads(data) if data else None

    def stop(self, grace: float = 20.0) -> None:
        super().stop(grace)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None


def postgres_env(database_url: str, broker_url: str) -> dict[str, str]:
    """What a user sets to run on PostgreSQL + Redis instead of the embedded defaults."""
    return {"ORCH_DATABASE_URL": database_url, "ORCH_BROKER_URL": broker_url}
