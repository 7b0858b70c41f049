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


def test_the_fork_servers_rehearsal_parses_a_hand_off_with_every_field_set() -> None:
    """The fork server parses this sample once before forking any run's process (``handoff.rehearse``)
    so that the runs' own parse is cheap: it must stay a valid hand-off, setting every field of the
    run and the deployment as a claim's hand-off does (a field added to either is added here)."""
    import json

    from orchestrator.handoff import Handoff, rehearsal_text, rehearse
    from orchestrator.schemas import Deployment, FlowRun

    rehearse()
    sample = json.loads(rehearsal_text())
    assert set(sample["flow_run"]) == set(FlowRun.model_fields)
    assert set(sample["deployment"]) == set(Deployment.model_fields)
    assert Handoff.model_validate_json(rehearsal_text()).flow_run.id == uuid.UUID(int=1)


def test_a_hand_off_is_parsed_without_pydantics_string_cache() -> None:
    """A process parses its hand-off once: pydantic-core's cache of JSON strings (a 256 KiB table
    made at a process's first parse that uses it, which the fork server then held for every run)
    is not used for it, so two parses share no string."""
    from orchestrator.handoff import rehearsal_text

    environ = {CLAIM_VARIABLE: rehearsal_text()}
    first, second = (read_handoff(environ, uuid.UUID(int=1)) for _ in range(2))
    assert first is not None and second is not None and first == second
    assert first.flow_run.name is not second.flow_run.name
    assert first.deployment.entrypoint is not second.deployment.entrypoint
