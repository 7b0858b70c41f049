"""The run path's routes served without FastAPI's per-request machinery when the request is an
ordinary one: a run's create (``POST /api/deployments/{id}/runs``), the worker's claim and the state
reports (``POST /api/flow_runs/{id}/claim``, ``.../state``): ``ROUTES``, one small table.

FastAPI serves a request through a dozen ASGI layers, builds a ``Request``, reads and ``json.loads``
the body, solves the route's dependencies one by one, validates the parsed body against the model,
and only then calls the endpoint: ~0.65-0.75M instructions of the event loop a request, two thirds of
its part of a claim or a state report (bench/run_path_instructions.py; bench/RESULTS.md, issue 22).
This middleware, the outermost of the app's own (inside Starlette's and FastAPI's: the 500 answer,
telemetry, the body limit), answers a request of a route of the table that is what clients send -- a
canonical id in the path, a JSON body that the route's model validates straight from its bytes
(``model_validate_json``), the query parameters the route reads valid -- with the route's own
authorization (``scopes.authorize_need``) and its own endpoint (on a thread, as FastAPI runs a plain
``def``), and an error raised there answered by the app's own handlers.

Anything else goes the ordinary way, its body replayed: a body the model refuses or a query
parameter its check refuses (FastAPI's 422 is then the one answer), another content type, a path
FastAPI may read differently, a disconnect, a NUL in the query (``RefuseNul``'s 422). The app's own
layers it is outside of have nothing else to do for what it serves: the table's paths are eager
routes' (no lazy family to load) and have no NUL. So every answer is the one FastAPI gives, byte for
byte; the fast way only decides earlier.

A route fits the table when its endpoint is a plain ``def`` taking the path's id, the body's model,
the app's context and optional query parameters, and returns a ``Response`` it made itself (so
FastAPI has no model to serialize). The run's heartbeat does not: its request is held (a long poll
that watches the connection), answered with a model FastAPI serializes.

The endpoint's call goes to a thread as ``run_in_threadpool`` sends it -- one of anyio's default
limiter's tokens held meanwhile (the cap every sync route shares), the request's context copied, the
call seen through to its end even when the request is cancelled -- but on threads of its own
(``Hop``): anyio's way costs ~70 µs of CPU a call (a checkpoint, the limiter's own, a cancel scope, a
``queue.Queue``), this one ~13 (bench/RESULTS.md, issue 22). With every token taken it waits in
anyio's line.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import inspect
import queue
import re
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from pydantic import BaseModel, StringConstraints, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator import schemas
from orchestrator.schemas.flow_runs import INFRASTRUCTURE_ID_MAX
from orchestrator.server.api import scopes
from orchestrator.server.api.errors import nul_in
from orchestrator.server.api.routes import deployments, flow_runs

T = TypeVar("T")
_HEX = "[0-9a-fA-F]"
# The hyphenated form only: FastAPI's UUID reads others too (braces, no hyphens), which go its way.
_ID = f"({_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}})"


@dataclass(frozen=True)
class FastRoute:
    """One route of the table. ``endpoint(id, body, ctx, **query)`` is the route's own endpoint;
    ``query``: the query parameters it reads, each with the check its route declares, all optional
    and None when absent (as declared: ``Query(None, ...)``; passed even then, since the endpoint's
    own default is FastAPI's ``Query`` object)."""

    name: str  # the endpoint's name: its need in ``scopes.ROUTES``
    path: re.Pattern[str]  # the path as clients send it, the id its one group
    param: str  # the id's name in the route's path (what ``authorize`` reads for a run's own key)
    body: type[BaseModel]
    endpoint: Callable[..., Response]
    query: Mapping[str, TypeAdapter[Any]] = field(default_factory=dict)

    @property
    def need(self) -> scopes.Need:
        return scopes.ROUTES[self.name]

    def read_query(self, query_string: bytes) -> dict[str, Any] | None:
        """The query parameters the endpoint reads, as FastAPI reads them (Starlette's parse: the
        last of a repeated name); None when a check refuses one (FastAPI's 422 answers it)."""
        read = dict.fromkeys(self.query)
        if not query_string or not self.query:
            return read
        given = dict(urllib.parse.parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
        for name, check in self.query.items():
            if name in given:
                try:
                    read[name] = check.validate_python(given[name])
                except ValidationError:
                    return None
        return read


# The state route's ``infrastructure_id``: ``Query(None, min_length=1, max_length=INFRASTRUCTURE_ID_MAX)``
_INFRASTRUCTURE_ID = TypeAdapter(Annotated[str, StringConstraints(min_length=1,
                                                                  max_length=INFRASTRUCTURE_ID_MAX)])

ROUTES = (
    FastRoute("create_flow_run", re.compile(f"/api/deployments/{_ID}/runs"), "deployment_id",
              schemas.FlowRunCreate, deployments.create_flow_run),
    FastRoute("claim_flow_run", re.compile(f"/api/flow_runs/{_ID}/claim"), "run_id",
              schemas.ClaimRequest, flow_runs.claim_flow_run),
    FastRoute("set_flow_run_state", re.compile(f"/api/flow_runs/{_ID}/state"), "run_id",
              schemas.StateCreate, flow_runs.set_flow_run_state, {"infrastructure_id": _INFRASTRUCTURE_ID}),
)


class Hop:
    """Calls on threads of its own for the event loop (see the module's docstring). A thread is
    started when none is free and ends after ``idle`` seconds without work (anyio's own idle time)."""

    def __init__(self, idle: float = 10.0) -> None:
        self.idle = idle
        self._work: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._free = 0  # threads waiting for work that no call has claimed yet
        self.threads = 0  # threads alive (tests read it)
        self.calls = 0  # calls made on them (tests read it)
        # The loop's default limiter, kept: anyio finds it through the async library's name and a
        # run variable, ~40 µs of the loop's CPU a create under a profiler (bench/RESULTS.md, issue
        # 22). One object for a loop's life (its tokens changed in place), so the kept one is it.
        self._limiter: tuple[asyncio.AbstractEventLoop, anyio.CapacityLimiter] | None = None

    def _default_limiter(self, loop: asyncio.AbstractEventLoop) -> anyio.CapacityLimiter:
        kept = self._limiter
        if kept is not None and kept[0] is loop:
            return kept[1]
        limiter = anyio.to_thread.current_default_thread_limiter()
        self._limiter = (loop, limiter)
        return limiter

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        limiter = self._default_limiter(loop)
        try:
            limiter.acquire_nowait()
        except anyio.WouldBlock:  # every token taken: in anyio's line, as any sync route
            return await run_in_threadpool(function, *args)
        try:
            # The call's future, in a box: a cancellation cancels the future awaited, and the one
            # put in its place is the one the thread settles (both on the loop's thread).
            box: list[asyncio.Future[T]] = [loop.create_future()]
            with self._lock:
                if self._free:
                    self._free -= 1
                    start = False
                else:
                    self.threads += 1
                    start = True
            if start:
                try:
                    threading.Thread(target=self._work_forever, name="fast-route", daemon=True).start()
                except BaseException:  # no thread (a process at its limit): none counted, the error answered
                    with self._lock:
                        self.threads -= 1
                    raise
            self._work.put((loop, box, contextvars.copy_context(), function, args))
            try:
                return await box[0]
            except asyncio.CancelledError:  # as anyio's shielded call: the call ends first
                if box[0].cancelled():
                    box[0] = loop.create_future()
                    while not box[0].done():
                        # cancelled: its outcome is dropped
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await asyncio.shield(box[0])
                raise
        finally:
            limiter.release()

    def _work_forever(self) -> None:
        while True:
            try:
                loop, box, context, function, args = self._work.get(timeout=self.idle)
            except queue.Empty:
                with self._lock:
                    if self._free:  # unclaimed: ends (a claimed one has a call on its way)
                        self._free -= 1
                        self.threads -= 1
                        return
                continue
            try:
                outcome, failed = context.run(function, *args), False
            except BaseException as error:  # noqa: BLE001 - handed to the awaiting request
                outcome, failed = error, True
            with self._lock:
                self._free += 1
                self.calls += 1
            try:
                loop.call_soon_threadsafe(_settle, box, outcome, failed)
            except RuntimeError:  # the loop is closed: nobody awaits it
                pass
            del loop, box, context, function, args, outcome


def _settle(box: list[asyncio.Future[Any]], outcome: Any, failed: bool) -> None:
    future = box[0]
    if not future.done():
        if failed:
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class FastRoutes:
    """ASGI middleware: ordinary requests of ``ROUTES`` served here, anything else passed on."""

    def __init__(self, app: ASGIApp, routes: tuple[FastRoute, ...] = ROUTES) -> None:
        self.app = app
        self.routes = routes
        self.served = 0  # requests answered here (tests read it)
        self.served_routes: collections.Counter[str] = collections.Counter()  # by route name (tests read it)
        self.hop = Hop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        route, found = self._route(scope["path"])  # hexadecimal digits: no NUL in the path
        query = None
        if route is not None and _json(scope) and not nul_in(scope):
            query = route.read_query(scope["query_string"])
        if query is None:
            await self.app(scope, receive, send)
            return
        assert route is not None and found is not None
        body, cut = await _read(receive)
        if cut is None and await self._serve(scope, receive, send, route, found.group(1), query, body):
            return
        await self.app(scope, _replaying(body, cut, receive), send)

    def _route(self, path: str) -> tuple[FastRoute | None, re.Match[str] | None]:
        for route in self.routes:
            found = route.path.fullmatch(path)
            if found is not None:
                return route, found
        return None, None

    async def _serve(self, scope: Scope, receive: Receive, send: Send, route: FastRoute, id_: str,
                     query: dict[str, Any], body: bytes) -> bool:
        """Answer the request; False (nothing sent) when the ordinary way must answer."""
        try:
            request_body = route.body.model_validate_json(body)
        except ValueError:  # pydantic's ValidationError: FastAPI's 422 says it
            return False
        # The path's id where FastAPI's router puts it (a run's own key is checked against it); a
        # scope of its own, so nothing of it reaches the ordinary way.
        request = Request({**scope, "path_params": {route.param: id_}}, receive)
        ctx = scope["app"].state.ctx
        try:
            # FastAPI's order: the body's JSON read, the dependencies (the key), the body's model.
            await scopes.authorize_need(request, route.need)
            response = await self.hop.run(_call, route.endpoint, uuid.UUID(id_), request_body, ctx, query)
        except Exception as error:  # answered as the app's handlers answer it
            handler = _handler(scope["app"].exception_handlers, error)
            if handler is None:
                raise  # as for the ordinary way: ServerErrorMiddleware's 500, the traceback logged
            response = (await handler(request, error) if inspect.iscoroutinefunction(handler)
                        else await run_in_threadpool(handler, request, error))
        self.served += 1
        self.served_routes[route.name] += 1
        await response(scope, receive, send)
        return True


def _call(endpoint: Callable[..., Response], id_: uuid.UUID, body: BaseModel, ctx: Any,
          query: dict[str, Any]) -> Response:
    return endpoint(id_, body, ctx, **query)


def _json(scope: Scope) -> bool:
    """Whether the request says its body is JSON as clients say it (FastAPI reads a few more ways)."""
    for name, value in scope["headers"]:
        if name == b"content-type":  # the first one, as Starlette's ``headers.get``
            return value.partition(b";")[0].strip().lower() == b"application/json"
    return False


async def _read(receive: Receive) -> tuple[bytes, Message | None]:
    """The request's body, and the message that cut it (a disconnect) or None when it came whole."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), None


def _replaying(body: bytes, cut: Message | None, receive: Receive) -> Receive:
    """A ``receive`` for the ordinary way: ``body`` (what was read) in one message, then the
    message that cut it if one did, then what ``receive`` gives."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": cut is not None}]
    if cut is not None:
        pending.append(cut)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


def _handler(handlers: dict[Any, Any], error: Exception) -> Any:
    """The app's handler of ``error`` as Starlette's ``ExceptionMiddleware`` finds it (by the
    error's classes, nearest first); None for those ``ServerErrorMiddleware`` answers (500)."""
    for cls in type(error).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None
