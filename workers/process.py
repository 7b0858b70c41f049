"""The process worker: each run is a subprocess on this machine, in the deployment's path."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from typing import IO, Any

from orchestrator import schemas
from workers.base import BaseWorker, Infrastructure, InfrastructureError, InfrastructureResult
from workers.events import resource_id, subject
from workers.forkserver import ForkedProcess, ForkServer, StartedServer, inherited, usable_for
from workers.redaction import REDACTOR

log = logging.getLogger("orchestrator.worker.process")
TAIL_LINES = 20
INFRASTRUCTURE_PREFIX = "ORCH_INFRASTRUCTURE_ID_PREFIX"  # read by the flow-run process (``runtime/engine.py``)


@dataclass
class RunProcess:
    run_id: uuid.UUID
    process: subprocess.Popen[bytes] | ForkedProcess
    host: str
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))
    pump: threading.Thread | None = None
    says_where: bool = False  # our engine, told to send its infrastructure id itself (with RUNNING)

    @property
    def infrastructure_id(self) -> str:
        return f"process:{self.host}:{self.process.pid}"

    @property
    def subject(self) -> dict[str, str]:
        """The process as an event's resource: ``orchestrator.process.<host>.<pid>``."""
        return subject(resource_id("process", self.host, self.process.pid), f"{self.host}:{self.process.pid}",
                       host=self.host, pid=str(self.process.pid))


class ProcessWorker(BaseWorker):
    type = "process"

    def __init__(self, *args: Any, prewarm: bool = True, fork_server: StartedServer | None = None,
                 **kwargs: Any) -> None:
        """``fork_server``: one ``orch worker start`` forked at its start (``cli/worker_start.py``), the
        first this worker uses; without it, a fresh one is started when serving begins."""
        super().__init__(*args, **kwargs)
        self._forks: ForkServer | None = None
        self.prewarm = prewarm
        self._started_server = fork_server
        if fork_server is not None:
            fork_server.adopted = True

    def start_heartbeat(self) -> None:
        super().start_heartbeat()
        if self.prewarm:  # serving: flow-run processes ready to fork
            self._forks = ForkServer(self.api_url, started=self._started_server)
            self._started_server = None

    def prepare(self) -> None:
        if self._forks is not None:
            self._forks.prepare()

    def stop(self) -> None:
        super().stop()
        if self._forks is not None:
            self._forks.close()
        if self._started_server is not None:  # stopped before serving
            self._started_server.close()
            self._started_server = None

    def start(self, claim: schemas.Claim, job: dict[str, Any]) -> RunProcess:
        run = claim.flow_run
        command = job.get("command")
        cwd = job.get("working_dir") or claim.deployment.path or None
        if cwd is not None and not os.path.isdir(cwd):
            raise InfrastructureError(f"working directory {cwd} does not exist on this worker")
        run_env = {**{k: str(v) for k, v in (job.get("env") or {}).items()}, **self.run_environment(run.id, claim)}
        host = os.uname().nodename
        if not command:
            # Our engine, forked or started: it sends where it runs (``process:<host>:<its pid>``,
            # ``engine.own_infrastructure_id``) with its RUNNING report. So this worker sends no
            # report of its own: a request and a transaction fewer per run.
            run_env[INFRASTRUCTURE_PREFIX] = f"process:{host}:"
        process: subprocess.Popen[bytes] | ForkedProcess | None = None
        if not command and self._forks is not None and usable_for(run_env):
            process = self._forks.take(run_env, cwd)
        if process is None:
            argv = shlex.split(command) if command else [sys.executable, "-m", "orchestrator.engine"]
            try:
                # Own session: a signal to the worker's terminal does not hit the run, and a kill
                # reaches the run's whole process group.
                process = subprocess.Popen(
                    argv, cwd=cwd, env={**inherited(), **run_env}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
            except OSError as error:
                raise InfrastructureError(f"cannot start {argv[0]}: {error}") from error
        log.info("run %s: started process %d", run.id, process.pid)
        handle = RunProcess(run.id, process, host, says_where=not command)
        self.events.emit(run.id, "process.started", handle.subject,
                         {"pid": process.pid, "command": _argv_of(process), "working_dir": cwd or os.getcwd()})
        stream = bool(job.get("stream_output", True))
        handle.pump = threading.Thread(target=_pump, args=(process.stdout, handle.tail, stream, run.name), daemon=True)
        handle.pump.start()
        return handle

    def _report_infrastructure(self, run_id: uuid.UUID, infrastructure: Infrastructure) -> None:
        if isinstance(infrastructure, RunProcess) and infrastructure.says_where:
            return  # its process says it itself (``start``)
        super()._report_infrastructure(run_id, infrastructure)

    def wait(self, infrastructure: Infrastructure) -> InfrastructureResult:
        assert isinstance(infrastructure, RunProcess)
        code = infrastructure.process.wait()
        if infrastructure.pump is not None:
            infrastructure.pump.join(timeout=5)
        detail = ""
        lost = isinstance(infrastructure.process, ForkedProcess) and infrastructure.process.exit_code_lost
        signal_name = _signal_name(-code) if code < 0 and not lost else None
        self.events.emit(infrastructure.run_id, "process.exited", infrastructure.subject,
                         {"pid": infrastructure.process.pid, "exit_code": code, "signal": signal_name})
        if lost:
            detail = "its exit code is unknown: the worker's fork server, its parent, died before it"
        elif signal_name is not None:
            detail = f"killed by signal {signal_name}"
        elif code != 0 and infrastructure.tail:
            detail = "last output: " + " | ".join(infrastructure.tail)[-1000:]
        settled = isinstance(infrastructure.process, ForkedProcess) and infrastructure.process.settled
        return InfrastructureResult(exit_code=code, detail=detail, settled=settled)

    def kill(self, infrastructure: Infrastructure, grace_seconds: float) -> None:
        assert isinstance(infrastructure, RunProcess)
        process = infrastructure.process
        if process.poll() is not None:
            return
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name
        return f"signal {number}"


def _argv_of(process: subprocess.Popen[bytes] | ForkedProcess) -> list[str]:
    args = process.args
    if isinstance(args, (str, bytes, os.PathLike)):
        return [os.fsdecode(args)]
    return [os.fsdecode(a) for a in args]


def _signal_group(process: subprocess.Popen[bytes] | ForkedProcess, sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        # No such group: the process has exited, or was forked a moment ago and has not yet made
        # its own session (``orchestrator/runtime/forkserver.py``); then it has started nothing
        # else, and the signal for its group is for it alone.
        with contextlib.suppress(ProcessLookupError):
            if process.poll() is None:
                os.kill(process.pid, sig)


def _pump(pipe: IO[bytes] | None, tail: collections.deque[str], stream: bool, prefix: str) -> None:
    if pipe is None:
        return
    for raw in pipe:
        line = REDACTOR.scrub(raw.decode(errors="replace").rstrip("\n"))  # the echo and a crash's detail
        tail.append(line)
        if stream:
            print(f"{prefix} | {line}", flush=True)
    pipe.close()
