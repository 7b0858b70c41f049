"""Rendering an action's templates when its automation fires, with the sandboxed environment that
checked them when the automation was saved (``schemas/templates.py``).

* A string that is exactly one ``{{ expression }}`` keeps the expression's type: an int stays an
  int, a dict a dict (Prefect before 3.x-late made every value a string: its issues 12585, 17885,
  18907). A UUID or a datetime becomes its string (Prefect 3.9.1 fails the action there), any
  other object its JSON form.
* Any other template renders to a string; a plain string is left as it is.

The context: ``event`` (the triggering event: ``id``, ``occurred``, ``event``, ``resource``,
``related``, ``payload``; ``event.resource.id`` / ``.name`` as in Prefect), ``labels`` (the
``for_each`` values that fired), ``firing`` (``id``, ``triggered``, ``labels``), ``automation``
(``id``, ``name``); and, only when a template names them, ``deployment`` and ``flow_run``: the first
of that kind among the event's resources, as the API shows them (None when there is none).
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import uuid
from collections.abc import Callable
from typing import Any

from orchestrator.schemas.events import RESOURCE_ID, RESOURCE_NAME
from orchestrator.schemas.templates import environment, is_template

_ONE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)
LAZY = ("deployment", "flow_run")  # looked up only when a template names them


class TemplateFailed(Exception):
    """A template could not be rendered (the action fails with this reason)."""


class Labels(dict[str, str]):
    """A resource's labels; ``.id`` and ``.name`` as in Prefect's templates."""

    @property
    def id(self) -> str | None:
        return self.get(RESOURCE_ID)

    @property
    def name(self) -> str | None:
        return self.get(RESOURCE_NAME)


def jsonable(value: Any) -> Any:
    """A rendered value as JSON data: UUIDs, datetimes and enums as strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, uuid.UUID | enum.Enum):
        return str(value.value if isinstance(value, enum.Enum) else value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump(mode="json"))
    if hasattr(value, "__html__") or type(value).__name__.endswith("Undefined"):
        return None
    return str(value)


class Context:
    """The names templates see; ``lazy`` builds ``deployment`` / ``flow_run`` on first need."""

    def __init__(self, values: dict[str, Any], lazy: dict[str, Callable[[], Any]]) -> None:
        self.values, self.lazy = values, lazy

    def for_text(self, text: str) -> dict[str, Any]:
        for name in LAZY:
            if name in text and name not in self.values and name in self.lazy:
                self.values[name] = self.lazy[name]()
        return self.values


def render_text(text: str, context: Context) -> str:
    if not is_template(text):
        return text
    try:
        return str(environment().from_string(text).render(context.for_text(text)))
    except Exception as error:  # noqa: BLE001 -- any template error fails the action, with its reason
        raise TemplateFailed(f"template {text[:80]!r} failed: {type(error).__name__}: {error}") from None


def render_value(value: Any, context: Context) -> Any:
    """Render every template inside JSON-like ``value``, keeping a one-expression value's type."""
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    if not isinstance(value, str) or not is_template(value):
        return value
    match = _ONE_EXPRESSION.match(value)
    if match is None:
        return render_text(value, context)
    try:
        expression = environment().compile_expression(match.group("expr"), undefined_to_none=True)
        return jsonable(expression(**context.for_text(value)))
    except Exception as error:  # noqa: BLE001
        raise TemplateFailed(f"template {value[:80]!r} failed: {type(error).__name__}: {error}") from None
