"""The process worker's first fork server, forked from ``orch worker start`` itself as it starts
instead of started as a fresh interpreter (``cli/worker_start.py``); once forked it serves exactly as
a fresh one (``runtime/forkserver.py``)."""

from __future__ import annotations

import gc
import os
import socket
import sys
from typing import NoReturn

from orchestrator.runtime.forkserver import run_as_fork_server

# What the worker process and its fork server both import: the worker imports them before it forks
# the server beside it (``fork_server_beside``), so that their pages are shared, not held twice.
SHARED_IMPORTS = ("orchestrator.client", "orchestrator.emitting", "orchestrator.handoff", "orchestrator.schemas",
                  "orchestrator.sdk.flows", "pydantic.type_adapter", "concurrent.futures.thread")


def fork_server_beside() -> tuple[int, socket.socket] | None:
    """In ``orch worker start``, before it has read its keys or started a thread: import what both
    processes need (``SHARED_IMPORTS``), then fork the fork server from this process instead of
    starting a fresh interpreter for it. Returns its pid and this side's end of its socket (None
    when it cannot be forked: then the worker starts one the usual way).

    Why: a fresh fork server builds again the modules and models the worker already holds (pydantic,
    the wire models, the client); forked, the two share those pages: ~14 MB less private memory over
    both (bench/RESULTS.md, "The worker tree's idle memory, round 4"). What the child must not hold, the
    worker's keys, is not in this process yet: ``cli/worker_start.py`` takes them out of the
    environment (a fresh ``execve`` without them) and reads them back only after this fork. Its
    environment, descriptors and session are then those ``subprocess.Popen`` would give a fresh one.

    In the child this never returns: the fork server's life, and each of its forks' (they leave by
    ``sys.exit``, which unwinds the worker's start frames above this call: those hold no cleanup)."""
    import importlib

    for name in SHARED_IMPORTS:
        importlib.import_module(name)
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError:  # no SOCK_SEQPACKET for Unix sockets here (macOS): the worker says so
        return None
    # Frozen on both sides: neither's collector writes to the shared objects (``gc.freeze``'s use).
    gc.freeze()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        return None
    if pid == 0:
        _become_fork_server(ours, theirs)
    theirs.close()
    return pid, ours


def _become_fork_server(ours: socket.socket, theirs: socket.socket) -> NoReturn:
    """In the child of ``fork_server_beside``: set up as ``workers/forkserver.py`` starts a fresh
    server (its own session, the socket as stdin, stdout on /dev/null, no other descriptor of the
    worker's), then serve."""
    os.setsid()
    os.dup2(theirs.fileno(), 0)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    ours.detach()  # closed below with the rest, never again by these objects' finalizers
    theirs.detach()
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    # As ``python -m orchestrator.engine --fork-server`` has it: a flow may read its argv.
    sys.argv = [os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "engine.py"),
                "--fork-server"]
    run_as_fork_server()
