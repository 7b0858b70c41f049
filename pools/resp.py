"""Just enough of Redis's protocol (RESP2) for the control plane's few commands on a plain ``redis://`` URL.

The server asks its broker for its id at start (``pools/identity.py``) and then LPUSHes "run X is due"
and reads a queue's LLEN (``pools/publish.py``): a handful of commands. redis-py would load 62 modules,
~45 ms of CPU and ~7 MB of resident memory that a server keeps for its whole life from its first
publish on (issue 22: an idle server's RSS 111 MB against a goal of 80, ``python bench/memory_floor.py``).
So over a plain connection (no TLS, no query options) these commands are sent here, AUTH and SELECT as
redis-py sends them, errors worded as redis-py words them; any other URL goes through redis-py.
Workers consume with Celery, whose Redis transport is redis-py: nothing here is for them.
https://redis.io/docs/latest/develop/reference/protocol-spec/
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
from dataclasses import dataclass
from typing import IO

from pools.errors import BrokerUnavailable

NO_PASSWORD = "AUTH <password> called without any password configured"
# Replies a connection leaves unread before a ``send`` reads them (``Connections.send``): read one at a
# time, each was a poll and a recv more per command, ~25 µs of the create's thread on this VM.
UNREAD_REPLIES = 16


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    username: str | None
    password: str | None
    db: int

    def greeting(self) -> list[list[str]]:
        """The commands a new connection sends first: AUTH when a password is given, SELECT unless db 0."""
        commands: list[list[str]] = []
        if self.password is not None:
            commands.append(["AUTH", self.username, self.password] if self.username else ["AUTH", self.password])
        if self.db:
            commands.append(["SELECT", str(self.db)])
        return commands


def plain_redis(url: str) -> Address | None:
    """The address of a ``redis://`` URL without options, else None (redis-py's to handle)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or 6379
        db = int(parts.path.lstrip("/") or 0)
    except ValueError:
        return None  # redis-py gives its own error
    if parts.scheme != "redis" or parts.query or parts.fragment or not parts.hostname:
        return None
    unquote = urllib.parse.unquote
    return Address(parts.hostname, port, unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password is not None else None, db)


class Error(str):
    """An error reply, its text as redis-py reports it (without the error's code word)."""


def command(args: list[str]) -> bytes:
    encoded = [arg.encode() for arg in args]
    return b"*%d\r\n" % len(encoded) + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in encoded)


def reply(replies: IO[bytes]) -> bytes | Error | None:
    """One reply: bulk strings as bytes (None when nil), integers and simple strings as their text."""
    line = replies.readline()
    if not line.endswith(b"\r\n"):
        raise OSError(0, "Connection closed by server")
    kind, rest = line[:1], line[1:-2]
    if kind == b"-":
        code, _, text = rest.decode(errors="replace").partition(" ")
        return Error(text if code.isupper() and text else rest.decode(errors="replace"))
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else replies.read(size + 2)[:-2]
    return rest  # +OK, :1


def failed(args: list[str], answer: object) -> bool:
    """An error answer; but for a password given to a Redis that has none: redis-py goes on, and so
    does this."""
    return isinstance(answer, Error) and not (args[0] == "AUTH" and answer.startswith(NO_PASSWORD))


def connect_error(address: Address, error: OSError) -> str:
    """redis-py's words for a connection that could not be made."""
    if isinstance(error, TimeoutError):
        return "Timeout connecting to server"
    reason = error.strerror or str(error)
    return f"Error {error.errno} connecting to {address.host}:{address.port}. {reason}."


class _Connection:
    def __init__(self, address: Address, connect_timeout: float, timeout: float) -> None:
        """Connected, AUTHed and SELECTed; raises ``BrokerUnavailable`` (redis-py's words) otherwise."""
        # The tokens of commands sent without waiting for their replies (``Connections.send``), in
        # the order their replies will come.
        self.unread: list[object] = []
        try:
            self.socket = socket.create_connection((address.host, address.port), timeout=connect_timeout)
        except OSError as error:
            raise BrokerUnavailable(connect_error(address, error)) from None
        try:
            self.socket.settimeout(timeout)
            self.replies = self.socket.makefile("rb")
            greeting = address.greeting()
            answers = self.exchange(greeting) if greeting else []
        except OSError as error:
            self.close()
            raise BrokerUnavailable(connect_error(address, error)) from None
        for args, answer in zip(greeting, answers, strict=True):
            if failed(args, answer):
                self.close()
                raise BrokerUnavailable(str(answer))

    def exchange(self, commands: list[list[str]]) -> list[bytes | Error | None]:
        self.socket.sendall(b"".join(command(args) for args in commands))
        return [reply(self.replies) for _ in commands]

    def close(self) -> None:
        self.socket.close()


class Connections:
    """Connections to one Redis for concurrent callers (the dispatcher's thread and request threads
    publish at once): each call takes an idle connection, or opens one, and gives it back after. A
    connection that fails is closed; one that had been idle is retried once on a new connection
    (Redis may have closed it meanwhile, as redis-py retries), a new one's failure is the caller's.

    ``send`` does not wait for its command's reply: the replies are read later, by then long arrived,
    all those waiting in one read -- at the connection's next ``call``, at a ``send`` that finds
    ``UNREAD_REPLIES`` waiting, or at ``settle``. Waiting for each was ~95 µs of a publish's wall and
    ~60 µs of its thread's CPU, sending alone ~15 and ~20 (bench/RESULTS.md, issue 22, "round 8").
    A sent command whose reply is an error, or is lost with its connection (Redis may have run it or
    not), is reported by ``lost``."""

    def __init__(self, address: Address, *, connect_timeout: float = 5, timeout: float = 10) -> None:
        self.address = address
        self.connect_timeout, self.timeout = connect_timeout, timeout
        self._idle: list[_Connection] = []
        self._lost: list[tuple[object, str]] = []
        self._lock = threading.Lock()

    def call(self, *args: str) -> bytes | None:
        """One command's reply; raises ``BrokerUnavailable`` (redis-py's words) when it cannot be had
        or is an error."""
        answer = self._use(list(args), None)
        if isinstance(answer, Error):
            raise BrokerUnavailable(str(answer))
        return answer

    def send(self, *args: str, token: object) -> None:
        """Send one command without waiting for its reply; raises ``BrokerUnavailable`` when it
        cannot be sent. Its reply, read later (see the class), puts ``token`` in ``lost`` if it is
        an error or never comes."""
        self._use(list(args), token)

    def lost(self) -> list[tuple[object, str]]:
        """The tokens of sent commands whose replies were errors or were lost, with the reason, each
        once: those found so far (``settle`` reads the replies still unread)."""
        with self._lock:
            lost, self._lost = self._lost, []
        return lost

    def settle(self) -> None:
        """Read the replies still unread on the idle connections (a connection in use reads its own)."""
        with self._lock:
            waiting = [connection for connection in self._idle if connection.unread]
            self._idle = [connection for connection in self._idle if not connection.unread]
        for connection in waiting:
            try:
                self._read_unread(connection)
            except OSError:
                continue  # closed, its commands lost
            with self._lock:
                self._idle.append(connection)

    def _use(self, args: list[str], token: object) -> bytes | Error | None:
        """``args`` sent on a connection; its reply, or None when ``token`` is given (sent only)."""
        with self._lock:
            reused = self._idle.pop() if self._idle else None
        # An idle connection that fails is tried once more on a new one: Redis may have closed it.
        for connection in [reused, None] if reused is not None else [None]:
            connection = connection or _Connection(self.address, self.connect_timeout, self.timeout)
            try:
                if token is None or len(connection.unread) >= UNREAD_REPLIES:
                    self._read_unread(connection)
                if token is None:
                    (answer,) = connection.exchange([args])
                else:
                    connection.socket.sendall(command(args))
                    connection.unread.append(token)
                    answer = None
            except TimeoutError:
                self._close(connection, "Timeout reading from socket")
                raise BrokerUnavailable("Timeout reading from socket") from None
            except OSError as error:
                reason = f"Error while reading from {self.address.host}:{self.address.port}: {error.strerror or error}"
                self._close(connection, reason)
                if connection is reused:
                    continue
                raise BrokerUnavailable(reason) from None
            with self._lock:
                self._idle.append(connection)
            return answer
        raise AssertionError("unreachable")

    def _read_unread(self, connection: _Connection) -> None:
        """The replies of the commands sent on ``connection`` and not yet read; raises ``OSError``
        (the connection closed, its unread commands lost) when they cannot be read."""
        try:
            while connection.unread:
                answer = reply(connection.replies)
                token = connection.unread.pop(0)
                if isinstance(answer, Error):
                    with self._lock:
                        self._lost.append((token, str(answer)))
        except TimeoutError:
            self._close(connection, "Timeout reading from socket")
            raise
        except OSError as error:
            self._close(connection, f"Error while reading from {self.address.host}:{self.address.port}: "
                                    f"{error.strerror or error}")
            raise

    def _close(self, connection: _Connection, reason: str) -> None:
        """Closed; the commands sent on it whose replies were not read are lost (``reason``)."""
        connection.close()
        if connection.unread:
            with self._lock:
                self._lost += [(token, reason) for token in connection.unread]
            connection.unread = []

    def close(self) -> None:
        """Every idle connection closed. Replies still unread are not waited for: a message Redis
        did not take is the dispatcher's to publish again, as one it loses (``redispatch_seconds``)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
