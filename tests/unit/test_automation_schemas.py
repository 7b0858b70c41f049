"""Trigger, action and automation models: Prefect's YAML and JSON as written (the examples of its
documentation), ``type`` inferred as Prefect does, Prefect's defaults, and every bound a 422-style
error naming the field."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from orchestrator.schemas.automations import (
    AutomationCreate,
    DeploymentCompoundTrigger,
    DeploymentEventTrigger,
    DeploymentSequenceTrigger,
    DeploymentTrigger,
    trigger_as_dict,
)
from orchestrator.schemas.triggers import (
    CompoundTrigger,
    EventTrigger,
    SequenceTrigger,
    label_matches,
    lone_firers,
)

TRIGGERS: TypeAdapter[list[Any]] = TypeAdapter(list[DeploymentTrigger])

# prefect.yaml deployment triggers, as Prefect's documentation writes them.
PREFECT_YAML = """
triggers:
  - enabled: true
    match:
      prefect.resource.id: my.external.resource
    expect:
      - external.resource.pinged
    parameters:
      param_1: "{{ event }}"
  - type: event
    enabled: true
    match:
      prefect.resource.id: prefect.flow-run.*
    match_related:
      prefect.resource.id: prefect.deployment.dep-a
    expect: ["prefect.flow-run.Completed"]
    parameters:
      upstream_run: "{{ event.resource.id }}"
  - type: compound
    require: all
    within: 3600
    triggers:
      - type: event
        match: {prefect.resource.id: prefect.flow-run.*}
        match_related: {prefect.resource.name: upstream-a, prefect.resource.role: deployment}
        expect: ["prefect.flow-run.Completed"]
      - type: event
        match: {prefect.resource.id: prefect.flow-run.*}
        match_related: {prefect.resource.name: upstream-b, prefect.resource.role: deployment}
        expect: ["prefect.flow-run.Completed"]
  - type: sequence
    within: 7200
    triggers:
      - type: event
        expect: ["prefect.block.remote-file-system.write_path.called"]
        match: {prefect.resource.name: "s3-bucket"}
      - type: event
        expect: ["prefect.flow-run.Completed"]
        match_related: {prefect.resource.role: flow, prefect.resource.name: ingest}
  - posture: Proactive
    after: ["prefect.flow-run.Running"]
    expect: ["prefect.flow-run.Completed", "prefect.flow-run.Failed", "prefect.flow-run.Crashed"]
    for_each: ["prefect.resource.id"]
    match: {prefect.resource.id: prefect.flow-run.*}
    within: 3600
    threshold: 1
"""


def test_prefect_documentation_triggers_parse_with_types_inferred_and_names_read_as_ours() -> None:
    parsed = TRIGGERS.validate_python(yaml.safe_load(PREFECT_YAML)["triggers"])
    assert [type(t) for t in parsed] == [DeploymentEventTrigger, DeploymentEventTrigger, DeploymentCompoundTrigger,
                                         DeploymentSequenceTrigger, DeploymentEventTrigger]
    first, second, compound, sequence, proactive = parsed
    assert first.match == {"orchestrator.resource.id": "my.external.resource"}
    assert first.parameters == {"param_1": "{{ event }}"}
    assert second.match == {"orchestrator.resource.id": "orchestrator.flow-run.*"}
    assert second.expect == ["orchestrator.flow-run.Completed"]
    assert second.match_related == {"orchestrator.resource.id": "orchestrator.deployment.dep-a"}
    assert compound.require == "all" and compound.within == dt.timedelta(hours=1) and compound.needed == 2
    assert compound.triggers[0].match_related == {"orchestrator.resource.name": "upstream-a",
                                                  "orchestrator.resource.role": "deployment"}
    assert isinstance(sequence, SequenceTrigger) and len(sequence.triggers) == 2
    assert proactive.posture == "Proactive" and proactive.for_each == ["orchestrator.resource.id"]


@pytest.mark.parametrize(("given", "kind"), [
    ({}, EventTrigger),
    ({"posture": "Reactive", "triggers": []}, EventTrigger),  # posture first, as in Prefect
    ({"triggers": [{}], "require": "any"}, CompoundTrigger),
    ({"triggers": [{}]}, SequenceTrigger),
    ({"type": "sequence", "triggers": [{}]}, SequenceTrigger),
])
def test_type_is_inferred_as_prefect_does(given: dict[str, Any], kind: type) -> None:
    if kind is EventTrigger and "triggers" in given:
        with pytest.raises(ValidationError, match="triggers"):  # an event trigger has no triggers
            AutomationCreate(name="a", trigger=given)  # type: ignore[arg-type]
        return
    assert type(AutomationCreate(name="a", trigger=given).trigger) is kind  # type: ignore[arg-type]


def test_defaults_are_prefects() -> None:
    trigger = TRIGGERS.validate_python([{}])[0]
    assert (trigger.posture, trigger.threshold, trigger.within, trigger.expect, trigger.after, trigger.for_each,
            trigger.match, trigger.match_related) == ("Reactive", 1, dt.timedelta(0), [], [], [], {}, {})
    assert (trigger.name, trigger.description, trigger.enabled, trigger.parameters, trigger.job_variables,
            trigger.schedule_after) == (None, "", True, None, None, dt.timedelta(0))
    proactive = TRIGGERS.validate_python([{"posture": "Proactive", "expect": ["x"]}])[0]
    assert proactive.within == dt.timedelta(seconds=10)  # 0 or missing reads as 10 s
    assert TRIGGERS.validate_python([{"within": "PT1H"}])[0].within == dt.timedelta(hours=1)
    assert TRIGGERS.validate_python([{"within": 90}])[0].model_dump(mode="json")["within"] == 90


def test_a_deployment_trigger_is_an_automation_running_its_deployment() -> None:
    deployment_id = uuid.uuid4()
    trigger = TRIGGERS.validate_python([{"expect": ["a.b"], "parameters": {"n": "{{ event.payload.n }}"},
                                         "job_variables": {"env": {"X": "1"}}, "schedule_after": 30,
                                         "enabled": False, "description": "d"}])[0]
    automation = trigger.as_automation(deployment_id, "nightly__automation_1")
    assert (automation.name, automation.description, automation.enabled) == ("nightly__automation_1", "d", False)
    assert type(automation.trigger) is EventTrigger and automation.trigger.expect == ["a.b"]
    [action] = automation.actions
    assert action.model_dump(mode="json") == {
        "type": "run-deployment", "source": "selected", "deployment_id": str(deployment_id), "deployment": None,
        "parameters": {"n": "{{ event.payload.n }}"}, "job_variables": {"env": {"X": "1"}}, "schedule_after": 30}
    named = TRIGGERS.validate_python([{"name": "mine"}])[0].as_automation(deployment_id, "unused")
    assert named.name == "mine"


def test_trigger_models_given_to_deploy_become_their_fields() -> None:
    given = trigger_as_dict(DeploymentEventTrigger(expect=["a.b"], parameters={"x": 1}))
    assert given == {"type": "event", "expect": ["a.b"], "parameters": {"x": 1}}


@pytest.mark.parametrize(("trigger", "field", "needle"), [
    ({"posture": "Proactive", "within": 5}, "within", "at least 10 seconds"),
    ({"threshold": 0}, "threshold", "greater than or equal to 1"),
    ({"within": -1}, "within", "within must be 0"),
    ({"within": None}, "within", "timedelta"),
    ({"posture": "Metric"}, "posture", "Prefect Cloud"),
    ({"type": "metric"}, "", "'event', 'compound' or 'sequence'"),
    ({"expects": ["a"]}, "expects", "Extra inputs"),
    ({"triggers": [{}], "require": 3}, "", "require must be between 1 and the number of triggers (1)"),
    ({"triggers": [{}], "require": 0}, "", "require must be between"),
    ({"expect": ["x"] * 101}, "expect", "at most 100"),
    ({"for_each": ["related:deployment"]}, "for_each", "related:<role>:<label>"),
    ({"parameters": {"a": {"b": "{{ event.id "}}}, "parameters", "a.b: template error on line 1"),
])
def test_bad_triggers_name_the_field(trigger: dict[str, Any], field: str, needle: str) -> None:
    with pytest.raises(ValidationError) as error:
        TRIGGERS.validate_python([trigger])
    hit = next(p for p in error.value.errors() if needle in p["msg"])
    assert field in [str(part) for part in hit["loc"]] or not field, hit


def test_composite_triggers_nest_three_deep_at_most() -> None:
    deep = {"triggers": [{"triggers": [{"triggers": [{"triggers": [{}]}]}]}]}
    with pytest.raises(ValidationError, match="nest at most 3"):
        AutomationCreate.model_validate({"name": "a", "trigger": deep})


@pytest.mark.parametrize(("action", "needle"), [
    ({"type": "run-deployment"}, "deployment_id or deployment"),
    ({"type": "run-deployment", "source": "inferred", "deployment": "a/b"}, "leave out deployment"),
    ({"type": "run-deployment", "deployment": "nope"}, "must look like 'flow/deployment'"),
    ({"type": "pause-work-queue", "work_queue_name": "q"}, "needs both work_pool_name and work_queue_name"),
    ({"type": "emit-event", "event": "x", "resource": {"name": "r"}}, "orchestrator.resource.id"),
    ({"type": "emit-event", "event": "{% for %}", "resource": {"orchestrator.resource.id": "r"}}, "template error"),
    ({"type": "call-webhook", "url": "ftp://x"}, "http:// or https://"),
    ({"type": "call-webhook", "url": "https://x", "body": "{{ event.id }"}, "template error"),
    ({"type": "send-notification"}, "does not match any of the expected tags"),
    ({"type": "do-nothing", "extra": 1}, "Extra inputs"),
])
def test_bad_actions_name_the_problem(action: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as error:
        AutomationCreate.model_validate({"name": "a", "trigger": {}, "actions": [action]})
    assert needle in str(error.value), str(error.value)
    assert all(p["loc"][:2] == ("actions", 0) for p in error.value.errors())


def test_actions_read_prefect_names_and_json_bodies() -> None:
    automation = AutomationCreate.model_validate({"name": "a", "trigger": {}, "actions": [
        {"type": "emit-event", "event": "prefect.custom.done", "resource": {"prefect.resource.id": "prefect.flow.1"}},
        {"type": "call-webhook", "url": "https://example.invalid/{{ event.id }}", "body": {"id": "{{ event.id }}"}},
    ]})
    emit, hook = automation.actions
    assert emit.event == "orchestrator.custom.done"  # type: ignore[union-attr]
    assert emit.resource == {"orchestrator.resource.id": "orchestrator.flow.1"}  # type: ignore[union-attr]
    assert hook.body == '{\n  "id": "{{ event.id }}"\n}' and hook.method == "POST"  # type: ignore[union-attr]


def test_label_rule_is_prefects() -> None:
    assert label_matches("orchestrator.flow-run.1", "orchestrator.flow-run.*")
    assert label_matches("a", ["!b"]) and not label_matches("b", ["!b"])
    assert not label_matches(None, ["!b"])  # a missing label matches nothing, not even a negation
    assert not label_matches("A", "a")  # case-sensitive


def test_lone_firers_are_those_that_fire_the_automation_alone() -> None:
    any_of = AutomationCreate.model_validate({"name": "a", "trigger": {
        "triggers": [{"expect": ["x"]}, {"expect": ["y"]}], "require": "any"}}).trigger
    all_of = AutomationCreate.model_validate({"name": "a", "trigger": {
        "triggers": [{"expect": ["x"]}, {"expect": ["y"]}], "require": "all"}}).trigger
    assert [t.expect for t in lone_firers(any_of)] == [["x"], ["y"]]
    assert list(lone_firers(all_of)) == []
