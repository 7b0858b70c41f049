"""The one place that maps errors to HTTP answers: JSON ``{"detail": ..., "code": ...}``, never a
bare 500 for bad input.

``code`` is the error class's own (``orchestrator.errors``: the client rebuilds the class from it);
the status is this module's: ``STATUS`` is the one table from class to HTTP status. Answers the web
framework makes itself get a code too: ``route_not_found`` for a path no route serves (which the
client tells apart from a resource's ``not_found``: a wrong ``ORCH_API_URL``, an older server),
``method_not_allowed``, and ``invalid_input`` for a request that fails validation.

The database's unavailability -- down, refusing connections, its connection invalidated, or this
server's connection pool spent -- answers 503 ``service_unavailable`` with ``Retry-After``: what
the client retries (``orchestrator.client.transport``), as it is over once waited out."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from orchestrator.errors import (
    METHOD_NOT_ALLOWED,
    ROUTE_NOT_FOUND,
    Conflict,
    Forbidden,
    InvalidInput,
    InvalidTransition,
    NotClaimableNow,
    NotFound,
    OrchestratorError,
    RateLimited,
    ServiceUnavailable,
    SlotUnavailable,
    Unauthorized,
    WorkerNameTaken,
)
from orchestrator.storable import NUL_IN_TEXT

log = logging.getLogger("orchestrator.api")

# Every error class a server sends (orchestrator.errors.WIRE_ERRORS) and its status. A subclass
# not listed answers with its nearest listed ancestor's status; an error with none is a bug: 500.
STATUS: dict[type[OrchestratorError], int] = {
    Unauthorized: 401,
    Forbidden: 403,
    RateLimited: 429,
    NotFound: 404,
    Conflict: 409,
    InvalidTransition: 409,
    NotClaimableNow: 409,
    SlotUnavailable: 409,
    WorkerNameTaken: 409,
    InvalidInput: 422,
    ServiceUnavailable: 503,
    OrchestratorError: 500,
}
# Codes of the answers the web framework makes itself (no route, wrong method), which no class
# stands for; any other status it makes is an ``http_error``.
FRAMEWORK_CODES = {404: ROUTE_NOT_FOUND, 405: METHOD_NOT_ALLOWED}
INVALID_INPUT = InvalidInput.code
UNAVAILABLE = ServiceUnavailable.code


def status_for(error: type[OrchestratorError]) -> int:
    return next(STATUS[cls] for cls in error.__mro__ if cls in STATUS)


def body(detail: Any, code: str) -> dict[str, Any]:
    return {"detail": detail, "code": code}


def unavailable(reason: str) -> JSONResponse:
    """The answer for a database this request could not use now, whatever the reason."""
    return JSONResponse(body(f"{reason}, retry later", UNAVAILABLE), status_code=503, headers={"Retry-After": "1"})


class _EchoSafeJSONResponse(JSONResponse):
    """JSON for an answer that echoes the client's input back: every non-ASCII character escaped
    (an unpaired surrogate, which a body's ``\\ud800`` can carry, cannot be encoded as UTF-8) and
    NaN or Infinity (which Python's JSON parser accepts) written as strings, as JSON has neither."""

    def render(self, content: Any) -> bytes:
        return json.dumps(_finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


class RefuseNul:
    """ASGI middleware: a NUL in a path or query parameter is a 422 before any route runs. The
    schemas refuse NUL in bodies and PostgreSQL cannot store it, so such a value matches nothing,
    and on PostgreSQL it would otherwise fail in the database with a less helpful reason."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and nul_in(scope):
            response = JSONResponse(body(f"{NUL_IN_TEXT} (in the path or a query parameter)", INVALID_INPUT),
                                    status_code=422)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def nul_in(scope: Any) -> bool:
    """Whether a request's path or query has a NUL (``RefuseNul`` answers it; the create-run
    route's fast way, outside it, leaves such a request to it)."""
    return "\x00" in scope["path"] or b"%00" in scope["query_string"]


def framework_answer(error: HTTPException) -> JSONResponse:
    """The JSON answer to one of the framework's own errors. Routes raise the project's errors,
    never HTTPException: a 404 here is a path no route serves, not a missing object."""
    code = FRAMEWORK_CODES.get(error.status_code, "http_error")
    return JSONResponse(body(error.detail, code), status_code=error.status_code, headers=error.headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_middleware(RefuseNul)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer (same shape), but safe for any input it echoes back.
        return _EchoSafeJSONResponse(body(jsonable_encoder(error.errors()), INVALID_INPUT), status_code=422)

    @app.exception_handler(HTTPException)
    async def framework_error(_request: Request, error: HTTPException) -> JSONResponse:
        return framework_answer(error)

    @app.exception_handler(OrchestratorError)
    async def domain_error(_request: Request, error: OrchestratorError) -> JSONResponse:
        status = status_for(type(error))
        if status == 500:
            log.error("unmapped error %s: %s", type(error).__name__, error)
        headers = {"Retry-After": str(error.retry_after)} if isinstance(error, RateLimited) else None
        return JSONResponse({**body(error.detail, error.code), **error.answer_fields()}, status_code=status,
                            headers=headers)

    @app.exception_handler(OperationalError)
    async def database_down(_request: Request, error: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", error.orig)
        return unavailable("database unavailable")

    @app.exception_handler(PoolTimeout)
    async def pool_exhausted(_request: Request, error: PoolTimeout) -> JSONResponse:
        # Every connection of the pool stayed busy for the pool's whole timeout: the server is
        # overloaded (or requests hold their connections long), which passes as a database that is
        # down does -- not a bug's 500. The reason names the pool's size and timeout (the size is
        # orchestrator.sql.POOL_SIZE, not a setting).
        reason = str(error.args[0]) if error.args else "every connection busy"
        log.warning("database connection pool exhausted: %s", reason)
        return unavailable(f"database connection pool exhausted ({reason})")

    @app.exception_handler(DataError)
    async def value_the_database_refuses(_request: Request, error: DataError) -> JSONResponse:
        # The schemas bound every number and refuse unstorable text, RefuseNul guards paths and
        # queries: this is the safety net for a value the database still refuses (the client's to
        # fix, so a 422 with the database's reason, not a 500).
        reason = str(error.orig).strip().splitlines()[0] if error.orig else "invalid value"
        return JSONResponse(body(f"invalid value: {reason}", INVALID_INPUT), status_code=422)

    @app.exception_handler(DBAPIError)
    async def database_error(_request: Request, error: DBAPIError) -> JSONResponse:
        if error.connection_invalidated:
            log.warning("database connection lost: %s", error.orig)
            return unavailable("database unavailable")
        log.exception("database error", exc_info=error)
        return JSONResponse(body("internal database error", OrchestratorError.code), status_code=500)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, _error: Exception) -> JSONResponse:
        # A bug. The server still logs its traceback (Starlette raises it again after this answer);
        # the client gets the same JSON shape as for every other error, not a text/plain 500.
        return JSONResponse(body("internal server error", OrchestratorError.code), status_code=500)
