"""The JSON Schemas users give the API (a deployment's parameter schema, a pool's job variables):
checked as Draft 2020-12, and used without ever fetching anything. jsonschema would otherwise
retrieve a ``$ref`` to a URL itself, letting any client make the server request an address of its
choosing; here such a reference is simply unresolvable, a problem the caller reports as a 422.

A plain schema, or a plainly valid value, is answered without jsonschema (``plain_schemas.py``): an
idle server that has only met those never imports it (~3.7 MB)."""

from __future__ import annotations

from typing import Any

from orchestrator.server.services import plain_schemas


class SchemaProblem(ValueError):
    """The schema is not valid JSON Schema, or names a ``$ref`` it does not contain."""


def check_schema(schema: dict[str, Any]) -> None:
    """Raise ``SchemaProblem`` unless ``schema`` is valid Draft 2020-12 (its regular expressions
    too) and each of its ``$ref``s points to a part of it."""
    refs, ids = _keywords(schema)
    if not refs and plain_schemas.well_formed(schema):
        return
    import jsonschema
    from referencing import Registry
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        where = "/".join(str(p) for p in error.absolute_path)
        raise SchemaProblem(f"{error.message}" + (f" (at {where})" if where else "")) from None
    if ids:  # an $id moves the base of the references below it: left to validation time
        return
    resolver = Registry().with_resource("", DRAFT202012.create_resource(schema)).resolver(base_uri="")
    for ref in refs:
        try:
            resolver.lookup(ref)
        except Unresolvable:
            raise SchemaProblem(_unresolvable(ref)) from None


def errors(schema: dict[str, Any], instance: Any) -> list[Any]:
    """Every way ``instance`` fails ``schema`` (``jsonschema.ValidationError``s); ``SchemaProblem``
    if the schema refers to something it does not contain."""
    if plain_schemas.accepts(schema, instance):
        return []
    import jsonschema
    from referencing import Registry
    from referencing.exceptions import Unresolvable

    try:
        return list(jsonschema.Draft202012Validator(schema, registry=Registry()).iter_errors(instance))
    except Unresolvable as error:
        raise SchemaProblem(_unresolvable(getattr(error, "ref", "?"))) from None


def _unresolvable(ref: str) -> str:
    return f"$ref '{ref}' does not point to a part of the schema (a schema may only refer to its own parts)"


def _keywords(node: Any) -> tuple[list[str], bool]:
    """Every ``$ref`` string in the schema, and whether it has an ``$id`` anywhere."""
    refs: list[str] = []
    has_id = False
    todo = [node]
    while todo:
        current = todo.pop()
        if isinstance(current, dict):
            if isinstance(current.get("$ref"), str):
                refs.append(current["$ref"])
            has_id = has_id or "$id" in current
            todo.extend(current.values())
        elif isinstance(current, list):
            todo.extend(current)
    return refs, has_id
