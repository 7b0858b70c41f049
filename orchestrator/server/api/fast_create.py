"""``POST /api/deployments/{id}/runs``, the API's busiest route, served without FastAPI's per-request
machinery when the request is an ordinary one.

FastAPI serves a request through a dozen ASGI layers, builds a ``Request``, reads and ``json.loads``
the body, solves the route's dependencies one by one, validates the parsed body against the model,
and only then calls the endpoint: ~0.1 ms of the event loop's CPU a create, a tenth of the server's
(bench/RESULTS.md, issue 22). This middleware, inside the app's own (``RefuseNul``, the lazy
routes), answers a create that is what clients send -- a canonical run id in the path, a JSON body
that the model validates straight from its bytes (``model_validate_json``) -- with the route's own
authorization (``scopes.authorize_need``) and its own endpoint (``deployments.create_flow_run``, on
the thread pool as FastAPI runs it), and an error raised there answered by the app's own handlers.

Anything else goes the ordinary way, its body replayed: a body the model refuses (FastAPI's 422 is
then the one answer), another content type, a path FastAPI may read differently, a disconnect.
So every answer is the one FastAPI gives, byte for byte; the fast way only decides earlier.
"""

from __future__ import annotations

import inspect
import re
import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator import schemas
from orchestrator.server.api import scopes

_HEX = "[0-9a-fA-F]"
# The hyphenated form only: FastAPI's UUID reads others too (braces, no hyphens), which go its way.
PATH = re.compile(rf"/api/deployments/({_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}})/runs")
NEED = scopes.ROUTES["create_flow_run"]


class FastCreate:
    """ASGI middleware: ordinary creates of runs served here, anything else passed on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.served = 0  # creates answered here (tests read it)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        found = PATH.fullmatch(scope["path"])
        if found is None or not _json(scope):
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
            response = await run_in_threadpool(create_flow_run, uuid.UUID(deployment), request_body, ctx)
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
