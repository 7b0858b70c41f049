"""One exception hierarchy for the whole project.

The API maps these to HTTP status codes in one place (``orchestrator.api.errors``); the client maps
HTTP answers back to them, so SDK and CLI callers catch the same types the server raises.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base of every error this project raises on purpose."""

    status_code = 500

    def __init__(self, detail: object) -> None:
        super().__init__(detail if isinstance(detail, str) else str(detail))
        self.detail = detail


class NotFound(OrchestratorError):
    status_code = 404


class Conflict(OrchestratorError):
    status_code = 409


class InvalidInput(OrchestratorError):
    status_code = 422


class Unauthorized(OrchestratorError):
    status_code = 401


class ServiceUnavailable(OrchestratorError):
    status_code = 503


class InvalidTransition(Conflict):
    """The run is not in a state from which the requested state may be entered."""


class ServerUnreachable(OrchestratorError):
    """The client could not connect to the API at all."""

    status_code = 0


class DeploymentError(OrchestratorError):
    """A flow cannot be deployed as asked (e.g. defined in a REPL)."""

    status_code = 0


_BY_STATUS: dict[int, type[OrchestratorError]] = {
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    422: InvalidInput,
    503: ServiceUnavailable,
}


def error_for_status(status: int, detail: object) -> OrchestratorError:
    return _BY_STATUS.get(status, OrchestratorError)(detail)
