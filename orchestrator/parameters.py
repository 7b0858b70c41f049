"""A flow's parameters: the JSON schema generated from its signature, and coercion of incoming
values (``"42"`` -> ``42`` for an ``int``) in the flow-run process. Both come from one pydantic
model built from the signature, so what the server enforces is what the flow receives."""

from __future__ import annotations

import inspect
import typing
import warnings
from collections.abc import Callable
from typing import Any

from orchestrator.errors import InvalidInput


def _model(fn: Callable[..., Any]) -> Any:
    from pydantic import ConfigDict, Field, create_model

    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to Any for those
        hints = {}
    fields: dict[str, Any] = {}
    for index, (name, parameter) in enumerate(signature.parameters.items()):
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        annotation = hints.get(name, Any)
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        # Internal field names avoid clashes with BaseModel attributes ("json", "copy", ...).
        fields[f"p{index}"] = (annotation, Field(default, alias=name, title=name.replace("_", " ").title()))
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, populate_by_name=False)
    return create_model("Parameters", __config__=config, **fields)


def parameter_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """The OpenAPI/JSON schema of ``fn``'s parameters (defaults, annotations, Optional, enums, models)."""
    model = _model(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # defaults that are not JSON are left out of the schema
        schema: dict[str, Any] = model.model_json_schema(by_alias=True)
    schema["title"] = "Parameters"
    return schema


def coerce_parameters(fn: Callable[..., Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """Validate and convert ``parameters`` for a call of ``fn``; raise ``InvalidInput`` naming the
    parameter that fails."""
    from pydantic import ValidationError

    model = _model(fn)
    try:
        instance = model.model_validate(parameters)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = ".".join(str(p) for p in item["loc"]) or "?"
            problems.append(f"parameter '{where}': {item['msg']}")
        raise InvalidInput("; ".join(problems)) from None
    aliases = {name: field.alias for name, field in model.model_fields.items()}
    return {aliases[name]: getattr(instance, name) for name in model.model_fields}
