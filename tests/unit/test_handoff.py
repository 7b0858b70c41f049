"""A hand-off the flow-run process cannot use is ignored (it then fetches the run): absent,
empty, not JSON, or JSON of another shape. The used and the too-large cases run against a real
server in ``tests/integration/test_engine_handoff.py``."""

from __future__ import annotations

import uuid

import pytest

from orchestrator.handoff import CLAIM_VARIABLE, read_handoff


@pytest.mark.parametrize("text", [None, "", "not json", '{"flow_run": {}}', "[1, 2]"])
def test_an_unusable_hand_off_reads_as_none(text: str | None) -> None:
    environ = {} if text is None else {CLAIM_VARIABLE: text}
    assert read_handoff(environ, uuid.uuid4()) is None
