"""What the database can store of text: no NUL characters (PostgreSQL refuses them in text and
JSONB) and no unpaired surrogates (not Unicode; a JSON ``\\ud800`` escape, or output decoded with
``surrogateescape``, can carry them). Nor non-finite numbers in JSON data: ``NaN`` and ``Infinity``
are not JSON (PostgreSQL's JSONB refuses them, and clients could not read them back).

The API refuses such input with a 422 naming the field (``schemas``); what a flow run reports of
itself is escaped instead (its log lines in ``logs``, state messages in ``Client.set_flow_run_state``),
so that a flow's odd output never costs a batch of logs or the run's final state."""

from __future__ import annotations

import math
from typing import Any

NUL_IN_TEXT = "text cannot contain NUL (\\u0000) characters"
SURROGATE_IN_TEXT = "text cannot contain unpaired surrogates (invalid \\ud800-\\udfff escapes)"
NOT_FINITE = "numbers must be finite (NaN and Infinity are not JSON)"


def problem(value: Any) -> str | None:
    """Why ``value`` (a string, or JSON-like data) cannot be stored, or None."""
    if isinstance(value, str):
        return _text_problem(value)
    if isinstance(value, float):
        return None if math.isfinite(value) else NOT_FINITE
    if isinstance(value, dict):
        return next((why for item in value.items() for why in map(problem, item) if why), None)
    if isinstance(value, list | tuple):
        return next((why for why in map(problem, value) if why), None)
    return None


def escaped(text: str) -> str:
    """``text`` with each NUL written as ``\\x00`` and each unpaired surrogate as ``\\udcXX``."""
    if _text_problem(text) is None:
        return text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return NUL_IN_TEXT
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return SURROGATE_IN_TEXT
    return None
