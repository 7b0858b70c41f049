"""The process worker's fork server as its tests use it (``tests/integration/test_forkserver*.py``):
one ready to take orders, and an order whose whole life is seen at once, with no API behind it."""

from __future__ import annotations

import functools
import json
import socket
import subprocess
import sys
from pathlib import Path

from workers.forkserver import ForkedProcess, ForkServer

LIBCRYPTO = ["_hashlib", "hashlib"]  # the modules that map libcrypto (ssl aside)


@functools.cache
def libcrypto_pydantic_loads() -> list[str]:
    """Which of ``LIBCRYPTO`` the installed pydantic loads by itself: pydantic 2.14 imports
    ``secrets`` (hence hmac, hashlib) at import, 2.13 did not. Every run needs pydantic, so the fork
    server preloads it; its tests hold our own code to loading nothing more than that."""
    code = "import json, sys, pydantic.fields; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    modules = set(json.loads(done.stdout))
    return [name for name in LIBCRYPTO if name in modules]


# The fork server itself: its imports and rehearsal, up to ready; then its socket is closed.
FORK_SERVER = r"""
import json, sys
from orchestrator.runtime.forkserver import serve_forks

assert serve_forks() is None  # the socket closed: the server's exit
print(json.dumps(sorted(sys.modules)))
"""


@functools.cache
def fork_server_modules() -> tuple[str, ...]:
    """The modules a fork server has loaded once ready (its imports done, a run rehearsed)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours:
        process = subprocess.Popen([sys.executable, "-c", FORK_SERVER], cwd=Path(__file__).resolve().parents[1],
                                   stdin=theirs, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        theirs.close()
        ours.settimeout(120)
        assert json.loads(ours.recv(65536)) == {"ready": True}
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return tuple(json.loads(out.splitlines()[-1]))


def ready_fork_server() -> ForkServer:
    forks = ForkServer()
    assert forks.wait_ready(60), "no fork server ready"
    return forks


def take_refused_order(forks: ForkServer, run_id: str, folder: str | None = None) -> ForkedProcess:
    """Hand ``forks`` the order of a run ``run_id`` (not a UUID) and return its process, ended. The
    flow-run process refuses such an id at once, naming it, and exits 2: so it shows that the
    environment handed over reached the child, and that the child's exit code came back from the
    server, without an API."""
    process = forks.take({"ORCH_FLOW_RUN_ID": run_id}, folder)
    assert isinstance(process, ForkedProcess)
    assert process.stdout is not None
    output = process.stdout.read()  # its end: every holder of the pipe's write end is gone
    process.stdout.close()
    code = process.wait(timeout=60)
    assert code == 2 and f"got {run_id!r}".encode() in output, f"exit code {code}, output {output!r}"
    return process
