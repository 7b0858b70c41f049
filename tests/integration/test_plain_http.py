"""``orchestrator/client/plain_http.py`` reads an answer as ``http.client`` does (the transport's
``http://`` connections), checked side by side on the same bytes from a real socket, and sends what
``http.client`` sends for the same request."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from collections.abc import Iterator

import pytest

from orchestrator.client.plain_http import PlainConnection, ProtocolError

ANSWERS = {
    "length": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
    "chunked": b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nLink: <a>\r\nlink: <b>\r\n\r\n"
               b"3\r\n{\"a\r\n4;x=y\r\n\":2}\r\n0\r\nTrailer: t\r\n\r\n",
    "no content": b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    "until the end": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it",
    "http/1.0": b"HTTP/1.0 404 Not Found\r\nContent-Length: 2\r\n\r\n{}",
    "continue first": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
}


@pytest.fixture
def canned() -> Iterator[tuple[int, list[bytes], list[bytes]]]:
    """A server on a free port: each connection gets the next answer of ``answers`` (appended by the
    test) after the request's head and body, then is closed; what it received is in ``received``."""
    listener = socket.create_server(("127.0.0.1", 0))
    answers: list[bytes] = []
    received: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += connection.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += connection.recv(65536)
                received.append(head + b"\r\n\r\n" + body)
                connection.sendall(answers.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], answers, received
    listener.close()
    thread.join(timeout=5)


def _read(connection: http.client.HTTPConnection | PlainConnection) -> tuple[int, bytes, str | None, str | None]:
    connection.request("POST", "/api/x?y=1", body=b'{"k":1}', headers={"Accept": "application/json"})
    response = connection.getresponse()
    data = response.read()
    return response.status, data, response.getheader("link"), response.getheader("CONTENT-TYPE", "none")


@pytest.mark.parametrize("answer", list(ANSWERS), ids=str)
def test_an_answer_is_read_as_http_client_reads_it(canned: tuple[int, list[bytes], list[bytes]],
                                                  answer: str) -> None:
    port, answers, received = canned
    answers.extend([ANSWERS[answer], ANSWERS[answer]])
    theirs = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    ours = PlainConnection("127.0.0.1", port, 10)
    try:
        assert _read(ours) == _read(theirs)
    finally:
        ours.close()
        theirs.close()
    assert received[0] == received[1]  # the same request sent, header by header


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_a_request_without_body_is_sent_as_http_client_sends_it(canned: tuple[int, list[bytes], list[bytes]],
                                                               method: str) -> None:
    port, answers, received = canned
    answers.extend([ANSWERS["no content"], ANSWERS["no content"]])
    for connection in (PlainConnection("127.0.0.1", port, 10), http.client.HTTPConnection("127.0.0.1", port, timeout=10)):
        connection.request(method, "/api/health", headers={"Authorization": "Bearer k"})
        connection.getresponse().read()
        connection.close()
    assert received[0] == received[1]


def test_a_connection_closed_without_an_answer_is_a_connection_reset(
        canned: tuple[int, list[bytes], list[bytes]]) -> None:
    port, answers, _ = canned
    answers.append(b"")
    connection = PlainConnection("127.0.0.1", port, 10)
    connection.request("GET", "/api/health")
    with pytest.raises(ConnectionResetError):  # what the transport sends again on a new connection
        connection.getresponse()
    connection.close()


def test_an_answer_that_is_not_http_is_a_protocol_error(canned: tuple[int, list[bytes], list[bytes]]) -> None:
    port, answers, _ = canned
    answers.append(b"-ERR unknown command 'GET'\r\n")  # a Redis port given as the API's
    connection = PlainConnection("127.0.0.1", port, 10)
    connection.request("GET", "/api/health")
    with pytest.raises(ProtocolError):
        connection.getresponse()
    connection.close()


def test_close_does_not_wait_for_a_thread_reading_an_answer() -> None:
    """A flow-run process's heartbeat thread waits on a held request's answer while the process
    closes its client and leaves: ``close`` must return at once, as ``http.client``'s does (closing
    the socket's reader would wait for the lock that blocked read holds)."""
    import sys

    from tests.harness import wait_until

    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    connection = PlainConnection("127.0.0.1", listener.getsockname()[1], 60)
    connection.request("GET", "/api/held")
    accepted.append(listener.accept()[0])  # the server never answers

    def read() -> None:
        with contextlib.suppress(OSError):  # the socket closed under it (or the test's end)
            connection.getresponse()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert reader.ident is not None
    wait_until("the reader blocked reading the status line",
               lambda: sys._current_frames()[reader.ident].f_code.co_name == "readinto", 10, 0.01)  # socket.py's
    closer = threading.Thread(target=connection.close, daemon=True)
    closer.start()
    closer.join(10)
    try:
        assert not closer.is_alive() and connection.sock is None
    finally:
        for sock in (*accepted, listener):
            sock.close()


def test_connections_opened_ahead_are_taken_first_and_one_the_server_closed_is_made_again() -> None:
    from orchestrator.client.plain_http import connect_ahead
    from orchestrator.client.transport import Transport

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    port = listener.getsockname()[1]
    connect_ahead("127.0.0.1", port, 2)
    older, _ = listener.accept()
    newer, _ = listener.accept()
    newer.close()  # the server closed the one taken first meanwhile (a restart, say)

    def answer() -> None:
        with older:
            data = b""
            while b"\r\n\r\n" not in data:
                data += older.recv(65536)
            older.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    transport = Transport(f"http://127.0.0.1:{port}/api", timeout=30)
    try:
        assert transport.request("GET", "/health") == {"ok": True}  # sent again on the other one
    finally:
        transport.close()
        thread.join(timeout=5)
    listener.settimeout(0)
    with pytest.raises(BlockingIOError):  # neither request connected anew
        listener.accept()
    listener.close()


LOOKUP = r"""
import json, sys
from orchestrator.client.plain_http import PlainConnection, connect_ahead

port = int(sys.argv[1])
connect_ahead("localhost", port, 1)
connection = PlainConnection("localhost", port, 10)  # the one opened ahead
connection.request("GET", "/api/health")
first = connection.getresponse().read()
connection.close()
connection = PlainConnection("localhost", port, 10)  # a connection of its own
connection.request("GET", "/api/health")
print(json.dumps([first.decode(), connection.getresponse().read().decode(), "encodings.idna" in sys.modules]))
"""


def test_a_host_name_is_looked_up_without_the_idna_codec(canned: tuple[int, list[bytes], list[bytes]]) -> None:
    """An ASCII host name (``localhost``, as an API URL names it) is looked up as bytes: no process
    of a run imports the idna codec for it (``plain_http.lookup_name``); a non-ASCII name is left to it."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from orchestrator.client.plain_http import lookup_name

    port, answers, _ = canned
    answers.extend([ANSWERS["length"], ANSWERS["length"]])
    done = subprocess.run([sys.executable, "-c", LOOKUP, str(port)], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ['{"a":1}', '{"a":1}', False]
    assert lookup_name("127.0.0.1") == b"127.0.0.1" and lookup_name("bücher.example") == "bücher.example"
