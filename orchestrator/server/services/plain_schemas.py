"""The answers jsonschema would give about plain schemas, without importing it (issue 22).

jsonschema and its stack (referencing, rpds, attrs) are ~3.7 MB of a server's memory and ~24 ms of
CPU, loaded by the first check. Most checks a server makes are of plain schemas: a pool on a
bundled template, a flow's parameters of simple types, nothing or the defaults given. Both
functions below answer ``True`` only where that is jsonschema's own answer (Draft 2020-12, as
``jsonschemas.py`` uses it) and ``False`` for "ask jsonschema": every invalid value or schema, every
keyword not listed here, and anything unsure, goes to jsonschema, so its errors (and the 422s made
of them) are the ones given before. ``tests/unit/test_plain_schemas.py`` holds them to jsonschema's
answers over generated schemas and values.

Each listed keyword is read as jsonschema's own implementation reads it (``jsonschema/_keywords.py``):
a keyword about objects passes any value that is not one, ``properties`` descends only into the
names present, ``anyOf`` stops at its first passing branch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Keywords that only annotate (Draft 2020-12's meta-data vocabulary, and ``$comment``): no check.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment"})
_SIMPLE_TYPES = frozenset({"array", "boolean", "integer", "null", "number", "object", "string"})


def well_formed(schema: Any) -> bool:
    """True if ``schema`` is surely valid Draft 2020-12: made only of the keywords below (nested
    schemas too), each with a value of the kind the meta-schema asks for. It says nothing of
    ``$ref``s (``jsonschemas.check_schema`` also resolves every ``$ref`` string found anywhere)."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict):
        return False
    for keyword, value in schema.items():
        formed = _FORMED.get(keyword)
        if formed is None or not formed(value):
            return False
    return True


def accepts(schema: Any, instance: Any) -> bool:
    """True if jsonschema finds no error in ``instance`` against ``schema`` (and raises nothing:
    every part of the schema it would evaluate is made of the keywords below)."""
    if schema is True:
        return True
    if not isinstance(schema, dict) or _kind(instance) is None:
        return False
    for keyword, value in schema.items():
        if keyword in _ANNOTATIONS:
            continue
        check = _CHECKS.get(keyword)
        if check is None or not check(value, instance, schema):
            return False
    return True


def _kind(value: Any) -> str | None:
    """The JSON kind of a value as decoded from JSON (None: anything else, which is not judged)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _non_negative_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _unique_strings(value: Any, allowed: frozenset[str] | None = None) -> bool:
    return (isinstance(value, list) and all(isinstance(v, str) and (allowed is None or v in allowed) for v in value)
            and len(set(value)) == len(value))


def _type_formed(value: Any) -> bool:
    if isinstance(value, str):
        return value in _SIMPLE_TYPES
    return _unique_strings(value, _SIMPLE_TYPES) and len(value) > 0


_FORMED: dict[str, Callable[[Any], bool]] = {
    "title": lambda v: isinstance(v, str),
    "description": lambda v: isinstance(v, str),
    "$comment": lambda v: isinstance(v, str),
    "default": lambda v: True,
    "examples": lambda v: isinstance(v, list),
    "type": _type_formed,
    "properties": lambda v: isinstance(v, dict) and all(isinstance(k, str) and well_formed(s) for k, s in v.items()),
    "additionalProperties": well_formed,
    "items": well_formed,
    "anyOf": lambda v: isinstance(v, list) and len(v) > 0 and all(well_formed(s) for s in v),
    "required": _unique_strings,
    "enum": lambda v: isinstance(v, list),
    "minLength": _non_negative_integer,
    "maxLength": _non_negative_integer,
    "minimum": _number,
    "maximum": _number,
    "exclusiveMinimum": _number,
    "exclusiveMaximum": _number,
}


def _type(value: Any, instance: Any, schema: dict[str, Any]) -> bool:
    kind = _kind(instance)
    return isinstance(value, str) and (value == kind or (value == "number" and kind == "integer"))


def _properties(value: Any, instance: Any, schema: dict[str, Any]) -> bool:
    if not isinstance(value, dict):
        return False
    if not isinstance(instance, dict):
        return True
    return all(accepts(sub, instance[name]) for name, sub in value.items() if name in instance)


def _additional_properties(value: Any, instance: Any, schema: dict[str, Any]) -> bool:
    if not isinstance(instance, dict):
        return True
    declared = schema.get("properties", {})
    if not isinstance(declared, dict):
        return False
    extras = [name for name in instance if name not in declared]
    if isinstance(value, dict):
        return all(accepts(value, instance[name]) for name in extras)
    return value is True or not extras


def _required(value: Any, instance: Any, schema: dict[str, Any]) -> bool:
    if not isinstance(value, list):
        return False
    return not isinstance(instance, dict) or all(isinstance(name, str) and name in instance for name in value)


def _items(value: Any, instance: Any, schema: dict[str, Any]) -> bool:
    if not isinstance(instance, list):
        return True
    if value is True or isinstance(value, dict):
        return all(accepts(value, item) for item in instance)
    return not instance


def _any_of(value: Any, instance: Any, schema: dict[str, Any]) -> bool:
    """jsonschema tries the branches in order up to the first that passes: the ones before the
    passing one must be ones it evaluates without raising (well formed, no ``$ref``)."""
    if not isinstance(value, list):
        return False
    for branch in value:
        if accepts(branch, instance):
            return True
        if not well_formed(branch):
            return False
    return False


def _enum(value: Any, instance: Any, schema: dict[str, Any]) -> bool:
    # jsonschema compares a string with ``==`` (``_utils.equal``); other kinds are left to it.
    return isinstance(value, list) and isinstance(instance, str) and any(
        isinstance(member, str) and member == instance for member in value)


def _bound(holds: Callable[[Any, Any], bool]) -> Callable[[Any, Any, dict[str, Any]], bool]:
    def check(value: Any, instance: Any, schema: dict[str, Any]) -> bool:
        return _number(value) and (not _number(instance) or holds(instance, value))
    return check


def _length(holds: Callable[[int, int], bool]) -> Callable[[Any, Any, dict[str, Any]], bool]:
    def check(value: Any, instance: Any, schema: dict[str, Any]) -> bool:
        return _non_negative_integer(value) and (not isinstance(instance, str) or holds(len(instance), value))
    return check


_CHECKS: dict[str, Callable[[Any, Any, dict[str, Any]], bool]] = {
    "type": _type,
    "properties": _properties,
    "additionalProperties": _additional_properties,
    "required": _required,
    "items": _items,
    "anyOf": _any_of,
    "enum": _enum,
    "minimum": _bound(lambda i, v: i >= v),
    "maximum": _bound(lambda i, v: i <= v),
    "exclusiveMinimum": _bound(lambda i, v: i > v),
    "exclusiveMaximum": _bound(lambda i, v: i < v),
    "minLength": _length(lambda n, v: n >= v),
    "maxLength": _length(lambda n, v: n <= v),
}
