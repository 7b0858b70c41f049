"""One exception hierarchy for the whole project.

Each class carries a stable machine-readable ``code``: the API sends it with every error body
(``{"detail": ..., "code": ...}``) and the client rebuilds the same class from it, so SDK, CLI,
worker and flow-run callers catch exactly the type the server raised (an ``InvalidTransition``
stays one, rather than becoming any ``Conflict``). Domain errors know no HTTP status: the API maps
classes to statuses in one place (``orchestrator.server.api.errors``).
"""

from __future__ import annotations

from typing import ClassVar


class OrchestratorError(Exception):
    """Base of every error this project raises on purpose."""

    code: ClassVar[str] = "internal_error"

    def __init__(self, detail: object) -> None:
        super().__init__(detail if isinstance(detail, str) else str(detail))
        self.detail = detail

    def answer_fields(self) -> dict[str, object]:
        """What the API's error body carries besides ``detail`` and ``code`` (none by default)."""
        return {}

    @classmethod
    def from_answer(cls, detail: object, answer: dict[str, object]) -> OrchestratorError:
        """The error an answer's body stands for (the client's side of ``answer_fields``)."""
        return cls(detail)


class NotFound(OrchestratorError):
    code = "not_found"


class Conflict(OrchestratorError):
    code = "conflict"


class InvalidInput(OrchestratorError):
    code = "invalid_input"


class Unauthorized(OrchestratorError):
    code = "unauthorized"


class ServiceUnavailable(OrchestratorError):
    code = "service_unavailable"


class Forbidden(OrchestratorError):
    """The API key is valid but lacks the scope (or the pool, or the run) the route needs; the
    detail names what is needed."""

    code = "forbidden"


class RateLimited(OrchestratorError):
    """Too many failed authentications from this address: wait ``retry_after`` seconds."""

    code = "rate_limited"

    def __init__(self, detail: object, retry_after: int = 60) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class WorkerNameTaken(Conflict):
    """A worker name of a pool is held by another worker process, which is ONLINE: a worker starting
    under it is refused, and so is a running worker that lost it (cut off from the API while the
    name went OFFLINE and was taken). ``silent_seconds``: how long ago the holder last beat (its
    connection dropping counts as a heartbeat window ago, minus a short grace);
    ``free_in_seconds``: when the name is free if the holder stays silent."""

    code = "worker_name_taken"

    def __init__(self, detail: object, *, silent_seconds: float = 0.0, free_in_seconds: float = 0.0) -> None:
        super().__init__(detail)
        self.silent_seconds = silent_seconds
        self.free_in_seconds = free_in_seconds

    def answer_fields(self) -> dict[str, object]:
        return {"silent_seconds": round(self.silent_seconds, 3), "free_in_seconds": round(self.free_in_seconds, 3)}

    @classmethod
    def from_answer(cls, detail: object, answer: dict[str, object]) -> OrchestratorError:
        def number(key: str) -> float:
            value = answer.get(key)
            return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0

        return cls(detail, silent_seconds=number("silent_seconds"), free_in_seconds=number("free_in_seconds"))


class InvalidTransition(Conflict):
    """The run is not in a state from which the requested state may be entered."""

    code = "invalid_transition"


class NotClaimableNow(Conflict):
    """The run cannot start now (paused pool or queue, no free slot): it stays SCHEDULED and the
    dispatcher publishes it again when that changes."""

    code = "not_claimable_now"


class SlotUnavailable(NotClaimableNow):
    """A concurrency limit is reached; the run stays SCHEDULED until a slot frees."""

    code = "slot_unavailable"


class ServerUnreachable(OrchestratorError):
    """The client could not connect to the API at all (raised by the client, never sent)."""

    code = "server_unreachable"


class NotTheApi(OrchestratorError):
    """Something answers at the API URL, but it is not the API (or not this route of it): a
    setting to fix, not an outage to wait out. Raised by the client, never sent."""

    code = "not_the_api"


class DeploymentError(OrchestratorError):
    """A flow cannot be deployed as asked (e.g. defined in a REPL)."""

    code = "deployment_error"


class MissingContextError(OrchestratorError, RuntimeError):
    """Something that needs a flow or task run (``get_run_logger``) was called outside one, as
    Prefect's error of the same name says. Raised in the caller's process, never sent."""

    code = "missing_context"


# Codes of answers the web framework makes itself, which no class stands for. A path no route
# serves is ``route_not_found``, not a resource's ``not_found``: the client raises ``NotTheApi``
# (a wrong ORCH_API_URL, an older server) rather than "work pool 'x' not found".
ROUTE_NOT_FOUND = "route_not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"

# Every class a server may send, by its code: the explicit registry the client rebuilds errors from.
# A class defined elsewhere (a worker's, a pull step's) stays on its side and is never sent.
WIRE_ERRORS: dict[str, type[OrchestratorError]] = {
    cls.code: cls
    for cls in (OrchestratorError, NotFound, Conflict, InvalidInput, Unauthorized, ServiceUnavailable,
                InvalidTransition, NotClaimableNow, SlotUnavailable, Forbidden, RateLimited, WorkerNameTaken)
}


def error_for_code(code: object) -> type[OrchestratorError] | None:
    """The class a server meant by ``code``; None for a code this client does not know (a newer
    server's), so the caller falls back on the HTTP status."""
    return WIRE_ERRORS.get(code) if isinstance(code, str) else None
