"""Jinja templates in automations: one sandboxed environment, used both to check a template when an
automation is saved and (by the actions) to render it when it fires, so what passes the check is
what renders. A string is a template when it contains ``{{`` or ``{%`` (Prefect's rule)."""

import functools
from typing import Any

from pydantic_core import PydanticCustomError

MAX_TEMPLATE_LENGTH = 100_000
MAX_FOR_LOOPS = 10  # Prefect's bound on a saved template


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


@functools.cache
def environment() -> Any:
    """The one sandboxed Jinja environment (built on first use, never at import)."""
    from jinja2 import ChainableUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(undefined=ChainableUndefined, autoescape=False)


def template_problem(text: str) -> str | None:
    """Why ``text`` is not a usable template (syntax, size), or None."""
    if not is_template(text):
        return None
    if len(text) > MAX_TEMPLATE_LENGTH:
        return f"template is {len(text)} characters long, the most is {MAX_TEMPLATE_LENGTH}"
    from jinja2 import TemplateSyntaxError, nodes

    try:
        tree = environment().parse(text)
    except TemplateSyntaxError as error:
        return f"template error on line {error.lineno}: {error.message}"
    loops = sum(1 for _ in tree.find_all(nodes.For))
    if loops > MAX_FOR_LOOPS:
        return f"template has {loops} for loops, the most is {MAX_FOR_LOOPS}"
    return None


def check_template(text: str) -> str:
    """A pydantic validator: the template's problem as a 422 naming the field."""
    why = template_problem(text)
    if why is not None:
        raise PydanticCustomError("template", why)
    return text


def check_templates_within(value: Any) -> Any:
    """Check every template string inside JSON-like ``value``; the error names the key path."""
    for path, text in _strings(value, ()):
        why = template_problem(text)
        if why is not None:
            where = ".".join(path) or "value"
            raise PydanticCustomError("template", "{where}: {why}", {"where": where, "why": why})
    return value


def _strings(value: Any, path: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, str(index)))
