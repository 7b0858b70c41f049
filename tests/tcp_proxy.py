"""``TcpProxy``: a loopback TCP forwarder for tests that cut the connections between a client and
a server."""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class TcpProxy:
    """A loopback TCP forwarder whose connections a test can cut: a dropped connection, for real,
    between a client and a server (TLS passes through untouched). Or ``pause``: nothing is
    forwarded, and no connection closes, as when a host is lost or the network between the two is
    partitioned; ``resume`` delivers what waited, as a healed network does."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.drops = 0
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._gate = threading.Lock()  # held while forwarding: once ``pause`` returns, nothing moves
        threading.Thread(target=self._accept, daemon=True, name="tcp-proxy").start()

    def pause(self) -> None:
        """Stop forwarding, in both directions and on new connections, closing nothing (not even
        a connection whose client has gone meanwhile: nobody reads it)."""
        with self._gate:
            self._forwarding.clear()

    def resume(self) -> None:
        self._forwarding.set()

    def _accept(self) -> None:
        while not self._closed:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(downstream,), daemon=True).start()

    def _connect(self, downstream: socket.socket) -> None:
        while not self._forwarding.wait(1.0):  # paused: the connection is made only once resumed
            if self._closed:
                downstream.close()
                return
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            downstream.close()
            return
        with self._lock:
            self._pairs.append((downstream, upstream))
        self._pipe(downstream, upstream)

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                if not self._forwarding.wait(1.0):  # paused: nothing read, nothing written
                    continue
                readable, _, _ = select.select([a, b], [], [], 1.0)
                with self._gate:
                    if not self._forwarding.is_set():
                        continue
                    for source in readable:
                        data = source.recv(65536)
                        if not data:
                            return
                        (b if source is a else a).sendall(data)
        except (OSError, ValueError):  # ValueError: select on a socket another thread closed
            return
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def drop_connections(self) -> int:
        """Reset every open connection; return how many there were."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
        self.drops += len(pairs)
        return len(pairs)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self.drop_connections()
