"""Parameter descriptions written in a function's docstring, for its parameters' schema
(``orchestrator.parameters``): the three styles Prefect reads too, Google, NumPy and reST."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

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
