"""Pure rendering of a base job template.

A base job template is ``{"job_configuration": {...}, "variables": <JSON schema>}``:

* a value that is exactly one ``{{ name }}`` placeholder takes the variable's typed value;
* placeholders inside longer text are interpolated as strings;
* a key whose only placeholder has no value is dropped;
* ``{{ $NAME }}`` reads ``NAME`` from the given environment (the worker's).

Values come from the variables' defaults, then the deployment's ``job_variables``, then the
run's; ``env`` dictionaries are merged key by key rather than replaced.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*(\$?[\w.\-]+)\s*\}\}")
_MISSING = object()
DEEP_MERGED_KEYS = frozenset({"env"})


def default_template(worker_type: str) -> dict[str, Any]:
    """The default base job template of a worker type (``process``, ``docker``, ``kubernetes``)."""
    try:
        text = resources.files("job_templates").joinpath(f"defaults/{worker_type}.json").read_text()
    except FileNotFoundError:
        raise KeyError(worker_type) from None
    return json.loads(text)


def variable_defaults(template: Mapping[str, Any]) -> dict[str, Any]:
    properties = template.get("variables", {}).get("properties", {})
    return {name: spec["default"] for name, spec in properties.items() if "default" in spec}


def merge_values(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; ``env`` is merged key by key."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key in DEEP_MERGED_KEYS and isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


def render(
    template: Mapping[str, Any],
    *value_layers: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Render ``template["job_configuration"]`` with the defaults and the given value layers."""
    values = merge_values(variable_defaults(template), *value_layers)
    rendered = _render_node(template.get("job_configuration", {}), values, environ or {})
    return rendered if isinstance(rendered, dict) else {}


def _lookup(name: str, values: Mapping[str, Any], environ: Mapping[str, str]) -> Any:
    if name.startswith("$"):
        return environ.get(name[1:], _MISSING)
    return values.get(name, _MISSING)


def _render_node(node: Any, values: Mapping[str, Any], environ: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, child in node.items():
            rendered = _render_node(child, values, environ)
            if rendered is not _MISSING:
                out[key] = rendered
        return out
    if isinstance(node, list):
        return [r for r in (_render_node(c, values, environ) for c in node) if r is not _MISSING]
    if isinstance(node, str):
        whole = PLACEHOLDER.fullmatch(node.strip())
        if whole:
            value = _lookup(whole.group(1), values, environ)
            return _MISSING if value is None else value
        return PLACEHOLDER.sub(lambda m: _as_text(_lookup(m.group(1), values, environ)), node)
    return node


def _as_text(value: Any) -> str:
    if value is _MISSING or value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)
