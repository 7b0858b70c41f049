"""The process worker's fork server: flow-run processes ready for every run it may start at once.

A fresh flow-run process costs a run an interpreter start and the engine's imports, about 0.1-0.2 s
of CPU and more of wall time on this kind of machine: most of what a no-op run costs. The fork
server (``python -m orchestrator.engine --fork-server``, ``orchestrator/runtime/forkserver.py``)
pays it once: it imports what every run needs and then forks a flow-run process per run, in a few
milliseconds, its pages shared with the server's until written. A burst of runs up to the worker's
limit starts at once, for the memory of one ready process (issue 22).

``ForkServer.prepare`` (a run was delivered, its claim under way) has the server fork a *standby*,
whose socket the server hands back; while runs come in a stream, one is forked as a run's process
ends, for the next delivery (``_spare_after``), so that none is forked during that one's claim.
``ForkServer.take`` hands an order (the run's environment and
folder, and the write end of a pipe that becomes the child's stdout and stderr) to a standby
straight over that socket -- the server is not woken on the run's path, and the standby's pid is
known before the order is sent -- or, with none ready, to the server over its own Unix socket,
which forks a child for it. It returns a ``ForkedProcess`` (``workers/forked.py``), a
``subprocess.Popen`` look-alike the process worker uses as it uses a subprocess: ``pid``,
``stdout``, ``poll``, ``wait``; signals go to its process group. The server is the children's
parent, so it reports each one's exit code; if the server itself dies, its children run on and
the worker watches them by pidfd (their exit code is then unknown: ``EXIT_UNKNOWN``), and a new
server is started. The first server of ``orch worker start`` is forked from the worker itself as it
starts (``StartedServer``, sharing what both import); every later one is a fresh interpreter. Until one is ready, and for a run that sets a variable the interpreter reads at
start (``usable_for``), the worker starts a fresh process instead: the result is the same.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import select
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

from workers.base import InfrastructureError
from workers.forked import COMMAND, EXIT_UNKNOWN, ForkedProcess, StartedServer, stop_server, watch_orphan

# ``ForkedProcess``, ``StartedServer`` and ``COMMAND`` live in ``workers/forked.py``; named here too.
__all__ = ["COMMAND", "EXIT_UNKNOWN", "ForkServer", "ForkedProcess", "StartedServer", "inherited", "usable_for"]

log = logging.getLogger("orchestrator.worker.forkserver")

# Variables the interpreter reads at start: a run that sets any of them needs a fresh process.
STARTUP_VARIABLES = ("PYTHON", "LD_", "PATH")
WORKER_SECRETS = ("ORCH_API_KEY", "ORCH_SERVER_API_KEYS")  # never in a flow-run process's environment
ANSWER_SECONDS = 30.0  # the longest ``take`` waits for the server to say a child's pid
FORK_FAILED = "fork failed"  # the server's answer when ``fork`` itself failed: no child exists
RESTART_SECONDS = 5.0  # a server that dies is started again, at most this often
STANDBY_SECONDS = 5.0  # a standby no order came for within this long is dismissed (its memory back)
# A spare, forked as a run's process ends while runs come in a stream (``_spare_after``), is kept
# this long: well within the 5 s idle after which a worker tree's memory is measured (bench/compare.py).
SPARE_SECONDS = 2.0
MAX_STANDBYS = 8  # prepared and waiting at once, at most


def inherited() -> dict[str, str]:
    """The worker's environment as a flow-run process inherits it: without the worker's keys."""
    return {k: v for k, v in os.environ.items() if k not in WORKER_SECRETS}


def usable_for(env: dict[str, str]) -> bool:
    return not any(key.startswith(STARTUP_VARIABLES) for key in env)


@dataclass
class _Standby:
    """A child the server forked ahead of an order, waiting for it on ``channel`` (our end)."""

    pid: int
    channel: socket.socket
    until: float  # dismissed then, if no order came
    spare: bool = False  # forked ahead of a delivery still to come (``_spare_after``), not for one


@dataclass
class _Order:
    read_end: int  # of the pipe that becomes the child's stdout and stderr
    answered: threading.Event = field(default_factory=threading.Event)
    child: ForkedProcess | None = None
    error: str | None = None


class ForkServer:
    """One fork server process for this worker, started in the background and again when it dies."""

    def __init__(self, api_url: str | None = None, started: StartedServer | None = None) -> None:
        self._lock = threading.Lock()
        self._started = started  # the first server, forked at the worker's start; None: start a fresh one
        self._ready = threading.Event()
        self._closing = threading.Event()
        self._send_lock = threading.Lock()  # one order at a time on the socket
        self._process: subprocess.Popen[bytes] | StartedServer | None = None
        self._channel: socket.socket | None = None
        self._ids = itertools.count(1)
        self._answers: dict[int, _Order] = {}  # orders sent, by id, until answered
        self._children: dict[int, ForkedProcess] = {}  # pid -> the handle its exit report settles
        self._standbys: list[_Standby] = []  # of the current server, ready, oldest first
        self._api_url = api_url  # a standby connects to it ahead (the last order's, once one was taken)
        # When the last two runs were delivered (``prepare``): whether runs come in a stream.
        self._delivered = (-SPARE_SECONDS, -SPARE_SECONDS)
        # Standbys asked for deliveries and not here yet; of those, how many came too late for the
        # order they were asked for (it went to the server): they are spares when they come.
        self._asked = self._late = 0
        self._started_at = 0.0
        self._start()

    # --- the server's life -------------------------------------------------------------------------

    def _start(self) -> None:
        threading.Thread(target=self._serve, name="fork-server", daemon=True).start()

    def _serve(self) -> None:
        """Start a server, then read its messages until it goes; start another unless closed."""
        while not self._closing.is_set():
            wait = self._started_at + RESTART_SECONDS - time.monotonic()
            if wait > 0 and self._closing.wait(wait):  # one that dies at once is not restarted in a tight loop
                return
            self._started_at = time.monotonic()
            process: subprocess.Popen[bytes] | StartedServer
            if self._started is not None:  # forked at the worker's start; any later one is started afresh
                process, ours, self._started = self._started, self._started.channel, None
            else:
                try:
                    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                except OSError as error:  # a system without SOCK_SEQPACKET for Unix sockets (macOS)
                    log.warning("no fork server on this system (%s): flow-run processes start afresh", error)
                    return
                try:
                    # A fresh interpreter, not a fork of this process: it would hold the worker's
                    # keys (read by now) and all the worker's memory.
                    process = subprocess.Popen(COMMAND, stdin=theirs, stdout=subprocess.DEVNULL, env=inherited(),
                                               start_new_session=True)
                except OSError as error:
                    log.warning("cannot start the fork server: %s; flow-run processes start afresh", error)
                    ours.close()
                    continue
                finally:
                    theirs.close()
            with self._lock:
                if self._closing.is_set():
                    stop_server(process, ours)
                    return
                self._process, self._channel = process, ours
            self._read(ours)
            with self._lock:
                self._ready.clear()
                self._process = self._channel = None
                orphans = list(self._children.items())
                self._children.clear()
                self._dismiss_all()  # waiting for an order nobody will now send
                self._asked = self._late = 0
                for order in self._answers.values():
                    order.answered.set()  # without a child: the server ended before saying
                self._answers.clear()
            process.wait()
            ours.close()
            if not self._closing.is_set():
                log.warning("the fork server ended (exit code %s); starting another", process.returncode)
            for pid, child in orphans:  # reparented, running on: watched without their parent
                threading.Thread(target=watch_orphan, args=(pid, child), name=f"orphan-{pid}", daemon=True).start()

    def _read(self, channel: socket.socket) -> None:
        """The server's messages, in order: standbys, pids for orders, exit codes for children.
        Meanwhile, standbys no order came for are dismissed."""
        while True:
            with self._lock:
                wait = min(s.until for s in self._standbys) - time.monotonic() if self._standbys else None
            try:
                if wait is not None and not select.select([channel], [], [], max(0.0, wait))[0]:
                    self._dismiss_expired()
                    continue
                data, fds, _, _ = socket.recv_fds(channel, 65536, 1)
            except OSError:
                return
            if not data:
                return
            message = json.loads(data)
            if "standby" in message:
                self._add_standby(message["standby"], fds, spare=bool(message.get("spare")))
                continue
            for fd in fds:
                os.close(fd)
            if "ready" in message:  # its imports done: forks from now on are quick
                self._ready.set()
                continue
            if "exited" in message:
                with self._lock:
                    child = self._children.pop(message["exited"], None)
                    dead = [s for s in self._standbys if s.pid == message["exited"]]
                    for standby in dead:  # it died before its order: none is sent to it
                        standby.channel.close()
                        self._standbys.remove(standby)
                if child is not None:
                    child._exited(message["code"], settled=bool(message.get("settled")))
                    self._spare_after()
                continue
            with self._lock:
                order = self._answers.pop(message.get("id"), None)
                if order is not None and "pid" in message:
                    # Made here, before the next message is read: its exit report, which may be
                    # next, finds it, and so does the orphans' watch if the server dies now.
                    order.child = ForkedProcess(message["pid"], os.fdopen(order.read_end, "rb"))
                    self._children[order.child.pid] = order.child
            if order is not None:
                order.error = message.get("error")
                order.answered.set()

    def _add_standby(self, pid: int | None, fds: list[int], spare: bool) -> None:
        """A standby handed over with its socket (``pid`` None: the server could not fork it)."""
        channel = socket.socket(fileno=fds[0]) if fds else None
        for fd in fds[1:]:
            os.close(fd)
        with self._lock:
            if not spare:
                self._asked = max(0, self._asked - 1)
                if self._late:  # its run's order went to the server: it is the next delivery's
                    self._late -= 1
                    spare = True
            if channel is not None and pid is not None and not self._closing.is_set():
                until = time.monotonic() + (SPARE_SECONDS if spare else STANDBY_SECONDS)
                self._standbys.append(_Standby(pid, channel, until, spare))
                return
        if channel is not None:
            channel.close()  # closing: it exits

    def _dismiss_expired(self) -> None:
        with self._lock:
            now = time.monotonic()
            for standby in [s for s in self._standbys if s.until <= now]:
                standby.channel.close()  # it sees the end of its socket and exits
                self._standbys.remove(standby)

    def _dismiss_all(self) -> None:
        """Every standby held: their sockets closed, they exit (with the lock held)."""
        for standby in self._standbys:
            standby.channel.close()
        self._standbys.clear()

    def wait_ready(self, timeout: float) -> bool:
        """Whether a server is ready to fork (waiting up to ``timeout`` seconds for one)."""
        return self._ready.wait(timeout)

    @property
    def standbys(self) -> list[int]:
        """The pids of the standbys this side holds, ready for an order, oldest first."""
        with self._lock:
            return [standby.pid for standby in self._standbys]

    @property
    def server_pid(self) -> int | None:
        with self._lock:
            return self._process.pid if self._process is not None else None

    # --- one run ---------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Say an order is likely soon (a run was delivered; its claim is under way): the server forks
        a standby child now and hands it to this side, so that the order only has to be sent to it.
        No answer is awaited; a server not ready, ``MAX_STANDBYS`` waiting already, or a message
        that cannot be sent is no matter: the order forks as it comes. A spare held already
        (``_spare_after``) is this run's instead: nothing is forked while its claim is under way."""
        now = time.monotonic()
        with self._lock:
            self._delivered = (self._delivered[1], now)
            spare = next((s for s in self._standbys if s.spare), None)
            if spare is not None:
                spare.spare, spare.until = False, now + STANDBY_SECONDS
                return
        self._ask_for_standby(spare=False)

    def _spare_after(self) -> None:
        """A run's process ended. If runs come in a stream (the last two delivered within
        ``SPARE_SECONDS`` of each other, the last within ``SPARE_SECONDS``) and no standby is held,
        one is forked now, kept ``SPARE_SECONDS`` for the next delivery.

        Why: the fork (~1.5-2 ms of the server's CPU, its page tables copied) and the standby's
        ``get_ready`` (~3-5 ms of CPU) made at a delivery run while that run's claim is at the API,
        on the same 2 cores: a standby already held made delivered -> claim answered ~3 ms shorter
        (bench/RESULTS.md, "The standby and the claim"). Between one run's end and the next delivery
        nothing of ours is running. A run after seconds of idle still forks at its delivery: a
        standby kept longer would hold memory while the worker idles."""
        now = time.monotonic()
        with self._lock:
            earlier, last = self._delivered
            wanted = not self._standbys and not self._asked and last - earlier <= SPARE_SECONDS and \
                now - last <= SPARE_SECONDS
        if wanted:
            self._ask_for_standby(spare=True)

    def _ask_for_standby(self, spare: bool) -> None:
        with self._lock:
            channel = self._channel if self._ready.is_set() and len(self._standbys) < MAX_STANDBYS else None
            api_url = self._api_url
            if channel is None:
                return
            self._asked += not spare  # before it is sent: the standby may come back at once
        try:
            with self._send_lock:
                channel.send(json.dumps({"prepare": True, "api": api_url, "spare": spare}).encode())
        except OSError:  # the server is going: nothing comes back
            with self._lock:
                self._asked = max(0, self._asked - (not spare))

    def take(self, env: dict[str, str], cwd: str | None) -> ForkedProcess | None:
        """A flow-run process started with ``env`` added to the worker's environment, in ``cwd``;
        None when none was started (no server ready, the order not sent, the fork failed): then
        start one the usual way. Raises ``InfrastructureError`` when one may have been started
        but its pid never came back (the server died or hung meanwhile)."""
        self._api_url = env.get("ORCH_API_URL") or self._api_url
        child = self._to_standby(env, cwd)
        if child is not None:
            return child
        read_end, write_end = os.pipe()
        with self._lock:
            channel = self._channel
            if channel is None or not self._ready.is_set():
                os.close(read_end)
                os.close(write_end)
                return None
            order_id = next(self._ids)
            order = self._answers[order_id] = _Order(read_end)
        try:
            with self._send_lock:
                socket.send_fds(channel, [json.dumps({"id": order_id, "env": env, "cwd": cwd}).encode()], [write_end])
        except OSError as error:  # not sent: nothing was started
            return self._not_forked(order_id, read_end, f"the order could not be sent: {error}")
        finally:
            os.close(write_end)
        answered = order.answered.wait(ANSWER_SECONDS)
        with self._lock:
            self._answers.pop(order_id, None)  # an answer coming later is for nobody
        if order.child is not None:
            return order.child
        if order.error == FORK_FAILED:  # the server said no child was made
            return self._not_forked(order_id, read_end, FORK_FAILED)
        # Sent, and no pid back: a child may exist that nobody watches, so this run must not be
        # started a second time. It ends CRASHED; such a child finds it final and stops.
        os.close(read_end)
        raise InfrastructureError("the fork server " + ("ended" if answered else "did not answer")
                                  + " before saying which process runs this run; not started again")

    def _to_standby(self, env: dict[str, str], cwd: str | None) -> ForkedProcess | None:
        """The order sent to the newest standby (its handle made first, so that its exit report
        finds it); None when none is ready."""
        message = json.dumps({"env": env, "cwd": cwd}).encode()
        while True:
            with self._lock:
                if not self._standbys:
                    self._late = min(self._asked, self._late + 1)  # if its standby is still to come
                    return None
                standby = self._standbys.pop()
                try:
                    read_end, write_end = os.pipe()
                except OSError:
                    standby.channel.close()  # none given to it: it exits
                    raise
                child = self._children[standby.pid] = ForkedProcess(standby.pid, os.fdopen(read_end, "rb"))
            try:
                socket.send_fds(standby.channel, [message], [write_end], socket.MSG_NOSIGNAL)
            except OSError:  # it died meanwhile: not a run's process, its exit is nobody's
                with self._lock:
                    if self._children.get(standby.pid) is child:
                        del self._children[standby.pid]
                assert child.stdout is not None
                child.stdout.close()
                continue
            finally:
                os.close(write_end)  # the standby holds it now: its end is the run's end
                standby.channel.close()  # what was sent stays readable: the standby reads it once
            return child

    def _not_forked(self, order_id: int, read_end: int, why: str) -> None:
        with self._lock:
            self._answers.pop(order_id, None)
        os.close(read_end)
        if why:
            log.warning("fork server: %s; starting a fresh flow-run process", why)

    def close(self) -> None:
        """Stop the server (the children it started run on, each watched by its handle's owner)."""
        with self._lock:
            self._closing.set()
            process, channel = self._process, self._channel
            self._dismiss_all()
        if process is not None and channel is not None:
            stop_server(process, channel)
