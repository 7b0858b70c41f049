"""The error registry and the client's reading of error answers, without a server: codes are unique
and each names its class, the API's status table covers every class a server sends, and an answer
without a code (an older server, a proxy) is still understood by its status."""

from __future__ import annotations

import json

import pytest

from orchestrator.client.transport import error_from_answer
from orchestrator.errors import (
    WIRE_ERRORS,
    Conflict,
    InvalidInput,
    InvalidTransition,
    NotFound,
    OrchestratorError,
    ServerUnreachable,
    ServiceUnavailable,
    Unauthorized,
)
from orchestrator.server.api.errors import STATUS, status_for


def test_every_wire_class_has_its_own_code_and_a_status() -> None:
    assert all(cls.code == code for code, cls in WIRE_ERRORS.items())
    assert set(STATUS) == set(WIRE_ERRORS.values())
    assert status_for(InvalidTransition) == status_for(Conflict) == 409
    assert status_for(ServerUnreachable) == 500  # a client-side error raised by a route is a bug


@pytest.mark.parametrize("cls", sorted(WIRE_ERRORS.values(), key=lambda c: c.code), ids=lambda c: c.code)
def test_an_answer_without_a_code_is_still_caught_where_its_class_is(cls: type[OrchestratorError]) -> None:
    """What an older server sends for each class (its status only) becomes an ancestor of it, so
    ``except Conflict`` still catches what was an InvalidTransition."""
    error = error_from_answer(status_for(cls), json.dumps({"detail": "why"}).encode())
    assert error is not None and isinstance(error, OrchestratorError) and error.detail == "why"
    assert issubclass(cls, type(error))


@pytest.mark.parametrize(("status", "answer", "expected"), [
    (409, {"detail": "x", "code": "invalid_transition"}, InvalidTransition),
    (409, {"detail": "x", "code": "a_newer_servers_code"}, Conflict),  # unknown code: by status
    (404, {"detail": "work pool 'x' not found"}, NotFound),
    (401, {"detail": "x"}, Unauthorized),
    (422, {"detail": [{"loc": ["body", "name"]}]}, InvalidInput),
    (503, {"detail": "x", "code": "service_unavailable"}, ServiceUnavailable),
    (405, {"detail": "Method Not Allowed", "code": "method_not_allowed"}, OrchestratorError),
    (502, "<html>bad gateway</html>", OrchestratorError),
])
def test_the_class_an_answer_stands_for(status: int, answer: object, expected: type[OrchestratorError]) -> None:
    data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
    error = error_from_answer(status, data)
    assert type(error) is expected


@pytest.mark.parametrize("data", [
    b'{"detail": "Not Found", "code": "route_not_found"}',  # this API: no such route
    b'{"detail": "Not Found"}',  # a server of before codes, or another FastAPI app
    b"<html>404</html>",  # not an API at all
    b"[]",
])
def test_a_route_miss_is_told_apart_from_a_missing_object(data: bytes) -> None:
    assert error_from_answer(404, data) is None  # the client raises NotTheApi, with the reason


def test_a_worker_name_refusal_carries_its_holders_silence_across_the_wire() -> None:
    """``orch worker start`` decides from these whether to wait for the name or fail at once."""
    from orchestrator.errors import WorkerNameTaken

    sent = WorkerNameTaken("worker name 'w' is in use", silent_seconds=27.5, free_in_seconds=2.5)
    answer = {"detail": sent.detail, "code": sent.code, **sent.answer_fields()}
    got = error_from_answer(409, json.dumps(answer).encode())
    assert isinstance(got, WorkerNameTaken)
    assert (got.detail, got.silent_seconds, got.free_in_seconds) == ("worker name 'w' is in use", 27.5, 2.5)
    odd = error_from_answer(409, json.dumps({"detail": "x", "code": "worker_name_taken", "silent_seconds": "?"}).encode())
    assert isinstance(odd, WorkerNameTaken) and (odd.silent_seconds, odd.free_in_seconds) == (0.0, 0.0)
