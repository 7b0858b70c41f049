"""ANSI escape codes in what flows print: the logs keep them; a terminal renders them, a file or
a pipe (or ``NO_COLOR``) gets plain text."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TextIO

# CSI (colours, cursor moves), OSC (titles, hyperlinks; ended by BEL or ST) and two-byte escapes.
ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


def strip(text: str) -> str:
    return ESCAPE.sub("", text)


def for_stream(stream: TextIO) -> Callable[[str], str]:
    """How to print log text to ``stream``: as it is on a terminal, stripped of escapes otherwise."""
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    return str if terminal and not os.environ.get("NO_COLOR") else strip
