"""The process worker: each run is a subprocess on this machine, in the deployment's path."""

from __future__ import annotations

import collections
import logging
import os
import shlex
import subprocess
import sys
import threading
from typing import IO, Any

from orchestrator import schemas
from workers.base import BaseWorker, InfrastructureError, InfrastructureResult

log = logging.getLogger("orchestrator.worker.process")
TAIL_LINES = 20


class ProcessWorker(BaseWorker):
    type = "process"

    def execute(self, claim: schemas.Claim, job: dict[str, Any]) -> InfrastructureResult:
        run = claim.flow_run
        command = job.get("command")
        argv = shlex.split(command) if command else [sys.executable, "-m", "orchestrator.engine"]
        cwd = job.get("working_dir") or claim.deployment.path or None
        if cwd is not None and not os.path.isdir(cwd):
            raise InfrastructureError(f"working directory {cwd} does not exist on this worker")
        env = {**os.environ, **{k: str(v) for k, v in (job.get("env") or {}).items()}, **self.run_environment(run.id)}
        stream = bool(job.get("stream_output", True))
        try:
            process = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        except OSError as error:
            raise InfrastructureError(f"cannot start {argv[0]}: {error}") from error
        log.info("run %s: started process %d", run.id, process.pid)
        try:
            self.client.report_infrastructure(run.id, f"process:{os.uname().nodename}:{process.pid}")
        except Exception as error:  # the run goes on; the id is informational
            log.warning("run %s: could not report its process id: %s", run.id, error)
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        pump = threading.Thread(target=_pump, args=(process.stdout, tail, stream, run.name), daemon=True)
        pump.start()
        code = process.wait()
        pump.join(timeout=5)
        detail = ""
        if code < 0:
            detail = f"killed by signal {-code}"
        elif code != 0 and tail:
            detail = "last output: " + " | ".join(tail)[-1000:]
        return InfrastructureResult(exit_code=code, detail=detail)


def _pump(pipe: IO[bytes] | None, tail: collections.deque[str], stream: bool, prefix: str) -> None:
    if pipe is None:
        return
    for raw in pipe:
        line = raw.decode(errors="replace").rstrip("\n")
        tail.append(line)
        if stream:
            print(f"{prefix} | {line}", flush=True)
    pipe.close()
