"""``plain_schemas`` answers "valid" only where jsonschema does: held to jsonschema's own answers over
generated schemas and values (valid and not, with keywords it does not know mixed in), and shown
to answer for what a server checks most (bundled pool templates, their defaults, flows' parameters)."""

from __future__ import annotations

import random
from typing import Any

import jsonschema
import pytest
from referencing import Registry

from job_templates.render import checkable, default_template, variable_defaults
from orchestrator.parameters import parameter_schema
from orchestrator.server.services import jsonschemas
from orchestrator.server.services.plain_schemas import accepts, well_formed

KINDS = ("process", "docker", "kubernetes")
LISTED = ["title", "description", "default", "examples", "$comment", "type", "properties", "additionalProperties",
          "items", "anyOf", "required", "enum", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
          "exclusiveMaximum"]
OTHERS = ["$ref", "$id", "$schema", "$defs", "pattern", "patternProperties", "minProperties", "oneOf", "not", "const",
          "format", "prefixItems", "unevaluatedProperties", "multipleOf", "uniqueItems", "allOf", "x-custom"]
NAMES = ["a", "b", "env", "n"]
TYPES = ["array", "boolean", "integer", "null", "number", "object", "string"]


def answer(ask: Any) -> Any:
    """jsonschema's answer, or the name of what it raised (an answer too: "not plainly valid")."""
    try:
        return ask()
    except BaseException as error:  # rpds may panic (a BaseException) on a self-referring schema
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise
        return type(error).__name__


def jsonschema_errors(schema: Any, instance: Any) -> list[Any] | str:
    """jsonschema's own answer, as ``jsonschemas.errors`` asks it."""
    return answer(lambda: list(jsonschema.Draft202012Validator(schema, registry=Registry()).iter_errors(instance)))


def schema_is_valid(schema: Any) -> bool:
    return answer(lambda: jsonschema.Draft202012Validator.check_schema(schema)) is None


def value(rnd: random.Random, depth: int) -> Any:
    choice = rnd.randrange(10 if depth > 0 else 7)
    if choice == 0:
        return None
    if choice == 1:
        return rnd.choice([True, False])
    if choice == 2:
        return rnd.choice([0, 1, -3, 7, 2**70])
    if choice == 3:
        return rnd.choice([0.0, 1.5, -2.25, 3.0])
    if choice in (4, 5, 6):
        return rnd.choice(["", "x", "IfNotPresent", "hello", "a", "env"])
    if choice in (7, 8):
        return {rnd.choice(NAMES): value(rnd, depth - 1) for _ in range(rnd.randrange(4))}
    return [value(rnd, depth - 1) for _ in range(rnd.randrange(3))]


def keyword_value(rnd: random.Random, keyword: str, depth: int) -> Any:
    if rnd.random() < 0.15:  # any value at all, often the wrong kind for the keyword
        return value(rnd, 2)
    sub = (lambda: schema(rnd, depth - 1)) if depth > 0 else (lambda: rnd.choice([True, False, {}]))
    match keyword:
        case "type":
            return rnd.choice([*TYPES, "object", "string", "foo", ["string", "null"], [], ["string", "string"]])
        case "properties" | "patternProperties" | "$defs":
            return {rnd.choice(NAMES): sub() for _ in range(rnd.randrange(4))}
        case "additionalProperties" | "items" | "not":
            return sub()
        case "anyOf" | "oneOf" | "allOf" | "prefixItems":
            return [sub() for _ in range(rnd.randrange(4))]
        case "required":
            return rnd.sample(NAMES, rnd.randrange(3)) + (["a"] if rnd.random() < 0.1 else [])
        case "enum":
            return [value(rnd, 1) for _ in range(rnd.randrange(4))]
        case "minLength" | "maxLength" | "minProperties":
            return rnd.choice([0, 1, 2, 5, -1, 1.0, True])
        case "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" | "multipleOf":
            return rnd.choice([0, 1, -1, 2.5, 100, True, "3"])
        case "$ref":
            return rnd.choice(["#", "#/properties/a", "#/nope", "#/$defs/a", "http://example.com/s"])
        case "$id":
            return rnd.choice(["http://example.com/s", "urn:x", 5])
        case "$schema":
            return rnd.choice(["http://json-schema.org/draft-07/schema#", "https://json-schema.org/draft/2020-12/schema"])
        case "pattern":
            return rnd.choice(["^a", "(", "x+"])
        case "format":
            return rnd.choice(["email", "date-time", 3])
        case "title" | "description" | "$comment":
            return rnd.choice(["T", "", 3, None])
        case "default" | "const":
            return value(rnd, 2)
        case "examples":
            return rnd.choice([[], [1], "x"])
        case _:
            return value(rnd, 1)


def schema(rnd: random.Random, depth: int) -> Any:
    if rnd.random() < 0.08:
        return rnd.choice([True, False])
    keys = rnd.sample(LISTED, rnd.randrange(5))
    if rnd.random() < 0.25:
        keys.append(rnd.choice(OTHERS))
    return {key: keyword_value(rnd, key, depth) for key in keys}


def instance_for(rnd: random.Random, node: Any) -> Any:
    """A value shaped like what the schema describes more often than not (so that "valid" is met)."""
    if rnd.random() < 0.3 or not isinstance(node, dict):
        return value(rnd, 2)
    kind = node.get("type")
    if kind == "object" or isinstance(node.get("properties"), dict):
        properties = node.get("properties") if isinstance(node.get("properties"), dict) else {}
        return {name: instance_for(rnd, sub) for name, sub in properties.items() if rnd.random() < 0.6}
    if kind == "array":
        return [instance_for(rnd, node.get("items")) for _ in range(rnd.randrange(3))]
    if isinstance(node.get("enum"), list) and node["enum"] and rnd.random() < 0.7:
        return rnd.choice(node["enum"])
    if isinstance(node.get("anyOf"), list) and node["anyOf"]:
        return instance_for(rnd, rnd.choice(node["anyOf"]))
    typical = {"string": "x", "boolean": True, "integer": 3, "number": 2.5, "null": None}
    return typical[kind] if isinstance(kind, str) and kind in typical else value(rnd, 1)


def test_plainly_valid_only_where_jsonschema_says_valid() -> None:
    rnd = random.Random(20261206)
    accepted = formed = 0
    for _ in range(6000):
        node = schema(rnd, 3)
        if well_formed(node):
            formed += 1
            assert schema_is_valid(node), node
        for _ in range(3):
            instance = instance_for(rnd, node)
            if accepts(node, instance):
                accepted += 1
                assert jsonschema_errors(node, instance) == [], (node, instance)
    # Not vacuous: a good share of the cases is answered without jsonschema.
    assert formed > 600 and accepted > 3000, (formed, accepted)


@pytest.mark.parametrize(("node", "instance"), [
    ({"anyOf": [{"$ref": "#/nope"}, {"type": "string"}]}, "x"),  # jsonschema reaches the $ref first: it raises
    ({"anyOf": [{"pattern": "("}, {"type": "string"}]}, "x"),  # a bad regular expression, evaluated first
    ({"anyOf": [{"type": "foo"}, {"type": "string"}]}, "x"),  # an unknown type, evaluated first
    ({"type": "integer"}, 3.0),  # an integer to jsonschema: left to it
    ({"type": ["string", "null"]}, None),
    ({"properties": {"a": {"$ref": "#/nope"}}}, {"a": 1}),
    ({"type": "object", "minProperties": 1}, {}),
    ({"required": ["a"]}, {}),
    ({"additionalProperties": False, "properties": {}}, {"a": 1}),
    ({"enum": [1, 2]}, 1),  # only strings are compared here
    ({"type": "object"}, ("not", "json")),
])
def test_what_is_left_to_jsonschema(node: dict[str, Any], instance: Any) -> None:
    assert not accepts(node, instance)


@pytest.mark.parametrize("node", [
    {"type": "object", "default": {"$ref": "#/nope"}},  # jsonschemas.check_schema resolves it: refused
    {"type": "strin"}, {"required": ["a", "a"]}, {"minLength": 1.0}, {"$defs": {}}, {"pattern": "^a"},
])
def test_schemas_left_to_jsonschema(node: dict[str, Any]) -> None:
    if "default" in node:
        assert well_formed(node)  # the meta-schema's side is plain; the $ref found in it is not
        with pytest.raises(jsonschemas.SchemaProblem):
            jsonschemas.check_schema(node)
    else:
        assert not well_formed(node)


@pytest.mark.parametrize("kind", KINDS)
def test_bundled_templates_and_their_defaults_are_answered_plainly(kind: str) -> None:
    template = default_template(kind)
    variables = template["variables"]
    assert well_formed(variables) and schema_is_valid(variables)
    given = checkable(variable_defaults(template))
    assert accepts(variables, given) and jsonschema_errors(variables, given) == []
    assert accepts({**variables, "required": []}, {})  # a deployment giving no job variables


def no_parameters() -> None: ...


def simple(count: int = 1, name: str = "x", ratio: float = 0.5, flag: bool = False, tags: list[str] | None = None,
           seconds: float = 600.0) -> None: ...


def required_one(path: str, retries: int = 3) -> None: ...


@pytest.mark.parametrize(("fn", "given"), [
    (no_parameters, {}), (simple, {}), (simple, {"count": 3, "name": "y", "ratio": 2, "flag": True, "tags": ["a"]}),
    (simple, {"tags": None}), (required_one, {"path": "/data"}),
])
def test_flow_parameter_schemas_are_answered_plainly(fn: Any, given: dict[str, Any]) -> None:
    node = parameter_schema(fn)
    assert well_formed(node) and schema_is_valid(node)
    assert accepts(node, given) and jsonschema_errors(node, given) == []


@pytest.mark.parametrize(("fn", "given"), [
    (no_parameters, {"x": 1}), (simple, {"count": "many"}), (simple, {"count": True}), (required_one, {}),
    (simple, {"tags": [1]}),
])
def test_invalid_parameters_are_left_to_jsonschema(fn: Any, given: dict[str, Any]) -> None:
    node = parameter_schema(fn)
    assert not accepts(node, given)
    assert jsonschemas.errors(node, given) != []
