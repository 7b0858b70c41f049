"""The label rules (orchestrator/labels.py) and the stream's cursor, in memory."""

from __future__ import annotations

import pytest

from orchestrator.errors import InvalidInput
from orchestrator.labels import any_matches, glob_matches, labels_match
from orchestrator.server.services.event_stream import Cursor


@pytest.mark.parametrize(("glob", "text", "expected"), [
    ("a.b", "a.b", True), ("a.b", "a.bc", False), ("a.*", "a.b.c", True), ("a.*", "a.", True),
    ("*.c", "a.b.c", True), ("a*c", "abc", True), ("a*c", "abd", False), ("A.*", "a.b", False),
    ("a.?", "a.b", False), ("a.?", "a.?", True), ("a.[x]", "a.[x]", True), ("*", "", True),
])
def test_globs_have_one_wildcard_and_are_case_sensitive(glob: str, text: str, expected: bool) -> None:
    assert glob_matches(glob, text) is expected


def test_negation_lists_and_missing_labels() -> None:
    assert any_matches("!a.*", "b.x") and not any_matches("!a.*", "a.x")
    assert not any_matches("!a", None) and not any_matches("a", None)  # missing never matches
    assert any_matches(["x", "y"], "y") and not any_matches(["x", "y"], "z")
    assert any_matches(["!x", "!y"], "x")  # OR: "not y" holds for x (Prefect's rule)
    assert not any_matches([], "x")


def test_a_spec_is_an_and_across_keys() -> None:
    labels = {"orchestrator.resource.id": "my.thing.1", "env": "prod"}
    assert labels_match({"orchestrator.resource.id": "my.*", "env": ["prod", "dev"]}, labels)
    assert not labels_match({"orchestrator.resource.id": "my.*", "env": "!prod"}, labels)
    assert not labels_match({"team": "!x"}, labels)
    assert labels_match({}, labels)


def test_the_cursor_keeps_what_is_sent_above_a_gap() -> None:
    cursor = Cursor(5)
    assert [cursor.add(s) for s in (8, 9, 6, 12)] == [True] * 4
    assert cursor.text() == "6:8-9,12" and cursor.gaps() == [7, 10, 11]
    assert not cursor.add(8) and not cursor.add(3)  # never twice
    resumed = Cursor.parse(cursor.text())
    assert resumed.text() == cursor.text() and not resumed.add(9) and resumed.add(7)
    assert resumed.text() == "9:12"


def test_a_gap_is_given_up_only_after_the_grace() -> None:
    cursor = Cursor(1, [[3, 3]])
    assert cursor.expire(100.0, grace=5.0) == 105.0 and cursor.text() == "1:3"
    assert cursor.expire(104.0, grace=5.0) == 105.0
    assert cursor.expire(105.0, grace=5.0) is None and cursor.text() == "3"


@pytest.mark.parametrize("text", ["", "x", "5:", "5:3", "5:9-7", "5:8,8", "1:" + ",".join(map(str, range(3, 3000, 2)))])
def test_a_bad_cursor_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        Cursor.parse(text)
