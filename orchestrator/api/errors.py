"""The one place that maps errors to HTTP answers: JSON ``{"detail": ...}``, never a bare 500
for bad input."""

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

from orchestrator.errors import OrchestratorError
from orchestrator.storable import NUL_IN_TEXT

log = logging.getLogger("orchestrator.api")


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
        if scope["type"] == "http" and ("\x00" in scope["path"] or b"%00" in scope["query_string"]):
            response = JSONResponse({"detail": f"{NUL_IN_TEXT} (in the path or a query parameter)"}, status_code=422)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_middleware(RefuseNul)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer (same shape), but safe for any input it echoes back.
        return _EchoSafeJSONResponse({"detail": jsonable_encoder(error.errors())}, status_code=422)

    @app.exception_handler(OrchestratorError)
    async def domain_error(_request: Request, error: OrchestratorError) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status_code)

    @app.exception_handler(OperationalError)
    async def database_down(_request: Request, error: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", error.orig)
        return JSONResponse(
            {"detail": "database unavailable, retry later"}, status_code=503, headers={"Retry-After": "1"}
        )

    @app.exception_handler(DataError)
    async def value_the_database_refuses(_request: Request, error: DataError) -> JSONResponse:
        # The schemas bound every number and refuse unstorable text, RefuseNul guards paths and
        # queries: this is the safety net for a value the database still refuses (the client's to
        # fix, so a 422 with the database's reason, not a 500).
        reason = str(error.orig).strip().splitlines()[0] if error.orig else "invalid value"
        return JSONResponse({"detail": f"invalid value: {reason}"}, status_code=422)

    @app.exception_handler(DBAPIError)
    async def database_error(_request: Request, error: DBAPIError) -> JSONResponse:
        if error.connection_invalidated:
            return JSONResponse({"detail": "database unavailable, retry later"}, status_code=503)
        log.exception("database error", exc_info=error)
        return JSONResponse({"detail": "internal database error"}, status_code=500)
