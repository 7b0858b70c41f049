"""HTTP/1.1 over a plain TCP socket: the part of ``http.client.HTTPConnection`` the client's transport
uses (``transport.py``), for ``http://`` API URLs.

Why not ``http.client`` itself: importing it imports ``ssl`` and libssl, 1.4 MB of RSS in the process
worker's fork server, where every flow-run process is forked from (4.1 MB in a process that has not
mapped libcrypto for ``hashlib`` yet), and each request costs ~140 us of CPU against ~50 here; an
``http://`` API needs none of it (bench/RESULTS.md, "The worker tree's idle memory: ...").
``https://`` URLs still go through ``http.client.HTTPSConnection``.

What is sent is what ``http.client`` sends for the transport's requests (``Host``, ``Accept-Encoding:
identity``, ``Content-Length`` for a body and for a POST, PUT or PATCH without one, then the given
headers); an answer is read by its ``Content-Length``, chunked, or up to the connection's end.
"""

from __future__ import annotations

import socket
from typing import BinaryIO

_MAX_LINE = 65536  # http.client's limit for a status or header line
_MAX_HEADERS = 100  # and for the number of headers


# Connections opened ahead by ``connect_ahead``, by (host, port), for the next ones made there.
_ahead: dict[tuple[str, int], list[socket.socket]] = {}
AHEAD_CONNECT_SECONDS = 2.0  # an API slower to accept than this is connected to by the run itself


def connect_ahead(host: str, port: int | None, count: int) -> None:
    """Open ``count`` connections to ``host:port`` now, for this process's next connections there
    to take instead of connecting (a fork server's standby, before its order: ``runtime/standby.py``).
    One the server has closed meanwhile fails as any kept-alive connection it closed does, and the
    transport connects again."""
    sockets = _ahead.setdefault((host, port or 80), [])
    for _ in range(count):
        sock = socket.create_connection((lookup_name(host), port or 80), AHEAD_CONNECT_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sockets.append(sock)


def lookup_name(host: str) -> str | bytes:
    """``host`` as the socket's name lookup takes it: an ASCII name (every IP address, nearly every
    host name) as bytes. Given a ``str``, ``socket.getaddrinfo`` encodes it with the idna codec,
    whose first use imports ``encodings.idna``, ``stringprep`` and ``unicodedata``: ~1 ms of a flow-run
    process's CPU, or ~0.3 MB that the fork server held for every run only to have it loaded. An
    ASCII name is the same bytes either way; a non-ASCII one still goes through the codec."""
    return host.encode("ascii") if host.isascii() else host


def _connected(host: str, port: int, timeout: float | None) -> socket.socket:
    try:
        sock = _ahead.get((host, port), []).pop()  # atomic: two threads never take the same one
    except IndexError:
        sock = socket.create_connection((lookup_name(host), port), timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    sock.settimeout(timeout)
    return sock


class ProtocolError(Exception):
    """The answer is not HTTP/1.x (what ``http.client`` raises an ``HTTPException`` for)."""


class PlainConnection:
    """One keep-alive connection to ``host:port``, opened at the first request (and again after
    ``close``). Like ``http.client``'s: ``sock`` is None until connected, ``timeout`` applies to
    the connect and each read and write; a server that closed the connection before answering
    raises ``ConnectionResetError`` (``http.client.RemoteDisconnected`` is one)."""

    def __init__(self, host: str, port: int | None, timeout: float | None) -> None:
        self.host, self.port, self.timeout = host, port or 80, timeout
        bracketed = f"[{host}]" if ":" in host else host  # an IPv6 address
        self._host_header = bracketed if self.port == 80 else f"{bracketed}:{self.port}"
        self.sock: socket.socket | None = None
        self._file: BinaryIO | None = None

    def request(
        self, method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> None:
        if self.sock is None:
            self.sock = _connected(self.host, self.port, self.timeout)
            self._file = self.sock.makefile("rb")
        lines = [f"{method} {url} HTTP/1.1", f"Host: {self._host_header}", "Accept-Encoding: identity"]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        elif method in ("POST", "PUT", "PATCH"):
            lines.append("Content-Length: 0")
        lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
        self.sock.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + (body or b""))

    def getresponse(self) -> PlainResponse:
        if self._file is None:
            raise ConnectionResetError("not connected")
        while True:
            response = PlainResponse(self._file)
            if response.status >= 200:
                break  # 1xx answers are followed by the real one
        response.body = response.read_body()
        if response.closes:
            self.close()
        return response

    def close(self) -> None:
        """As ``http.client`` closes: the socket, not its reader. Another thread may be blocked
        reading an answer (a held heartbeat's) with the reader's lock held, which closing the
        reader would wait for; the descriptor goes once that read ends and the reader is freed."""
        sock, self.sock, self._file = self.sock, None, None
        if sock is not None:
            sock.close()


class PlainResponse:
    """An answer read whole: ``status``, ``getheader``, ``read``."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        line = file.readline(_MAX_LINE + 1)
        if not line:
            raise ConnectionResetError("Remote end closed connection without response")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code = rest[:3]
        if (
            not version.startswith("HTTP/1.")
            or len(line) > _MAX_LINE
            or not (code.isascii() and code.isdigit())
        ):
            raise ProtocolError(f"not an HTTP answer: {line[:80]!r}")
        self.status = int(code)
        self._headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            header = file.readline(_MAX_LINE + 1)
            if header in (b"\r\n", b"\n", b""):
                break
            name, colon, value = header.decode("latin-1").partition(":")
            if not colon or len(header) > _MAX_LINE:
                raise ProtocolError(f"bad header line: {header[:80]!r}")
            key, value = name.strip().lower(), value.strip()
            self._headers[key] = f"{self._headers[key]}, {value}" if key in self._headers else value
        else:
            raise ProtocolError(f"more than {_MAX_HEADERS} headers")
        connection = self.getheader("connection", "").lower()
        self.closes = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        self.body = b""

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self._headers.get(name.lower(), default)

    def read(self) -> bytes:
        return self.body

    def read_body(self) -> bytes:
        if self.status in (204, 304) or 100 <= self.status < 200:
            return b""
        if "chunked" in self.getheader("transfer-encoding", "").lower():
            return self._read_chunks()
        length = self.getheader("content-length")
        if length is not None:
            if not (length.isascii() and length.isdigit()):
                raise ProtocolError(f"bad Content-Length: {length!r}")
            return self._read_exactly(int(length))
        self.closes = True  # no length: the body ends with the connection
        return self._file.read()

    def _read_chunks(self) -> bytes:
        parts = []
        while True:
            size_line = self._file.readline(_MAX_LINE + 1).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size: {size_line[:80]!r}") from None
            if size == 0:
                while self._file.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self._read_exactly(size))
            self._read_exactly(2)  # the chunk's CRLF

    def _read_exactly(self, size: int) -> bytes:
        data = self._file.read(size)
        if len(data) < size:
            raise ConnectionResetError(f"the connection closed after {len(data)} of {size} bytes")
        return data
