"""Server-side enforcement of a deployment's parameter schema (JSON Schema from the signature)."""

from __future__ import annotations

from typing import Any

from orchestrator.errors import InvalidInput


def validate_parameters(schema: dict[str, Any], parameters: dict[str, Any]) -> None:
    """Raise ``InvalidInput`` whose detail names each parameter that fails and why."""
    if not schema:
        return
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(parameters), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    detail = []
    for error in errors:
        path = [str(p) for p in error.absolute_path]
        if not path and error.validator == "required":
            # "'x' is a required property": name the parameter itself.
            missing = [name for name in schema.get("required", []) if name not in parameters]
            path = missing[:1]
        if not path and error.validator == "additionalProperties":
            extra = sorted(set(parameters) - set(schema.get("properties", {})))
            path = extra[:1]
        detail.append(
            {
                "loc": ["body", "parameters", *path],
                "msg": f"parameter '{'.'.join(path) or '?'}': {error.message}",
                "type": f"parameter_schema.{error.validator}",
            }
        )
    raise InvalidInput(detail)
