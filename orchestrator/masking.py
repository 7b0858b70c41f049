"""Secret job variables: the one place that decides what is secret and hides it.

A pool's base job template marks a variable secret in its ``variables`` JSON schema with
``"secret": true`` (or ``"format": "password"``, the hint Prefect and JSON-schema form tools use).
A mark may sit at any depth the schema describes: on a property (``"token": {"secret": true}``),
on a property of an object variable (``env.properties.DB_PASSWORD``) or on all of an object's
other keys (``env.additionalProperties``), directly or in a definition a local ``$ref`` points at.

The values are stored in clear (the worker needs them), and only the claim hands them out. Every
other way out (API answers, events, deployment history, the UI, the flow-run hand-off, worker log
lines) goes through ``mask_values`` / ``mask_template`` and shows ``MASK`` instead; a value sent
back as ``MASK`` (a form showing the masked value, saved unchanged) keeps the stored one
(``keep_masked``). Standard library only: the server, the UI and the workers all import it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "********"


def is_secret(spec: object) -> bool:
    """Whether one schema node marks its value secret."""
    return isinstance(spec, Mapping) and (spec.get("secret") is True or spec.get("format") == "password")


def _resolved(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """``node`` with its local ``$ref`` (``#/$defs/X``, ``#/definitions/X``: what schemas generated
    from models use) replaced by what it points at, the node's own keywords kept beside it. Resolved
    when reached, so a recursive definition is followed as deep as the values go."""
    for _ in range(32):  # a chain of references to references ends; a loop of them does not
        ref = node.get("$ref")
        if not (isinstance(ref, str) and ref.startswith("#/")):
            return node
        target: Any = root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, Mapping) else None
        if not isinstance(target, Mapping):
            return node
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _child(spec: object, key: str, root: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The schema of ``key`` inside an object schema: its property, else ``additionalProperties``."""
    if not isinstance(spec, Mapping):
        return None
    found = (spec.get("properties") or {}).get(key)
    if not isinstance(found, Mapping):
        found = spec.get("additionalProperties")
    return _resolved(found, root) if isinstance(found, Mapping) else None


def _at(schema: Mapping[str, Any], key: str, root: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, bool]:
    """The schema a (possibly dotted, ``env.TOKEN``) job-variable key reaches, and whether a node
    on the way marks it secret."""
    node: Mapping[str, Any] | None = _resolved(schema, root)
    for part in key.split("."):
        node = _child(node, part, root)
        if node is None:
            return None, False
        if is_secret(node):
            return node, True
    return node, False


def is_secret_key(schema: Mapping[str, Any] | None, key: str) -> bool:
    """Whether a (dotted) job-variable key reaches a secret value in ``schema``."""
    return bool(schema) and _at(schema, key, schema)[1]  # type: ignore[arg-type]


def has_secrets(schema: object) -> bool:
    """Whether any node of a variables schema is marked secret (nothing to mask otherwise)."""
    if is_secret(schema):
        return True
    if isinstance(schema, Mapping):
        return any(has_secrets(v) for v in schema.values())
    if isinstance(schema, list):
        return any(has_secrets(v) for v in schema)
    return False


def mask_values(schema: Mapping[str, Any] | None, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (job variables) with every secret one replaced by ``MASK``. ``None`` (which
    unsets a variable) is not a secret and stays."""
    if not values or not schema or not has_secrets(schema):
        return dict(values)
    return _mask(schema, values, schema)


def _mask(schema: Mapping[str, Any], values: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        node, secret = _at(schema, str(key), root)
        if secret and value is not None:
            out[key] = MASK
        elif node is not None and isinstance(value, Mapping):
            out[key] = _mask(node, value, root)
        else:
            out[key] = value
    return out


def mask_template(template: Mapping[str, Any]) -> dict[str, Any]:
    """A base job template with the ``default`` of every secret variable replaced by ``MASK``."""
    masked = copy.deepcopy(dict(template))
    variables = masked.get("variables")
    if isinstance(variables, dict) and has_secrets(variables):
        _mask_defaults(variables)
    return masked


def _mask_defaults(node: object, secret: bool = False) -> None:
    if isinstance(node, list):
        for child in node:
            _mask_defaults(child, secret)
        return
    if not isinstance(node, dict):
        return
    secret = secret or is_secret(node)
    if "default" in node:
        node["default"] = _masked_default(node, node["default"], secret)
    for key in ("properties", "patternProperties", "$defs", "definitions"):
        children = node.get(key)
        if isinstance(children, dict):
            for child in children.values():
                _mask_defaults(child, secret)
    for key in ("additionalProperties", "items", "anyOf", "oneOf", "allOf"):
        _mask_defaults(node.get(key), secret)


def _masked_default(node: Mapping[str, Any], default: Any, secret: bool) -> Any:
    if secret:
        return None if default is None else MASK
    return mask_values(node, default) if isinstance(default, Mapping) else default


def keep_masked(schema: Mapping[str, Any] | None, new: Mapping[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
    """``new`` values where a secret one still reads ``MASK`` takes the stored ``old`` value (a
    form that showed the masked value and was saved unchanged must not overwrite the secret); a
    ``MASK`` with nothing stored behind it is dropped."""
    if not schema or not has_secrets(schema):
        return dict(new)
    return _keep(schema, new, old, schema)


def _keep(schema: Mapping[str, Any], new: Mapping[str, Any], old: Mapping[str, Any],
          root: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in new.items():
        node, secret = _at(schema, str(key), root)
        stored = old.get(key) if isinstance(old, Mapping) else None
        if secret and value == MASK:
            if stored is not None:
                out[key] = stored
        elif node is not None and isinstance(value, Mapping):
            out[key] = _keep(node, value, stored if isinstance(stored, Mapping) else {}, root)
        else:
            out[key] = value
    return out


def keep_masked_template(new: Mapping[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
    """A base job template sent back with masked defaults keeps the stored defaults there."""
    out = copy.deepcopy(dict(new))
    variables, before = out.get("variables"), old.get("variables")
    if isinstance(variables, dict) and isinstance(before, Mapping):
        _keep_defaults(variables, before)
    return out


def _keep_defaults(node: dict[str, Any], before: Mapping[str, Any]) -> None:
    if node.get("default") == MASK and "default" in before:
        node["default"] = before["default"]
    elif isinstance(node.get("default"), dict) and isinstance(before.get("default"), Mapping):
        node["default"] = keep_masked(node, node["default"], before["default"])
    for key in ("properties",):
        children, old_children = node.get(key), before.get(key)
        if isinstance(children, dict) and isinstance(old_children, Mapping):
            for name, child in children.items():
                if isinstance(child, dict) and isinstance(old_children.get(name), Mapping):
                    _keep_defaults(child, old_children[name])


def secret_texts(schema: Mapping[str, Any] | None, *layers: Mapping[str, Any]) -> set[str]:
    """The clear texts of every secret value in the given job-variable layers (and the schema's
    secret defaults): what a worker scrubs from the lines it writes."""
    found: set[str] = set()
    if not schema or not has_secrets(schema):
        return found
    _collect_defaults(schema, False, found)
    for layer in layers:
        _collect(schema, layer, found, schema)
    return found


def _collect(schema: Mapping[str, Any], values: Mapping[str, Any], found: set[str], root: Mapping[str, Any]) -> None:
    for key, value in values.items():
        node, secret = _at(schema, str(key), root)
        if secret:
            found.update(_texts(value))
        elif node is not None and isinstance(value, Mapping):
            _collect(node, value, found, root)


def _collect_defaults(node: object, secret: bool, found: set[str]) -> None:
    if isinstance(node, Mapping):
        secret = secret or is_secret(node)
        if secret and "default" in node:
            found.update(_texts(node["default"]))
        for child in node.values():
            _collect_defaults(child, secret, found)
    elif isinstance(node, list):
        for child in node:
            _collect_defaults(child, secret, found)


def _texts(value: Any) -> Iterable[str]:
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    text = str(value)
    return [text] if text else []


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of a secret replaced by ``MASK`` (longest first, so a secret
    that contains another is hidden whole)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return text
