"""Server-side enforcement of a deployment's parameter schema (JSON Schema from the signature)."""

from __future__ import annotations

from typing import Any

from orchestrator.errors import InvalidInput
from orchestrator.server.services import jsonschemas


def check_schema(schema: dict[str, Any]) -> None:
    """A deployment's parameter schema must itself be a valid JSON Schema (2020-12, regular
    expressions included): a 422 naming the problem now, not a 500 when a run is checked against it."""
    if not schema:
        return
    try:
        jsonschemas.check_schema(schema)
    except jsonschemas.SchemaProblem as problem:
        raise _invalid_schema(problem) from None


def validate_parameters(schema: dict[str, Any], parameters: dict[str, Any]) -> None:
    """Raise ``InvalidInput`` whose detail names each parameter that fails and why."""
    if not schema:
        return
    try:
        errors = sorted(jsonschemas.errors(schema, parameters), key=lambda e: list(e.absolute_path))
    except jsonschemas.SchemaProblem as problem:
        raise _invalid_schema(problem) from None
    if not errors:
        return
    detail: list[dict[str, Any]] = []
    named: set[str] = set()  # jsonschema reports "required" once per missing name: one entry each
    for error in errors:
        path = [str(p) for p in error.absolute_path]
        message = error.message
        if not path and error.validator == "required":
            # One error per missing parameter, each naming it.
            missing = [n for n in schema.get("required", []) if n not in parameters and n not in named]
            named.update(missing)
            detail += [_problem([name], "is required", "required") for name in missing]
            continue
        if not path and error.validator == "additionalProperties":
            extra = sorted(set(parameters) - set(schema.get("properties", {})) - named)
            named.update(extra)
            detail += [_problem([name], "is not a parameter of this flow", "additionalProperties") for name in extra]
            continue
        detail.append(_problem(path, message, str(error.validator)))
    raise InvalidInput(detail)


def _invalid_schema(problem: jsonschemas.SchemaProblem) -> InvalidInput:
    return InvalidInput([{"loc": ["body", "parameter_openapi_schema"], "type": "parameter_schema.invalid",
                          "msg": f"the deployment's parameter_openapi_schema is not usable: {problem}"}])


def _problem(path: list[str], message: str, kind: str) -> dict[str, Any]:
    return {
        "loc": ["body", "parameters", *path],
        "msg": f"parameter '{'.'.join(path) or '?'}': {message}",
        "type": f"parameter_schema.{kind}",
    }
