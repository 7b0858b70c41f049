"""The side-by-side table and its section of bench/RESULTS.md."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "RESULTS.md"
# bench/skeleton.py rewrites RESULTS.md above this marker and keeps what is below: this section lives below.
NOTES = "<!-- notes: hand-written text below this line is kept when the script rewrites the file -->"
SECTION = "## Side by side with Prefect 3.9.1"


@dataclass
class Row:
    label: str
    unit: str  # "s" (a duration), "/s", "/min", "MB", "count"
    better: str  # "lower", "higher" or "" (no ratio)
    values: dict[str, float] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)  # a cell's text instead of its number
    bound: float = math.inf  # Prefect's value is infinite when it did not finish within this


def fmt(value: float, unit: str) -> str:
    if math.isnan(value) or math.isinf(value):
        return "–"
    if unit == "s":
        if value < 1:
            return f"{value * 1000:.0f} ms"
        return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"
    if unit == "MB":
        return f"{value:.0f} MB"
    if unit == "count":
        return f"{value:.0f}"
    return f"{value:,.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"


def ratio(ours: float, theirs: float, better: str, bound: float = math.inf) -> str:
    """How many times better we are (> 1: we win); '> N×' when Prefect did not finish within ``bound``."""
    if not better or math.isnan(ours) or math.isnan(theirs) or ours <= 0 or theirs <= 0:
        return ""
    if math.isinf(ours):
        return "–"
    if math.isinf(theirs):
        return f"> {times(bound / ours)}" if not math.isinf(bound) else "∞"
    value = theirs / ours if better == "lower" else ours / theirs
    return times(value)


def times(value: float) -> str:
    return f"{value:.1f}×" if value < 10 else f"{value:.0f}×"


def render(rows: list[Row], ours: list[str], theirs: str) -> str:
    header = ["figure", *ours, theirs, *(f"× better, {o.removeprefix('ours (').rstrip(')')}" for o in ours)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.label]
        for label in [*ours, theirs]:
            if label in row.texts:
                cells.append(row.texts[label])
            else:
                cells.append(fmt(row.values.get(label, float("nan")), row.unit))
        for label in ours:
            ours_value = row.values.get(label, float("nan"))
            theirs_value = row.values.get(theirs, float("nan"))
            cells.append(ratio(ours_value, theirs_value, row.better, row.bound))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_section(body: str) -> None:
    """Replace only this script's section (below the notes marker, which skeleton.py keeps)."""
    content = RESULTS.read_text() if RESULTS.exists() else NOTES + "\n"
    if NOTES not in content:
        content = content.rstrip("\n") + "\n\n" + NOTES + "\n"
    section = f"{SECTION}\n\n{body.rstrip()}\n"
    start = content.find(SECTION)
    if start < 0 or start < content.find(NOTES):
        content = content.rstrip("\n") + "\n\n" + section
    else:
        end = content.find("\n## ", start + len(SECTION))
        content = content[:start] + section + (content[end:] if end >= 0 else "")
    RESULTS.write_text(content)
