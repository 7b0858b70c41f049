"""Values the API would refuse, refused by the CLI first, while it parses its line: a usage error
(one line, exit 2, naming the option and what it accepts; ``help_format.py``), as the option
parser's own range errors (``--port 70000``) -- not exit 1 after a request, or after the command
built its request. Kept free of pydantic: the parser runs these before any command loads it."""

from __future__ import annotations

import math

import typer

# The API's largest count (``schemas.base.INT32_MAX``: a column of 32 bits), repeated here so that
# checking a number needs no schema module.
INT32_MAX = 2**31 - 1
API_KEY_LIFETIME_DAYS = 36500  # ``schemas.api_keys.ApiKeyCreate.expires_in``: at most 100 years


def finite(value: float | None) -> float | None:
    """A number of seconds must be one: ``inf`` passes the option's minimum (``nan`` does not)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number of seconds")
    return value


def api_key_lifetime(text: str | None) -> str | None:
    """``--expires-in``: a duration the API takes (more than 0, at most 36500 days); checked as the
    API reads it (seconds, 30d / 12h, or ISO 8601), then sent as written."""
    if text is None:
        return None
    import datetime as dt

    import pydantic

    from orchestrator.schemas.api_keys import Duration

    allowed = f"more than 0 s and at most {API_KEY_LIFETIME_DAYS} days, e.g. 30d, 12h, 3600 (seconds)"
    try:
        lifetime = pydantic.TypeAdapter(Duration).validate_python(text)
    except pydantic.ValidationError:
        raise typer.BadParameter(f"{text!r} is not a duration; give {allowed}") from None
    if not dt.timedelta(0) < lifetime <= dt.timedelta(days=API_KEY_LIFETIME_DAYS):
        raise typer.BadParameter(f"{text!r} is out of range; give {allowed}")
    return text
