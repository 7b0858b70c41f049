"""A flow-run process started ahead of time, so a run does not wait for an interpreter to start
and import the engine (about 0.2 s on this kind of machine, most of a run's start latency).

The standby process (``python -m orchestrator.engine --standby``) imports what every run needs,
then blocks reading one line on stdin: the run's environment and working directory as JSON. The
worker hands it the next run it claims and starts a new standby at once. A standby whose worker
dies sees its stdin close and exits.

Output capture needs nothing from here: it begins when the run does (``orchestrator.runtime.output``
replaces descriptors 1 and 2 and ``sys.stdout`` / ``sys.stderr`` then, with explicit UTF-8
streams), so a standby process behaves as a fresh one whatever environment its run brings.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading

log = logging.getLogger("orchestrator.worker.standby")

# Variables the interpreter reads at start: a run that sets any of them needs a fresh process.
STARTUP_VARIABLES = ("PYTHON", "LD_", "PATH")
WORKER_SECRETS = ("ORCH_API_KEY", "ORCH_SERVER_API_KEYS")  # never in a flow-run process's environment


def inherited() -> dict[str, str]:
    """The worker's environment as a flow-run process inherits it: without the worker's keys."""
    return {k: v for k, v in os.environ.items() if k not in WORKER_SECRETS}


def usable_for(env: dict[str, str]) -> bool:
    return not any(key.startswith(STARTUP_VARIABLES) for key in env)


class Standby:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._refill()

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "orchestrator.engine", "--standby"],
                # Not the worker's key: the run's own comes with its order (workers/base.py).
                env=inherited(),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            )
        except OSError as error:
            log.warning("cannot start a standby flow-run process: %s", error)
            return None

    def _refill(self) -> None:
        def refill() -> None:
            process = self._spawn()
            with self._lock:
                if self._closed or self._process is not None:
                    if process is not None:
                        _discard(process)
                    return
                self._process = process

        threading.Thread(target=refill, name="standby-refill", daemon=True).start()

    def take(self, env: dict[str, str], cwd: str | None) -> subprocess.Popen[bytes] | None:
        """A started flow-run process given ``env`` and ``cwd``, or None (start one the usual way)."""
        with self._lock:
            process, self._process = self._process, None
        if process is None:
            return None
        self._refill()
        if process.poll() is not None or process.stdin is None:
            _discard(process)
            return None
        try:
            process.stdin.write(json.dumps({"env": env, "cwd": cwd}).encode() + b"\n")
            process.stdin.close()
        except OSError:
            _discard(process)
            return None
        return process

    def close(self) -> None:
        with self._lock:
            self._closed = True
            process, self._process = self._process, None
        if process is not None:
            _discard(process)


def _discard(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass
