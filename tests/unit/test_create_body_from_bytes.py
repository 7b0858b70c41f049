"""The fast way (``api/fast_routes.py``) validates a body from its bytes (``model_validate_json``)
where FastAPI does ``json.loads`` and then validates the Python value. The fast way answers only what
its reading accepts, so that reading must accept nothing FastAPI's refuses and give the same values:
checked here for the body model of each route of its table, field by field over JSON values at the
edges (types, times, non-finite and huge numbers, surrogates), so a pydantic upgrade that parts the
two is caught."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from orchestrator.server.api.fast_routes import ROUTES

VALUES = [
    "true", "false", "0", "1", "1.0", "0.5", "-0", "0.0", "1E3", '"true"', '"1"', '"yes"', '"1e3"', '"  1 "',
    '"2026-01-01"', '"2026-01-01T00:00:00Z"', '"2026-01-01T00:00:00"', '"2026-13-01"', '"0001-01-01T00:00:00Z"',
    '"9999-12-31T23:59:59+14:00"', "1700000000", "1700000000.5", "1e20", "1e400", "12345678901234567890123",
    "NaN", "Infinity", "-Infinity", '"NaN"', "null", "[]", "{}", '"x"', "[1]", '["a"]', '["a","a"]', '{"a":1}',
    '{"a":NaN}', '{"a":1e400}', '"\\u00e9"', '{"a":"\\ud83d\\ude00"}', '"\\ud83d"', '"a\\u0000"',
    '{"a":{"b":[1,2,{"c":null}]}}',
]
FIELDS = [(route.body, field) for route in ROUTES for field in route.body.model_fields]


def read(model_class: type[BaseModel], how: str, body: str) -> str | None:
    """repr of the model's dump (NaN compares by its repr), None when refused."""
    try:
        model = model_class.model_validate_json(body) if how == "bytes" else model_class.model_validate(
            json.loads(body))
    except ValueError:
        return None
    return repr(model.model_dump())


@pytest.mark.parametrize(("model_class", "field"), FIELDS, ids=[f"{m.__name__}.{f}" for m, f in FIELDS])
def test_what_the_bytes_reading_accepts_fastapis_reading_accepts_alike(model_class: type[BaseModel],
                                                                        field: str) -> None:
    # with the fields a model requires (StateCreate's type, ClaimRequest's worker_name) given
    required = {"type": '"RUNNING"', "worker_name": '"w"'}
    for value in VALUES:
        given = {name: text for name, text in required.items() if name in model_class.model_fields}
        given[field] = value
        body = "{" + ", ".join(f'"{name}": {text}' for name, text in given.items()) + "}"
        from_bytes = read(model_class, "bytes", body)
        if from_bytes is not None:
            assert from_bytes == read(model_class, "loads", body), body

