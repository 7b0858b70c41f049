"""The client's HTTP side: one keep-alive connection per thread, retries while the server is
unreachable or answers 503, and error answers turned back into the project's exceptions.

Built on the standard library so that a flow-run process starts fast: ``http://`` URLs through
``plain_http.py`` (HTTP/1.1 on a socket, without ``http.client``'s import of ``ssl``), ``https://``
through ``http.client``. An error
answer carries the class's ``code`` (``orchestrator.errors``): the client raises that very class,
so ``except InvalidTransition`` works across the wire. A server that sends no code (an older one,
or a proxy in front of it) is understood by its status.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import select
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Self

from orchestrator.client.plain_http import PlainConnection, ProtocolError
from orchestrator.errors import (
    ROUTE_NOT_FOUND,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    NotTheApi,
    OrchestratorError,
    RateLimited,
    ServerUnreachable,
    ServiceUnavailable,
    Unauthorized,
    error_for_code,
)
from orchestrator.retries import RETRY_DELAY_MAX_SECONDS  # the reaper counts it in

if TYPE_CHECKING:
    import http.client

    from orchestrator.settings import Settings

    Connection = http.client.HTTPConnection | PlainConnection

# Failures after which nothing reached the server, or a kept-alive connection the server had
# already closed (``http.client.RemoteDisconnected`` is a ``ConnectionResetError``): safe to send
# again on a new connection.
_RECONNECTABLE = (ConnectionError,)

# What a status meant before error bodies carried a code; used only when an answer has none.
_BY_STATUS: dict[int, type[OrchestratorError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: InvalidInput,
    429: RateLimited,
    503: ServiceUnavailable,
}


class Transport:
    def __init__(
        self,
        api_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retry_seconds: float = 0.0,
    ) -> None:
        """``retry_seconds``: how long to keep retrying while the server is unreachable or answers
        503 (workers and flow-run processes ride out restarts; the CLI fails fast)."""
        parsed = urllib.parse.urlsplit(api_url.rstrip("/"))
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise OrchestratorError(f"invalid API URL {api_url!r}: expected http(s)://host:port/api")
        self.api_url = api_url.rstrip("/")
        self._scheme = parsed.scheme
        self._host = parsed.hostname
        self._port = parsed.port
        self._prefix = parsed.path
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self._retries_stopped = threading.Event()
        self._local = threading.local()
        self._all_connections: list[Connection] = []  # every thread's, for close()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, retry_seconds: float = 0.0) -> Self:
        key = settings.api_key.get_secret_value() if settings.api_key else None
        return cls(settings.api_url, api_key=key, timeout=settings.client_timeout_seconds, retry_seconds=retry_seconds)

    def _connection(self) -> Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._new_connection(self.timeout)
            self._local.connection = connection
        return connection

    def _new_connection(self, timeout: float) -> Connection:
        connection: Connection
        if self._scheme == "https":
            import http.client

            connection = http.client.HTTPSConnection(self._host, self._port, timeout=timeout)
        else:
            connection = PlainConnection(self._host, self._port, timeout)
        with self._lock:
            self._all_connections.append(connection)
        return connection

    def _forget_connection(self, connection: Connection) -> None:
        connection.close()
        with self._lock, contextlib.suppress(ValueError):  # closed by ``close`` meanwhile
            self._all_connections.remove(connection)

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
            with self._lock:
                self._all_connections.remove(connection)

    def stop_retrying(self) -> None:
        """From now on fail at once when the server is unreachable, in every thread, including
        requests already waiting out an outage (a worker shutting down stops waiting for the API)."""
        self._retries_stopped.set()

    def request(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None,
                timeout: float | None = None, on_sent: Callable[[], object] | None = None) -> Any:
        """Send one request; return the decoded JSON body (None for 204). ``on_sent`` is called
        each time the request has been written, before its answer is awaited: work that overlaps
        the round trip."""
        return self._exchange(method, self._url(path, params), body, timeout, on_sent)[0]

    def send_now(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                 timeout: float | None = None) -> SentRequest:
        """Write one request without a body on a connection of its own and return at once; its
        answer is read later, by any one thread (``SentRequest.answer``)."""
        return SentRequest(self, method, self._url(path, params), timeout or self.timeout)

    def pages(self, path: str, params: dict[str, Any] | None = None) -> Iterator[Any]:
        """Each page of a list route, following its ``Link`` header's rel="next" to the last."""
        url: str | None = self._url(path, params)
        while url is not None:
            data, link = self._exchange("GET", url, None, None)
            yield data
            url = _next_link(link)

    def listed(self, path: str, params: dict[str, Any]) -> list[Any]:
        """The items of a list route: one page when ``params`` give a ``limit``, else all of them
        (1,000 a page), so that a list never stops silently at the route's default page size."""
        if params.get("limit") is not None:
            return list(self.request("GET", path, params=params))
        return [item for page in self.pages(path, {**params, "limit": 1000}) for item in page]

    def _url(self, path: str, params: dict[str, Any] | None) -> str:
        url = self._prefix + path
        if params:
            query = {k: v for k, v in params.items() if v is not None}
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        return url

    def _exchange(self, method: str, url: str, body: Any, timeout: float | None,
                  on_sent: Callable[[], object] | None = None) -> tuple[Any, str | None]:
        """The decoded JSON body of one request (None for 204) and its ``Link`` header, with the
        retries this client is made for."""
        payload = None if body is None else json.dumps(body, default=_json_default).encode()
        deadline = time.monotonic() + self.retry_seconds
        stopped = self._retries_stopped
        delay = 0.1
        reconnected = False
        while True:
            try:
                status, data, link = self._send(method, url, payload, timeout, on_sent)
            except _RECONNECTABLE as error:
                self._drop_connection()
                if not reconnected:
                    reconnected = True  # a stale keep-alive connection: one immediate retry
                    continue
                if time.monotonic() >= deadline or stopped.is_set():
                    raise ServerUnreachable(f"cannot reach the API at {self.api_url}: {error}") from None
            except (TimeoutError, OSError) as error:
                self._drop_connection()
                if time.monotonic() >= deadline or stopped.is_set():
                    raise ServerUnreachable(f"cannot reach the API at {self.api_url}: {error}") from None
            else:
                if status < 400:
                    return (json.loads(data) if data else None), link
                error = error_from_answer(status, data)
                if error is None:
                    raise NotTheApi(self._not_the_api(method, url))
                if status != 503 or time.monotonic() >= deadline or stopped.is_set():
                    raise error
            reconnected = True
            stopped.wait(delay)
            delay = min(delay * 2, RETRY_DELAY_MAX_SECONDS)

    def _send(self, method: str, url: str, payload: bytes | None, timeout: float | None,
              on_sent: Callable[[], object] | None = None) -> tuple[int, bytes, str | None]:
        connection = self._connection()
        connection.timeout = timeout or self.timeout
        if connection.sock is not None:
            connection.sock.settimeout(connection.timeout)
        try:
            connection.request(method, url, body=payload, headers=self._headers)
            if on_sent is not None:
                on_sent()
            response = connection.getresponse()
            data = response.read()
        except BaseException:
            self._drop_connection()  # its answer unread: never sent on again
            raise
        if response.getheader("connection", "").lower() == "close":
            self._drop_connection()
        return response.status, data, response.getheader("link")

    def _not_the_api(self, method: str, url: str) -> str:
        """Why a request met a 404 that is not the API's own (those always name the missing
        object): the URL is not the API's, most often ``ORCH_API_URL`` without its ``/api``."""
        def answers(path: str) -> bool:
            try:
                status, data, _ = self._send("GET", path, None, None)
            except _broken_answer():
                self._drop_connection()
                return False
            return status == 200 and data.startswith(b"{")

        if answers(self._prefix + "/health"):  # the API, without this route: an older server
            return f"the API at {self.api_url} has no route {method} {url.partition('?')[0]} (is the server older?)"
        if answers(self._prefix + "/api/health"):
            return f"ORCH_API_URL={self.api_url} answers but is not the API; did you mean {self.api_url}/api?"
        return (f"ORCH_API_URL={self.api_url} answers but is not the orchestrator API (nothing at "
                f"{self.api_url}/health); it should look like http://HOST:4300/api")

    def close(self) -> None:
        """Close the connections of every thread that used this client."""
        with self._lock:
            connections, self._all_connections = self._all_connections, []
        for connection in connections:
            connection.close()
        self._local = threading.local()


class SentRequest:
    """A request already written to the server, its answer not read yet (``Transport.send_now``):
    a held request (a connection lease) opened by a thread that must not wait for its answer. Its
    connection is its own; it closes once the answer is read, or with the transport."""

    def __init__(self, transport: Transport, method: str, url: str, timeout: float) -> None:
        self._transport, self._method, self._url, self._timeout = transport, method, url, timeout
        self._connection: Connection | None = transport._new_connection(timeout)
        try:
            self._connection.request(method, url, headers=transport._headers)
        except _broken_answer():
            self._close()  # not sent (the server is down, say): ``answer`` sends it the usual way

    def waiting(self) -> bool:
        """Sent, and no answer (nor the connection's end) has come back yet: the request is still
        open at the server. Never blocks."""
        connection = self._connection
        if connection is None or connection.sock is None:
            return False
        try:
            readable, _, _ = select.select([connection.sock], [], [], 0)
        except (OSError, ValueError):  # closed by ``Transport.close`` meanwhile
            return False
        return not readable

    def answer(self) -> Any:
        """The decoded answer, waiting for it. A request that could not be sent, lost its
        connection or met an error answer is made again the usual way (``Transport.request``: its
        retries while the server is unreachable, its errors raised as the server's classes)."""
        connection = self._connection
        if connection is not None:
            try:
                response = connection.getresponse()
                data = response.read()
                if response.status < 400:
                    return json.loads(data) if data else None
            except _broken_answer():
                pass
            finally:
                self._close()
        return self._transport._exchange(self._method, self._url, None, self._timeout)[0]

    def _close(self) -> None:
        if self._connection is not None:
            self._transport._forget_connection(self._connection)
            self._connection = None


def _broken_answer() -> tuple[type[Exception], ...]:
    """What a connection raises when the request or its answer broke: ``OSError``, a malformed
    answer (ours, and ``http.client``'s once an ``https://`` connection has imported it)."""
    client = sys.modules.get("http.client")
    return (OSError, ProtocolError) if client is None else (OSError, ProtocolError, client.HTTPException)


def _next_link(header: str | None) -> str | None:
    """The path and query of a ``Link`` header's rel="next" (the API writes one link at most)."""
    if not header or 'rel="next"' not in header:
        return None
    target = urllib.parse.urlsplit(header.split(">", 1)[0].lstrip(" <"))
    return f"{target.path}?{target.query}" if target.query else target.path


def error_from_answer(status: int, data: bytes) -> OrchestratorError | None:
    """The exception an error answer stands for: the class its ``code`` names, else the one its
    status meant. None for a path no route serves (the API's ``route_not_found``, a web framework's
    bare ``{"detail": "Not Found"}``, or a 404 page from a server that is not the API at all)."""
    text = data.decode(errors="replace")
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):  # not the API's JSON: a proxy's or another server's page
        return None if status == 404 else _BY_STATUS.get(status, OrchestratorError)(text or f"HTTP {status}")
    code, detail = answer.get("code"), answer.get("detail", text)
    if code == ROUTE_NOT_FOUND or (code is None and status == 404 and detail == "Not Found"):
        return None
    return (error_for_code(code) or _BY_STATUS.get(status, OrchestratorError)).from_answer(detail, answer)


def _json_default(value: Any) -> Any:
    if isinstance(value, (uuid.UUID, dt.datetime, dt.date)):
        return str(value) if isinstance(value, uuid.UUID) else value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
