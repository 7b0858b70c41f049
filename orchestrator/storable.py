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


RESULT_LIMIT = 16 * 1024  # bytes of JSON a run's result may take; a larger one is not stored


def stored_result(value: Any) -> tuple[Any, str | None]:
    """What of a flow's return value a run keeps: the value itself when it is JSON of at most
    ``RESULT_LIMIT`` bytes that can be stored, else None and a note saying why."""
    import json

    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return None, f"result of type {type(value).__name__} is not JSON; not stored"
    if len(text) > RESULT_LIMIT:
        return None, f"result of {len(text)} bytes is larger than {RESULT_LIMIT}; not stored"
    why = problem(value)
    if why is not None:
        return None, f"result not stored: {why}"
    return value, None


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
