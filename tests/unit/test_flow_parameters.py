"""``orchestrator.parameters`` (schema + coercion from a signature) and the server-side check
``orchestrator.server.services.parameters.validate_parameters`` run against the generated schemas."""

from __future__ import annotations

import enum
from typing import Any, Optional

import jsonschema
import pytest
from pydantic import BaseModel

from orchestrator.errors import InvalidInput
from orchestrator.parameters import coerce_parameters, parameter_schema
from orchestrator.server.services.parameters import validate_parameters


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(BaseModel):
    x: int
    y: int = 0


def simple(count: int, label: str = "hello", ratio: float = 0.5) -> None: ...


def optional_int(limit: Optional[int] = None) -> None: ...  # noqa: UP045 - Optional is the point


def pipe_optional(limit: int | None = None) -> None: ...


def with_enum(color: Color = Color.RED) -> None: ...


def with_list(ids: list[int]) -> None: ...


def with_dict(weights: dict[str, float]) -> None: ...


def with_model(point: Point) -> None: ...


def clashing(json: str, copy: int = 1, schema: str = "s", model_config: str = "m") -> None: ...


def with_var_kwargs(a: int, *args: Any, **kwargs: Any) -> None: ...


def unannotated(a, b=3): ...  # noqa: ANN001, ANN201


# --- parameter_schema ---------------------------------------------------------------------------


def test_schema_is_a_valid_json_schema() -> None:
    for fn in (simple, optional_int, with_enum, with_list, with_dict, with_model, clashing, with_var_kwargs):
        jsonschema.Draft202012Validator.check_schema(parameter_schema(fn))


def test_schema_shape_names_defaults_and_required() -> None:
    schema = parameter_schema(simple)

    assert schema["type"] == "object"
    assert schema["title"] == "Parameters"
    assert list(schema["properties"]) == ["count", "label", "ratio"]
    assert schema["required"] == ["count"]
    assert schema["properties"]["count"]["type"] == "integer"
    assert "default" not in schema["properties"]["count"]
    assert schema["properties"]["label"] == {"type": "string", "default": "hello", "title": "Label"}
    assert schema["properties"]["ratio"]["default"] == 0.5
    assert schema["properties"]["ratio"]["type"] == "number"


def test_schema_rejects_unknown_parameters() -> None:
    assert parameter_schema(simple)["additionalProperties"] is False


@pytest.mark.parametrize("fn", [optional_int, pipe_optional])
def test_schema_optional_int_accepts_integer_and_null(fn: Any) -> None:
    schema = parameter_schema(fn)
    prop = schema["properties"]["limit"]

    assert prop["default"] is None
    assert {"type": "integer"} in prop["anyOf"]
    assert {"type": "null"} in prop["anyOf"]
    assert "required" not in schema or "limit" not in schema["required"]


def test_schema_enum_lists_its_values() -> None:
    schema = parameter_schema(with_enum)
    prop = schema["properties"]["color"]
    target = schema["$defs"][prop["$ref"].rsplit("/", 1)[-1]] if "$ref" in prop else prop

    assert target["enum"] == ["red", "blue"]
    assert prop["default"] == "red"


def test_schema_list_and_dict_item_types() -> None:
    assert parameter_schema(with_list)["properties"]["ids"]["items"] == {"type": "integer"}
    assert parameter_schema(with_list)["properties"]["ids"]["type"] == "array"
    weights = parameter_schema(with_dict)["properties"]["weights"]
    assert weights["type"] == "object"
    assert weights["additionalProperties"] == {"type": "number"}


def test_schema_model_parameter_references_the_model() -> None:
    schema = parameter_schema(with_model)
    ref = schema["properties"]["point"]["$ref"]
    model = schema["$defs"][ref.rsplit("/", 1)[-1]]

    assert set(model["properties"]) == {"x", "y"}
    assert model["required"] == ["x"]
    assert schema["required"] == ["point"]


def test_schema_uses_the_real_names_of_clashing_parameters() -> None:
    schema = parameter_schema(clashing)

    assert list(schema["properties"]) == ["json", "copy", "schema", "model_config"]
    assert schema["required"] == ["json"]
    assert schema["properties"]["copy"]["default"] == 1


def test_schema_lists_var_args_and_var_kwargs_as_prefect_does() -> None:
    schema = parameter_schema(with_var_kwargs)

    assert list(schema["properties"]) == ["a", "args", "kwargs"]
    assert schema["required"] == ["a"]
    assert schema["properties"]["args"]["type"] == "array"
    assert schema["properties"]["kwargs"]["type"] == "object"
    assert schema["additionalProperties"] is True  # a **kwargs flow takes other parameters


def test_schema_of_unannotated_parameters_accepts_anything() -> None:
    schema = parameter_schema(unannotated)

    assert schema["required"] == ["a"]
    assert "type" not in schema["properties"]["a"]
    assert schema["properties"]["b"]["default"] == 3


def test_schema_leaves_out_defaults_that_are_not_json() -> None:
    sentinel = object()

    def fn(x: Any = sentinel) -> None: ...

    schema = parameter_schema(fn)

    assert "default" not in schema["properties"]["x"]
    assert "x" not in schema.get("required", [])


# --- coerce_parameters --------------------------------------------------------------------------


def test_coerce_fills_defaults() -> None:
    assert coerce_parameters(simple, {"count": 1}) == {"count": 1, "label": "hello", "ratio": 0.5}


def test_coerce_converts_numeric_strings_for_int() -> None:
    result = coerce_parameters(simple, {"count": "42", "ratio": "1.25"})

    assert result["count"] == 42 and type(result["count"]) is int
    assert result["ratio"] == 1.25


@pytest.mark.parametrize("value, expected", [(None, None), ("7", 7), (3, 3)])
def test_coerce_optional_int(value: Any, expected: Any) -> None:
    assert coerce_parameters(optional_int, {"limit": value}) == {"limit": expected}


def test_coerce_optional_int_defaults_to_none() -> None:
    assert coerce_parameters(optional_int, {}) == {"limit": None}


def test_coerce_enum_from_value() -> None:
    assert coerce_parameters(with_enum, {"color": "blue"}) == {"color": Color.BLUE}
    assert coerce_parameters(with_enum, {}) == {"color": Color.RED}


def test_coerce_list_of_int() -> None:
    assert coerce_parameters(with_list, {"ids": ["1", 2, "3"]}) == {"ids": [1, 2, 3]}


def test_coerce_dict_of_float() -> None:
    assert coerce_parameters(with_dict, {"weights": {"a": "1.5", "b": 2}}) == {"weights": {"a": 1.5, "b": 2.0}}


def test_coerce_builds_the_model() -> None:
    result = coerce_parameters(with_model, {"point": {"x": "3"}})

    assert result == {"point": Point(x=3, y=0)}
    assert isinstance(result["point"], Point)


def test_coerce_parameters_named_like_basemodel_attributes() -> None:
    result = coerce_parameters(clashing, {"json": "j", "copy": "2", "schema": "s2", "model_config": "m2"})

    assert result == {"json": "j", "copy": 2, "schema": "s2", "model_config": "m2"}


def test_coerce_result_can_call_the_function() -> None:
    calls: list[dict[str, Any]] = []

    def fn(json: str, copy: int = 1, items: list[int] | None = None) -> None:
        calls.append({"json": json, "copy": copy, "items": items})

    fn(**coerce_parameters(fn, {"json": "x", "items": ["4"]}))

    assert calls == [{"json": "x", "copy": 1, "items": [4]}]


def test_coerce_gives_var_kwargs_the_parameters_the_signature_does_not_name() -> None:
    assert coerce_parameters(with_var_kwargs, {"a": "1"}) == {"a": 1, "args": [], "kwargs": {}}
    assert coerce_parameters(with_var_kwargs, {"a": 1, "extra_key": 2}) == {"a": 1, "args": [],
                                                                             "kwargs": {"extra_key": 2}}
    with pytest.raises(InvalidInput, match="extra_key"):
        coerce_parameters(simple, {"count": 1, "extra_key": 2})  # without **kwargs: refused


@pytest.mark.parametrize(
    "fn, params, name",
    [
        (simple, {"count": "not a number"}, "count"),
        (simple, {"count": 1, "ratio": "abc"}, "ratio"),
        (with_enum, {"color": "green"}, "color"),
        (with_list, {"ids": [1, "x"]}, "ids"),
        (with_dict, {"weights": {"a": "heavy"}}, "weights"),
        (with_model, {"point": {"y": 1}}, "point"),
        (clashing, {"json": "j", "copy": "many"}, "copy"),
    ],
)
def test_coerce_error_names_the_bad_parameter(fn: Any, params: dict[str, Any], name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        coerce_parameters(fn, params)

    assert f"'{name}" in str(caught.value)


def test_coerce_error_does_not_blame_good_parameters() -> None:
    with pytest.raises(InvalidInput) as caught:
        coerce_parameters(simple, {"count": "x", "label": "fine"})

    assert "count" in str(caught.value)
    assert "label" not in str(caught.value)


def test_coerce_missing_required_parameter_is_named() -> None:
    with pytest.raises(InvalidInput, match="'count'"):
        coerce_parameters(simple, {"label": "x"})


def test_coerce_unknown_parameter_is_rejected_and_named() -> None:
    with pytest.raises(InvalidInput, match="'surprise'"):
        coerce_parameters(simple, {"count": 1, "surprise": True})


def test_coerce_does_not_accept_internal_field_names() -> None:
    # The model's fields are named p0, p1, ... internally; callers must use the real names.
    with pytest.raises(InvalidInput):
        coerce_parameters(simple, {"p0": 1})


# --- validate_parameters against generated schemas ----------------------------------------------


def detail_of(schema: dict[str, Any], params: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(InvalidInput) as caught:
        validate_parameters(schema, params)
    detail = caught.value.detail
    assert isinstance(detail, list) and detail
    assert all(isinstance(item, dict) for item in detail)
    return detail


@pytest.mark.parametrize(
    "fn, params",
    [
        (simple, {"count": 3}),
        (simple, {"count": 3, "label": "x", "ratio": 1}),
        (optional_int, {"limit": None}),
        (optional_int, {}),
        (with_enum, {"color": "blue"}),
        (with_list, {"ids": [1, 2]}),
        (with_dict, {"weights": {"a": 1.5}}),
        (with_model, {"point": {"x": 1, "y": 2}}),
        (clashing, {"json": "j", "copy": 2}),
        (with_var_kwargs, {"a": 1}),
    ],
)
def test_validate_accepts_good_parameters(fn: Any, params: dict[str, Any]) -> None:
    assert validate_parameters(parameter_schema(fn), params) is None


def test_validate_with_empty_schema_accepts_anything() -> None:
    assert validate_parameters({}, {"anything": object()}) is None


@pytest.mark.parametrize(
    "fn, params, name",
    [
        (simple, {"count": "three"}, "count"),
        (simple, {"count": 1, "ratio": "x"}, "ratio"),
        (optional_int, {"limit": "x"}, "limit"),
        (with_enum, {"color": "green"}, "color"),
        (with_list, {"ids": "1,2"}, "ids"),
        (with_dict, {"weights": ["a"]}, "weights"),
        (with_model, {"point": 5}, "point"),
        (clashing, {"json": 1}, "json"),
    ],
)
def test_validate_rejects_a_bad_value_naming_it(fn: Any, params: dict[str, Any], name: str) -> None:
    detail = detail_of(parameter_schema(fn), params)

    assert len(detail) == 1
    assert detail[0]["loc"][-1] == name
    assert detail[0]["loc"][:2] == ["body", "parameters"]
    assert f"'{name}'" in detail[0]["msg"]


def test_validate_nested_error_loc_starts_with_the_parameter() -> None:
    detail = detail_of(parameter_schema(with_list), {"ids": [1, "two"]})

    assert detail[0]["loc"] == ["body", "parameters", "ids", "1"]
    assert "ids" in detail[0]["msg"]


def test_validate_missing_required_parameter_is_named() -> None:
    detail = detail_of(parameter_schema(simple), {"label": "x"})

    assert [item["loc"][-1] for item in detail] == ["count"]
    assert "'count'" in detail[0]["msg"]
    assert detail[0]["type"] == "parameter_schema.required"


def test_validate_extra_parameter_is_named() -> None:
    detail = detail_of(parameter_schema(simple), {"count": 1, "unexpected": 2})

    assert detail[0]["loc"][-1] == "unexpected"
    assert "'unexpected'" in detail[0]["msg"]
    assert detail[0]["type"] == "parameter_schema.additionalProperties"


def test_validate_reports_every_bad_parameter() -> None:
    def fn(a: int, b: int) -> None: ...

    detail = detail_of(parameter_schema(fn), {"a": "x", "b": "y"})

    assert sorted(item["loc"][-1] for item in detail) == ["a", "b"]


def test_validate_each_missing_required_parameter_is_named_once() -> None:
    def fn(a: int, b: int) -> None: ...

    detail = detail_of(parameter_schema(fn), {})

    assert sorted(item["loc"][-1] for item in detail) == ["a", "b"]


def test_a_flow_without_parameters_is_called_without_building_a_model_for_them() -> None:
    import gc

    def bare() -> None: ...

    class Holder:
        def method(self) -> None: ...

    gc.disable()  # a model built and dropped stays among the subclasses until collected
    try:
        before = len(BaseModel.__subclasses__())
        assert coerce_parameters(bare, {}) == {}
        assert coerce_parameters(Holder.method, {}) == {}
        assert len(BaseModel.__subclasses__()) == before
    finally:
        gc.enable()
    with pytest.raises(InvalidInput, match="x"):  # values it does not take: refused as before
        coerce_parameters(bare, {"x": 1})
