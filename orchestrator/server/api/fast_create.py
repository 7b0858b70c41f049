"""``POST /api/deployments/{id}/runs``, the API's busiest route, served without FastAPI's per-request
machinery when the request is an ordinary one.

FastAPI serves a request through a dozen ASGI layers, builds a ``Request``, reads and ``json.loads``
the body, solves the route's dependencies one by one, validates the parsed body against the model,
and only then calls the endpoint: ~0.1 ms of the event loop's CPU a create, a tenth of the server's
(bench/RESULTS.md, issue 22). This middleware, the outermost of the app's own (inside
Starlette's and FastAPI's: the 500 answer, telemetry, the body limit), answers a create that is what clients send -- a canonical run id in the path, a JSON body
that the model validates straight from its bytes (``model_validate_json``) -- with the route's own
authorization (``scopes.authorize_need``) and its own endpoint (``deployments.create_flow_run``, on
the thread pool as FastAPI runs it), and an error raised there answered by the app's own handlers.

Anything else goes the ordinary way, its body replayed: a body the model refuses (FastAPI's 422 is
then the one answer), another content type, a path FastAPI may read differently, a disconnect, a
NUL in the query (``RefuseNul``'s 422). The app's own layers it is outside of have nothing else to
do for what it serves: the create's path is an eager route's (no lazy family to load) and has no NUL.
So every answer is the one FastAPI gives, byte for byte; the fast way only decides earlier.

The endpoint's call goes to a thread as ``run_in_threadpool`` sends it -- one of anyio's default
limiter's tokens held meanwhile (the cap every sync route shares), the request's context copied, the
call seen through to its end even when the request is cancelled -- but on threads of its own
(``Hop``): anyio's way costs ~70 µs of CPU a call (a checkpoint, the limiter's own, a cancel scope, a
``queue.Queue``), this one ~13 (bench/RESULTS.md, issue 22). With every token taken it waits in
anyio's line.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import queue
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator import schemas
from orchestrator.server.api import scopes
from orchestrator.server.api.errors import nul_in

_HEX = "[0-9a-fA-F]"
# The hyphenated form only: FastAPI's UUID reads others too (braces, no hyphens), which go its way.
PATH = re.compile(rf"/api/deployments/({_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}})/runs")
NEED = scopes.ROUTES["create_flow_run"]
T = TypeVar("T")


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
                    threading.Thread(target=self._work_forever, name="fast-create", daemon=True).start()
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


class FastCreate:
    """ASGI middleware: ordinary creates of runs served here, anything else passed on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.served = 0  # creates answered here (tests read it)
        self.hop = Hop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        found = PATH.fullmatch(scope["path"])  # hexadecimal digits: no NUL in it
        if found is None or not _json(scope) or nul_in(scope):
            await self.app(scope, receive, send)
            return
        body, cut = await _read(receive)
        if cut is None and await self._serve(scope, receive, send, found.group(1), body):
            return
        await self.app(scope, _replaying(body, cut, receive), send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, deployment: str, body: bytes) -> bool:
        """Answer the create; False (nothing sent) when the ordinary way must answer."""
        from orchestrator.server.api.routes.deployments import create_flow_run

        try:
            request_body = schemas.FlowRunCreate.model_validate_json(body)
        except ValueError:  # pydantic's ValidationError: FastAPI's 422 says it
            return False
        request = Request(scope, receive)
        ctx = scope["app"].state.ctx
        try:
            # FastAPI's order: the body's JSON read, the dependencies (the key), the body's model.
            await scopes.authorize_need(request, NEED)
            response = await self.hop.run(create_flow_run, uuid.UUID(deployment), request_body, ctx)
        except Exception as error:  # answered as the app's handlers answer it
            handler = _handler(scope["app"].exception_handlers, error)
            if handler is None:
                raise  # as for the ordinary way: ServerErrorMiddleware's 500, the traceback logged
            response = (await handler(request, error) if inspect.iscoroutinefunction(handler)
                        else await run_in_threadpool(handler, request, error))
        self.served += 1
        await response(scope, receive, send)
        return True


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
