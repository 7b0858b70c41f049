"""Every signature Prefect accepts gives a usable schema and coerced values: a table of
signatures, each with the schema it must produce, what a run sends (JSON, checked by the
server-side validator against that schema), and the Python value the flow must receive."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

from orchestrator.errors import InvalidInput
from orchestrator.parameters import call_arguments, coerce_parameters, parameter_schema
from orchestrator.server.services.parameters import check_schema, validate_parameters

received: dict[str, Any] = {}


def record(**values: Any) -> None:
    received.clear()
    received.update(values)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(BaseModel):
    x: int
    y: int = 0


class Engine:
    """An arbitrary class: pydantic can neither describe it nor build it from JSON."""

    def __init__(self, url: str) -> None:
        self.url = url


def field_default(x: int = Field(default=3, description="how many"), y: str = Field("a", max_length=2)) -> None:
    record(x=x, y=y)


def annotated(x: Annotated[int, Field(ge=1, description="from Annotated")] = 2, y: Annotated[str, "meta"] = "s") -> None:
    """Args:
        x: from the docstring, which Annotated outranks
        y: from the docstring
    """
    record(x=x, y=y)


def arbitrary(engine: Engine, n: int = 1) -> None:
    record(engine=engine, n=n)


def unresolvable(a: NoSuchType, b: int = 1) -> None:  # type: ignore[name-defined] # noqa: F821
    record(a=a, b=b)


def variadic(a: int, *args: int, **kwargs: float) -> None:
    record(a=a, args=args, kwargs=kwargs)


def untyped_kwargs(**kwargs) -> None:  # noqa: ANN003
    record(kwargs=kwargs)


def enums_and_literals(color: Color = Color.RED, mode: Literal["fast", "slow"] = "fast") -> None:
    record(color=color, mode=mode)


def model(point: Point, points: list[Point] | None = None) -> None:
    record(point=point, points=points)


def times_and_ids(when: dt.datetime, day: dt.date, key: uuid.UUID, where: Path, wait: dt.timedelta) -> None:
    record(when=when, day=day, key=key, where=where, wait=wait)


def unions(x: int | str | None = None, y: float | None = 1.0) -> None:
    record(x=x, y=y)


def keyword_only(a: int, *, k: int = 1, flag: bool = False) -> None:
    record(a=a, k=k, flag=flag)


def positional_only(p: int, /, q: int = 0) -> None:
    record(p=p, q=q)


def numpy_doc(a: int, b: str = "x") -> None:
    """Do things.

    Parameters
    ----------
    a : int
        The first one,
        on two lines.
    b : str
        The second one.

    Returns
    -------
    None
    """
    record(a=a, b=b)


def rest_doc(a: int, b: str = "x") -> None:
    """Do things.

    :param a: the first one
    :param str b: the second one
    :returns: nothing
    """
    record(a=a, b=b)


def google_doc(a: int, b: str = "x") -> None:
    """Do things.

    Args:
        a (int): the first one
        b: the second one,
            continued

    Returns:
        Nothing.
    """
    record(a=a, b=b)


def prop(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """A property with its ``$ref`` (or single-item ``allOf`` of one) resolved."""
    found = dict(schema["properties"][name])
    ref = found.pop("$ref", None) or (found.pop("allOf")[0]["$ref"] if "allOf" in found else None)
    if ref:
        found.update(schema["$defs"][ref.rsplit("/", 1)[-1]])
    return found


UUID = "6f1b2c3d-0000-4000-8000-000000000001"
ROWS: list[tuple[Callable[..., Any], Callable[[dict[str, Any]], bool], dict[str, Any], dict[str, Any]]] = [
    (field_default,
     lambda s: prop(s, "x") == {"type": "integer", "default": 3, "description": "how many", "title": "X"}
     and prop(s, "y")["maxLength"] == 2 and "required" not in s,
     {}, {"x": 3, "y": "a"}),
    (field_default, lambda s: True, {"x": 7, "y": "bb"}, {"x": 7, "y": "bb"}),
    (annotated,
     lambda s: prop(s, "x")["description"] == "from Annotated" and prop(s, "x")["minimum"] == 1
     and prop(s, "y")["description"] == "from the docstring" and prop(s, "y")["type"] == "string",
     {"x": 5}, {"x": 5, "y": "s"}),
    (arbitrary,
     lambda s: prop(s, "engine") == {"title": "Engine"} and s["required"] == ["engine"]
     and prop(s, "n")["type"] == "integer",
     {"engine": {"url": "db://"}, "n": 2}, {"engine": {"url": "db://"}, "n": 2}),
    (unresolvable,
     lambda s: prop(s, "a") == {"title": "A"} and prop(s, "b") == {"type": "integer", "default": 1, "title": "B"},
     {"a": [1, "x"], "b": 4}, {"a": [1, "x"], "b": 4}),
    (variadic,
     lambda s: list(s["properties"]) == ["a", "args", "kwargs"] and s["required"] == ["a"]
     and prop(s, "args")["items"] == {"type": "integer"} and prop(s, "kwargs")["additionalProperties"] == {"type": "number"}
     and s["additionalProperties"] == {"type": "number"},
     {"a": 1, "args": [2, 3], "ratio": 0.5, "kwargs": {"given": 2}},
     {"a": 1, "args": (2, 3), "kwargs": {"ratio": 0.5, "given": 2.0}}),
    (untyped_kwargs, lambda s: s["additionalProperties"] is True and "required" not in s,
     {"anything": {"nested": [1]}, "more": None}, {"kwargs": {"anything": {"nested": [1]}, "more": None}}),
    (enums_and_literals,
     lambda s: prop(s, "color")["enum"] == ["red", "blue"] and prop(s, "color")["default"] == "red"
     and prop(s, "mode")["enum"] == ["fast", "slow"],
     {"color": "blue", "mode": "slow"}, {"color": Color.BLUE, "mode": "slow"}),
    (model,
     lambda s: set(prop(s, "point")["properties"]) == {"x", "y"} and s["required"] == ["point"],
     {"point": {"x": 1}, "points": [{"x": 2, "y": 3}]}, {"point": Point(x=1), "points": [Point(x=2, y=3)]}),
    (times_and_ids,
     lambda s: prop(s, "when")["format"] == "date-time" and prop(s, "day")["format"] == "date"
     and prop(s, "key")["format"] == "uuid" and prop(s, "where")["format"] == "path"
     and prop(s, "wait")["format"] == "duration",
     {"when": "2030-01-01T09:00:00Z", "day": "2030-01-02", "key": UUID, "where": "/srv/data", "wait": "PT90S"},
     {"when": dt.datetime(2030, 1, 1, 9, tzinfo=dt.UTC), "day": dt.date(2030, 1, 2), "key": uuid.UUID(UUID),
      "where": Path("/srv/data"), "wait": dt.timedelta(seconds=90)}),
    (unions,
     lambda s: {"type": "null"} in prop(s, "x")["anyOf"] and prop(s, "y")["default"] == 1.0,
     {"x": 5, "y": None}, {"x": 5, "y": None}),
    (unions, lambda s: True, {"x": "five"}, {"x": "five", "y": 1.0}),
    (keyword_only, lambda s: list(s["properties"]) == ["a", "k", "flag"] and s["required"] == ["a"],
     {"a": 1, "k": 4, "flag": True}, {"a": 1, "k": 4, "flag": True}),
    (positional_only, lambda s: list(s["properties"]) == ["p", "q"] and s["required"] == ["p"],
     {"p": 3}, {"p": 3, "q": 0}),
    (numpy_doc,
     lambda s: prop(s, "a")["description"] == "The first one, on two lines."
     and prop(s, "b")["description"] == "The second one.",
     {"a": 1}, {"a": 1, "b": "x"}),
    (rest_doc,
     lambda s: prop(s, "a")["description"] == "the first one" and prop(s, "b")["description"] == "the second one",
     {"a": 1}, {"a": 1, "b": "x"}),
    (google_doc,
     lambda s: prop(s, "a")["description"] == "the first one" and prop(s, "b")["description"] == "the second one, continued",
     {"a": 1}, {"a": 1, "b": "x"}),
]


@pytest.mark.parametrize(("fn", "schema_ok", "sent", "expected"), ROWS,
                         ids=[f"{row[0].__name__}-{index}" for index, row in enumerate(ROWS)])
def test_signature_gives_a_usable_schema_and_the_flow_the_right_values(
        fn: Callable[..., Any], schema_ok: Callable[[dict[str, Any]], bool], sent: dict[str, Any],
        expected: dict[str, Any]) -> None:
    schema = parameter_schema(fn)
    jsonschema.Draft202012Validator.check_schema(schema)
    check_schema(schema)  # what the server checks when the deployment is registered
    assert schema_ok(schema), schema
    validate_parameters(schema, sent)  # the API accepts the run
    args, kwargs = call_arguments(fn, coerce_parameters(fn, sent))
    fn(*args, **kwargs)
    assert received == expected
    for name, value in expected.items():  # the right Python types, not only equal values
        assert type(received[name]) is type(value), (name, received[name])


def test_an_arbitrary_class_gets_an_open_schema_but_the_rest_stay_typed() -> None:
    with pytest.raises(InvalidInput, match="parameter 'n'"):
        coerce_parameters(arbitrary, {"engine": "anything", "n": "many"})


@pytest.mark.parametrize(("fn", "sent", "field"), [
    (field_default, {"x": 1, "y": "too long"}, "y"),  # Field(max_length=2)
    (annotated, {"x": 0}, "x"),  # Annotated[int, Field(ge=1)]
    (variadic, {"a": 1, "ratio": "high"}, "ratio"),  # **kwargs: float
    (positional_only, {"p": "three"}, "p"),
    (enums_and_literals, {"mode": "medium"}, "mode"),
    (keyword_only, {"a": 1, "nope": 1}, "nope"),  # no **kwargs: unknown names refused
])
def test_bad_values_are_refused_by_the_server_and_the_flow_run_naming_the_parameter(
        fn: Callable[..., Any], sent: dict[str, Any], field: str) -> None:
    schema = parameter_schema(fn)
    with pytest.raises(InvalidInput) as by_server:
        validate_parameters(schema, sent)
    assert any(field in str(item["loc"]) for item in by_server.value.detail), by_server.value.detail
    with pytest.raises(InvalidInput, match=f"parameter '{field}"):
        coerce_parameters(fn, sent)


def test_unvalidated_parameters_still_reach_var_kwargs() -> None:
    """A flow with ``validate_parameters=False`` gets the run's parameters as sent: names its
    signature lacks still go to ``**kwargs``."""
    args, kwargs = call_arguments(variadic, {"a": "1", "args": ["2"], "extra": "x", "kwargs": {"inside": 1}})
    assert (args, kwargs) == (["1", "2"], {"extra": "x", "inside": 1})
