"""The custom-run form, generated from a deployment's parameter JSON schema (and its job variables
from the pool's variables schema, the same way).

Each parameter becomes one ``Field`` of a kind the page knows how to draw and read back: text,
integer, number, boolean, a choice among an enum's values, or JSON (arrays, objects and anything
this does not recognise). What a schema nests deeper is edited as JSON in its field; the whole form
also has a raw JSON editor. The server checks the values (``services/parameters.py``): the form
only has to send the right JSON types."""

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["string", "integer", "number", "boolean", "enum", "json"]
_SIMPLE: dict[str, Kind] = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}
_MISSING = object()


@dataclass
class Field:
    name: str
    label: str
    kind: Kind
    required: bool
    description: str | None = None
    value: str = ""  # as the input shows it: JSON for json fields, the text otherwise
    checked: bool = False  # boolean fields
    choices: list[tuple[str, str]] = field(default_factory=list)  # enum: (JSON of the value, label)
    nullable: bool = False
    prefix: str = "param"  # "param" for parameters, "jobvar" for job variables: one page has both

    @property
    def input_id(self) -> str:
        return f"{self.prefix}-{self.name}"


def fields(schema: dict[str, Any], defaults: dict[str, Any], prefix: str = "param") -> list[Field]:
    """One field per property, in the schema's order; ``defaults`` (the deployment's parameters, or
    its job variables for the pool's variables schema) win over the schema's own defaults."""
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    out = []
    for name, raw in properties.items():
        if not isinstance(raw, dict):
            continue
        prop, nullable = _unwrap(schema, raw)
        default = defaults.get(name, raw.get("default", prop.get("default", _MISSING)))
        made = _field(name, prop, raw, nullable=nullable, required=name in required, default=default)
        made.prefix = prefix
        out.append(made)
    return out


def _field(name: str, prop: dict[str, Any], raw: dict[str, Any], *, nullable: bool, required: bool,
           default: Any) -> Field:
    label = str(raw.get("title") or prop.get("title") or name)
    description = raw.get("description") or prop.get("description")
    kind = _kind(prop)
    made = Field(name=name, label=label, kind=kind, required=required, description=description, nullable=nullable)
    if kind == "enum":
        made.choices = [(json.dumps(v), str(v)) for v in prop["enum"]]
    if default is _MISSING or (default is None and kind != "json"):
        return made
    if kind == "boolean":
        made.checked = bool(default)
    elif kind in ("json", "enum"):
        made.value = json.dumps(default, indent=2 if kind == "json" else None)
    else:
        made.value = str(default)
    return made


def _kind(prop: dict[str, Any]) -> Kind:
    if isinstance(prop.get("enum"), list) and prop["enum"]:
        return "enum"
    kind = prop.get("type")
    return _SIMPLE.get(kind, "json") if isinstance(kind, str) else "json"


def _unwrap(schema: dict[str, Any], prop: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The property's own schema with ``$ref``, a one-item ``allOf`` and ``X | None`` resolved;
    and whether null is allowed."""
    nullable = False
    for _ in range(10):  # a $ref chain longer than this is drawn as JSON
        if "$ref" in prop:
            prop = {**_resolve(schema, prop["$ref"]), **{k: v for k, v in prop.items() if k != "$ref"}}
        elif isinstance(prop.get("allOf"), list) and len(prop["allOf"]) == 1:
            prop = {**prop["allOf"][0], **{k: v for k, v in prop.items() if k != "allOf"}}
        elif isinstance(prop.get("anyOf"), list):
            options = [o for o in prop["anyOf"] if isinstance(o, dict)]
            others = [o for o in options if o.get("type") != "null"]
            if len(others) == len(options) or len(others) != 1:
                return prop, nullable  # a real union: JSON
            nullable = True
            prop = {**others[0], **{k: v for k, v in prop.items() if k != "anyOf"}}
        else:
            return prop, nullable
    return {}, nullable


def _resolve(schema: dict[str, Any], ref: str) -> dict[str, Any]:
    if not ref.startswith("#/"):
        return {}  # never fetched: a remote $ref is drawn as JSON
    node: Any = schema
    for part in ref[2:].split("/"):
        node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}
