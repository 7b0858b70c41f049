"""Pure rendering of a base job template.

A base job template is ``{"job_configuration": {...}, "variables": <JSON schema>}``:

* a value that is exactly one ``{{ name }}`` placeholder takes the variable's typed value;
* placeholders inside longer text are interpolated as strings;
* a key whose only placeholder has no value is dropped;
* ``{{ $NAME }}`` reads ``NAME`` from the given environment (the worker's);
* ``{{ image.name }}`` looks inside a dict variable (``image``), as in Prefect.

Values come from the variables' defaults, then the deployment's ``job_variables``, then the
run's; ``env`` dictionaries are merged key by key rather than replaced, and ``null`` for one of
their keys unsets it. A dotted key (``env.FOO: x``) sets one key inside a dict variable. A
template whose ``env`` is a literal dict (not a placeholder) has the ``env`` variable merged into
it: template < defaults < deployment < run.
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
    """Later layers win; ``env`` is merged key by key (a ``None`` in it stays, to unset that key
    when rendered); a dotted key sets one key inside a dict variable, after the layer's plain keys."""
    merged: dict[str, Any] = {}
    for layer in layers:
        dotted = [(key, value) for key, value in layer.items() if "." in key]
        for key, value in layer.items():
            if "." in key:
                continue
            if key in DEEP_MERGED_KEYS and isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        for key, value in dotted:
            _set_path(merged, key.split("."), value)
    return merged


def _set_path(values: dict[str, Any], path: list[str], value: Any) -> None:
    node = values
    for part in path[:-1]:
        child = node.get(part)
        node[part] = child = dict(child) if isinstance(child, Mapping) else {}  # a copy: layers stay as given
        node = child
    node[path[-1]] = value


def checkable(values: Mapping[str, Any]) -> dict[str, Any]:
    """What a pool's ``variables`` schema is checked against: dotted keys expanded, and the
    ``None`` values that unset something (a variable, a key of ``env``) left out."""
    out: dict[str, Any] = {}
    for key, value in merge_values(values).items():
        if value is None:
            continue
        out[key] = _without_nulls(value) if key in DEEP_MERGED_KEYS and isinstance(value, Mapping) else value
    return out


def _without_nulls(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if value is not None}


def render(
    template: Mapping[str, Any],
    *value_layers: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Render ``template["job_configuration"]`` with the defaults and the given value layers."""
    values = merge_values(variable_defaults(template), *value_layers)
    env = values.get("env")
    if isinstance(env, Mapping):
        values["env"] = _without_nulls(env)
    configuration = template.get("job_configuration", {})
    rendered = _render_node(configuration, values, environ or {})
    if not isinstance(rendered, dict):
        return {}
    if isinstance(configuration, Mapping) and isinstance(configuration.get("env"), Mapping):
        # A literal env in the template is the lowest layer under the env variable (as in Prefect);
        # a null in the variable unsets a key the template sets.
        literal = rendered.get("env") if isinstance(rendered.get("env"), dict) else {}
        rendered["env"] = _without_nulls({**literal, **(env if isinstance(env, Mapping) else {})})
    return rendered


def _lookup(name: str, values: Mapping[str, Any], environ: Mapping[str, str]) -> Any:
    if name.startswith("$"):
        return environ.get(name[1:], _MISSING)
    if name in values or "." not in name:
        return values.get(name, _MISSING)
    found: Any = values
    for part in name.split("."):  # image.name: inside the dict variable image (a list by index)
        if isinstance(found, Mapping) and part in found:
            found = found[part]
        elif isinstance(found, list) and part.isdigit() and int(part) < len(found):
            found = found[int(part)]
        else:
            return _MISSING
    return found


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
