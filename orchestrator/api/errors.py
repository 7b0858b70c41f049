"""The one place that maps errors to HTTP answers: JSON ``{"detail": ...}``, never a bare 500
for bad input."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError

from orchestrator.errors import OrchestratorError

log = logging.getLogger("orchestrator.api")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OrchestratorError)
    async def domain_error(_request: Request, error: OrchestratorError) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status_code)

    @app.exception_handler(OperationalError)
    async def database_down(_request: Request, error: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", error.orig)
        return JSONResponse(
            {"detail": "database unavailable, retry later"}, status_code=503, headers={"Retry-After": "1"}
        )

    @app.exception_handler(DBAPIError)
    async def database_error(_request: Request, error: DBAPIError) -> JSONResponse:
        if error.connection_invalidated:
            return JSONResponse({"detail": "database unavailable, retry later"}, status_code=503)
        log.exception("database error", exc_info=error)
        return JSONResponse({"detail": "internal database error"}, status_code=500)
