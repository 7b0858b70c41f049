"""The flow-run side of the process worker's fork server (``workers/forkserver.py`` drives it).

``python -m orchestrator.engine --fork-server`` with a Unix socket (``SOCK_SEQPACKET``) as its
stdin: it imports what every run needs once, then forks one flow-run process per order. (The first
one of ``orch worker start`` is not a fresh interpreter but forked from the worker as it starts,
``runtime/forkserver_beside.py``; it then serves exactly as a fresh one.) An order
is one message: JSON ``{"id", "env", "cwd"}`` and one descriptor, the write end of the pipe that
becomes the run's stdout and stderr (the worker holds the read end, as it holds a subprocess's).
The answer is ``{"id", "pid"}`` (or ``{"id", "error"}``); when a child ends, ``{"exited": pid,
"code": c, "settled": bool}`` with ``subprocess``'s convention (``-N``: killed by signal N); first
of all, once the imports are done, ``{"ready": true}``.

``{"prepare": true, "api": url}`` says an order is likely soon: the worker sends it as a delivery
arrives, before it claims the run. The server forks a *standby* child at once, which waits on a
socket of its own for its order, and hands the worker that socket: ``{"standby": pid}`` with the
socket's descriptor (the server keeps no copy; ``{"standby": null}`` when the fork failed;
``"spare": true`` in both when the worker asks for
one ahead of a delivery still to come, ``workers/forkserver.py`` ``_spare_after``). The worker then
sends the run's order, ``{"env", "cwd"}`` with the pipe's write end, to the standby itself: the
fork (1-5 ms of wall time on a busy
machine: copying the page tables, the child scheduled) and the child's first steps overlap the
claim's round trip instead of following it, and the order wakes one process, not the server and
then the standby. A standby is the server's child like any other: its exit is reported as theirs
(the worker ignores the exit of one it never gave an order). The worker dismisses a standby no order
came for within a few seconds by closing its socket: it sees the end of it and exits. An order with
no standby ready comes to the server and is forked at once, as before.

``settled``: the child left through the engine's normal end (``leave``) with exit code 0, which
the engine returns only once the API has acknowledged the run's final state, or when the run was
already final or another worker's as it came to report RUNNING (``engine.RunProcess.execute``).
The worker then has nothing to read back. A child says so by writing its pid into a pipe all
children share, just before it exits, so the server knows before it reaps it; a flow that ends its
process itself (``os._exit(0)``) writes nothing, and its worker reads the run and crashes it.

Why forks: a fresh interpreter importing the engine costs a run ~0.1-0.2 s of CPU (start, ``site``,
pydantic and the wire models), most of what a no-op run costs the machine; a fork of a process that
has already imported them costs a few milliseconds, and its pages are shared with this one until
written. So the worker has a flow-run process ready for every run it may start at once, for the
memory of one.

A child is exactly a fresh flow-run process given the order's environment and folder: its own
session (a kill reaches its whole group), stdin from ``/dev/null``, descriptors 1 and 2 on the
order's pipe, this process's signal handlers and socket gone. This process starts no thread, so a
fork copies no lock held by another thread. When the worker goes away (the socket closes) it
exits; the children it started run on, reporting for themselves, as a worker's subprocesses do.
"""

from __future__ import annotations

import atexit
import gc
import json
import logging
import os
import selectors
import signal
import socket
import sys
from collections.abc import Callable
from typing import NoReturn

MAX_ORDER = 1 << 20  # an order: the run's environment, the claim's hand-off (<= 32 KiB) in it
_exit_code: int | None = None  # what ``leave`` exits with, once the atexit handlers have run
_settled_fd: int | None = None  # in a child: the write end of the pipe its "settled" goes into
_settled: set[int] = set()  # in the server: children that said so and have not been reaped yet


def run_as_fork_server() -> NoReturn:
    """``python -m orchestrator.engine --fork-server``: serve orders until the worker goes; in each
    forked child, with its order applied, the life of a fresh flow-run process (leaving by ``leave``)."""
    from orchestrator.runtime.engine import run_as_main
    from orchestrator.runtime.standby import get_ready

    if serve_forks(get_ready) is None:
        sys.exit(0)

    run_as_main(leave)


def serve_forks(get_ready: Callable[[str | None], Callable[[int], None] | None] | None = None) -> dict[str, object] | None:
    """In the fork server: serve orders until the worker goes. Returns in a forked child only, with
    its order applied (environment, folder); returns None in the server when it is time to exit.
    ``get_ready``: what a standby does before its order comes (``standby.get_ready``), given the
    API URL the worker named last; what it returns, if not None, takes the order's pipe in place of
    descriptors 1 and 2."""
    global _api_url
    import orchestrator.parameters
    import orchestrator.runtime.engine
    import orchestrator.schemas
    import orchestrator.sdk.flows  # noqa: F401

    _rehearse()
    channel = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)  # the socket is not a child's stdin
    os.close(null)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    settled_read, settled_write = os.pipe()  # children write, never wait: a full pipe says nothing
    os.set_blocking(settled_read, False)
    os.set_blocking(settled_write, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wake-up byte is written
    signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)  # drained each pass; a full pipe still wakes
    selector = selectors.DefaultSelector()
    selector.register(channel, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    # What is alive now is never collected again: a child does not copy pages merely because the
    # collector walked them (``gc.freeze``'s documented use before forking).
    gc.freeze()
    _send(channel, {"ready": True})

    def leave_server() -> None:
        """In a child: this process's sockets and pipes closed, the standbys' server ends too."""
        global _settled_fd
        selector.close()
        channel.close()
        for fd in (wake_read, wake_write, settled_read):
            os.close(fd)
        _settled_fd = settled_write

    try:
        while True:
            for key, _ in selector.select():
                if key.fileobj is wake_read:
                    _drain(wake_read)
                    _report_exits(channel, settled_read)
                    continue
                try:
                    message, fds, _, _ = socket.recv_fds(channel, MAX_ORDER, 1)
                except OSError:
                    message, fds = b"", []
                if not message:
                    return None  # the worker is gone
                order = json.loads(message)
                if order.get("prepare"):
                    _api_url = order.get("api") or _api_url
                    # 0: a standby given its order, the run's process now
                    if _prepare(leave_server, channel, bool(order.get("spare"))) == 0:
                        return _waited_order(get_ready)
                    continue
                _api_url = (order.get("env") or {}).get("ORCH_API_URL") or _api_url
                pid = _fork(order, fds)
                if pid == 0:  # the child: leave the server's loop with its order
                    leave_server()
                    return order  # type: ignore[no-any-return]
                _send(channel, {"id": order.get("id"), "pid": pid} if pid > 0 else
                      {"id": order.get("id"), "error": "fork failed"})  # workers/forkserver.py FORK_FAILED
    finally:
        signal.set_wakeup_fd(-1)


_order_channel: socket.socket | None = None  # in a standby: its end of the socket its order comes on
_api_url: str | None = None  # the API the worker named last: a standby connects to it ahead


def _prepare(leave_server: Callable[[], None], channel: socket.socket, spare: bool) -> int:
    """Fork a standby and hand the worker its socket: 0 in the standby, its pid (or -1) here. The
    server keeps no end of that socket: once the worker closes it (or goes), the standby exits.
    ``spare``: the worker asked for it ahead of a delivery, not for one; said back with it."""
    global _order_channel
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = _fork({}, [])
    if pid == 0:
        ours.close()
        leave_server()
        _order_channel = theirs
        return 0
    theirs.close()
    with ours:
        if pid < 0:  # said, so that the worker waits for no standby
            _send(channel, {"standby": None, "spare": spare})
            return pid
        try:
            answer = json.dumps({"standby": pid, "spare": spare}).encode()
            socket.send_fds(channel, [answer], [ours.fileno()])
        except OSError:
            pass  # the worker is gone: the standby sees its socket end and exits
    return pid


def _waited_order(get_ready: Callable[[str | None], Callable[[int], None] | None] | None) -> dict[str, object]:
    """In a standby: get ready, wait for the order, apply it (as ``_fork`` does) and return it.
    Dismissed (the socket closed without an order), it exits at once: it has run nothing."""
    assert _order_channel is not None
    take_output = get_ready(_api_url) if get_ready is not None else None
    try:
        message, fds, _, _ = socket.recv_fds(_order_channel, MAX_ORDER, 1)
    except OSError:
        message, fds = b"", []
    _order_channel.close()
    if not message:
        os._exit(0)
    order: dict[str, object] = json.loads(message)
    _apply(order, fds, take_output)
    return order


def _rehearse() -> None:
    """Go once through what every run does before its flow is called, so that what it imports,
    compiles and caches on first use (ctypes for the C stdio flush, the tokenizer's patterns for the
    flow's source hash, pydantic's lazily imported parts for the parameters' model) is in this
    process already, and no child pays for it again. (The API's host needs no codec: the client
    looks an ASCII name up as bytes, ``plain_http.lookup_name``.)"""
    import ctypes
    import urllib.parse

    from orchestrator import handoff
    from orchestrator.client import Client
    from orchestrator.parameters import call_arguments, coerce_parameters
    from orchestrator.sdk.flows import Flow

    def rehearsal(x: int = 1) -> int:
        return x

    ctypes.CDLL(None)
    flow = Flow(rehearsal)
    flow.run_version()
    flow.run_name({})
    call_arguments(rehearsal, coerce_parameters(rehearsal, {"x": "2"}))
    # What ``main`` does before its first request: the client made (nothing is sent: it connects
    # at its first request), the hand-off parsed, the heartbeat's query encoded. Their first use
    # here leaves ~80-90 fewer pages for each run's process to copy before RUNNING, ~0.2 ms of its CPU
    # (bench/RESULTS.md, "create → RUNNING ... round 3").
    Client("http://localhost", timeout=1.0).close()
    handoff.rehearse()
    urllib.parse.urlencode({"hold": 1.0, "infrastructure_id": "process:host:"}, doseq=True)


def _fork(order: dict[str, object], fds: list[int]) -> int:
    """Fork one flow-run process for ``order``: 0 in the child (set up), its pid in the server
    (-1 when the fork failed)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError:
        pid = -1
    if pid != 0:
        for fd in fds:
            os.close(fd)  # the child holds the pipe's write end now: its end is the run's end
        return pid
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # Its own session first: until then a signal for its group is sent to it alone (the worker's
    # ``_signal_group``), which is the same while it has started nothing of its own.
    os.setsid()
    atexit.register(_skip_teardown)  # before the run's own handlers: it runs after them
    _apply(order, fds)
    return 0


def _apply(order: dict[str, object], fds: list[int], take_output: Callable[[int], None] | None = None) -> None:
    """In a child: the order's pipe as descriptors 1 and 2 (or given to ``take_output``), its
    environment and its folder."""
    if fds and take_output is not None:
        take_output(fds[0])
    elif fds:
        os.dup2(fds[0], 1)
        os.dup2(fds[0], 2)
        os.close(fds[0])
    os.environ.update(order.get("env") or {})  # type: ignore[call-overload]
    if order.get("cwd"):
        started_in = os.getcwd()
        os.chdir(str(order["cwd"]))
        if sys.path and sys.path[0] in ("", started_in):
            sys.path[0] = os.getcwd()  # as if started there, like a fresh `python -m` would be


def leave(code: int) -> NoReturn:
    """A forked flow-run process's normal exit: the interpreter's own (the flow's non-daemon
    threads waited for, the atexit handlers run), without the module teardown after it.

    The teardown frees every object one by one, and nearly all of them were made by the fork
    server: each free writes to a page shared with it, which the kernel must copy first. That is
    10-15 ms of CPU per run for nothing (the process's memory goes at its exit anyway), measured with
    a no-op run: 28-31 ms of CPU per forked process with the teardown, 16-19 ms without. So the
    handler registered first in the child (``_skip_teardown``) runs after the run's own and leaves
    with ``os._exit``, public calls only (the way bench/RESULTS.md, "Flow-run process exit without
    private interpreter APIs", measured as the fastest). The handlers it skips are those the fork
    server registered before the fork: ``logging.shutdown``, which it calls itself."""
    global _exit_code
    _exit_code = code
    sys.exit(code)


def _skip_teardown() -> None:
    if _exit_code is None:
        return  # not through ``leave``: the interpreter's own end, teardown included
    from orchestrator.runtime.engine import flush_and_exit

    try:
        logging.shutdown()
    finally:
        if _exit_code == 0 and _settled_fd is not None:
            try:
                os.write(_settled_fd, f"{os.getpid()}\n".encode())
            except OSError:
                pass  # not said: the worker reads the run back, as for any other exit
        flush_and_exit(_exit_code)


def _report_exits(channel: socket.socket, settled_read: int) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        # Every child's, a standby's that had no order too: the worker knows which pids are its runs'.
        _read_settled(settled_read)  # after the reap: what the child wrote before it exited is there
        _send(channel, {"exited": pid, "code": os.waitstatus_to_exitcode(status), "settled": pid in _settled})
        _settled.discard(pid)


def _read_settled(fd: int) -> None:
    data = b""
    try:
        while chunk := os.read(fd, 4096):
            data += chunk
    except BlockingIOError:
        pass
    _settled.update(int(line) for line in data.split())


def _send(channel: socket.socket, message: dict[str, object]) -> None:
    try:
        channel.send(json.dumps(message).encode())
    except OSError:
        pass  # the worker is gone; the next receive ends the loop


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
