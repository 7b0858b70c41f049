"""A flow's parameters: the JSON schema generated from its signature, and coercion of incoming
values (``"42"`` -> ``42`` for an ``int``) in the flow-run process. Both come from one pydantic
model built from the signature, so what the server enforces is what the flow receives."""

from __future__ import annotations

import inspect
import re
import typing
import warnings
from collections.abc import Callable
from typing import Any

from orchestrator.errors import InvalidInput


def _model(fn: Callable[..., Any]) -> Any:
    from pydantic import ConfigDict, Field, create_model

    signature = inspect.signature(fn)
    descriptions = docstring_descriptions(fn)
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
        fields[f"p{index}"] = (annotation, Field(default, alias=name, title=name.replace("_", " ").title(),
                                                 description=descriptions.get(name)))
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, populate_by_name=False)
    return create_model("Parameters", __config__=config, **fields)


_GOOGLE_HEADER = re.compile(r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments):\s*$")
_GOOGLE_ITEM = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ITEM = re.compile(r"^\*{0,2}(\w+)\s*(?::.*)?$")
_REST_ITEM = re.compile(r"^:param\s+(?:[^:]*\s)?\*{0,2}(\w+)\s*:\s*(.*)$")


def docstring_descriptions(fn: Callable[..., Any]) -> dict[str, str]:
    """Parameter descriptions from ``fn``'s docstring, in Google (``Args:``), NumPy
    (``Parameters`` underlined with dashes) or reST (``:param x:``) style."""
    lines = (inspect.getdoc(fn) or "").splitlines()
    found: dict[str, str] = {}
    current: str | None = None
    item_indent: int | None = None
    style: str | None = None
    for number, line in enumerate(lines):
        stripped, indent = line.strip(), len(line) - len(line.lstrip())
        following = lines[number + 1].strip() if number + 1 < len(lines) else ""
        if _GOOGLE_HEADER.match(stripped):
            style, current, item_indent = "google", None, None
            continue
        if stripped in ("Parameters", "Other Parameters") and following and set(following) == {"-"}:
            style, current, item_indent = "numpy", None, None
            continue
        if style == "numpy" and set(stripped) == {"-"}:
            continue
        rest = _REST_ITEM.match(stripped)
        if rest:
            style, current, item_indent = "rest", rest.group(1), indent
            found[current] = rest.group(2).strip()
            continue
        if not stripped:
            if style == "google":
                current = None  # items stop at a blank line only when the next line is no item
            continue
        if style in ("google", "numpy") and (item_indent is None or indent == item_indent):
            if style == "numpy" and following and set(following) == {"-"}:
                style = current = None  # the next section begins
                continue
            item = (_GOOGLE_ITEM if style == "google" else _NUMPY_ITEM).match(stripped)
            if item:
                item_indent, current = indent, item.group(1)
                found[current] = item.group(2).strip() if style == "google" else ""
                continue
            style = current = None
            continue
        if current is not None and item_indent is not None and indent > item_indent:
            found[current] = f"{found[current]} {stripped}".strip()
        elif style == "google" and item_indent is not None and indent < item_indent:
            style = current = None
        elif style == "rest":
            current = None
    return {name: text for name, text in found.items() if text}


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
