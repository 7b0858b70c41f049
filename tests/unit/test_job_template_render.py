"""``job_templates.render``: placeholders, value layers and the shipped default templates."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import jsonschema
import pytest

from job_templates.render import default_template, merge_values, render, variable_defaults


def template(job_configuration: dict[str, Any], **properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "job_configuration": job_configuration,
        "variables": {"type": "object", "properties": properties},
    }


# --- whole-value placeholders keep the variable's type ------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        8080,
        2.5,
        True,
        False,
        0,
        "",
        {"a": 1, "nested": {"b": [1, 2]}},
        [1, "two", {"three": 3}],
        [],
        {},
    ],
    ids=repr,
)
def test_exact_placeholder_takes_the_typed_value(value: Any) -> None:
    rendered = render(template({"key": "{{ var }}"}), {"var": value})

    assert rendered == {"key": value}
    assert type(rendered["key"]) is type(value)


@pytest.mark.parametrize("text", ["{{var}}", "{{ var }}", "{{   var   }}", "  {{ var }}  "])
def test_exact_placeholder_tolerates_whitespace(text: str) -> None:
    assert render(template({"key": text}), {"var": 42}) == {"key": 42}


def test_exact_placeholder_in_a_list_keeps_its_type() -> None:
    rendered = render(template({"args": ["--port", "{{ port }}", "{{ flags }}"]}), {"port": 80, "flags": ["-v"]})

    assert rendered == {"args": ["--port", 80, ["-v"]]}


def test_nested_structures_are_rendered_recursively() -> None:
    tpl = template({"outer": {"inner": [{"deep": "{{ x }}"}], "static": 7, "flag": None}})

    assert render(tpl, {"x": {"k": "v"}}) == {"outer": {"inner": [{"deep": {"k": "v"}}], "static": 7, "flag": None}}


def test_values_without_placeholders_are_kept_verbatim() -> None:
    config = {"a": "plain text", "b": 3, "c": [True, None], "d": {"e": "{ not a placeholder }"}}

    assert render(template(config), {"a": "ignored"}) == config


# --- placeholders inside longer text ------------------------------------------------------------


def test_placeholders_inside_text_are_interpolated_as_strings() -> None:
    tpl = template({"url": "http://{{ host }}:{{ port }}/x", "name": "run-{{ id }}"})

    rendered = render(tpl, {"host": "example.org", "port": 8080, "id": "abc"})

    assert rendered == {"url": "http://example.org:8080/x", "name": "run-abc"}


def test_non_string_values_inside_text_are_serialized_as_json() -> None:
    tpl = template({"a": "flag={{ flag }}", "b": "cfg={{ cfg }}", "c": "items={{ items }}"})

    rendered = render(tpl, {"flag": True, "cfg": {"k": 1}, "items": [1, 2]})

    assert rendered == {"a": "flag=true", "b": 'cfg={"k": 1}', "c": "items=[1, 2]"}


def test_two_adjacent_placeholders_are_interpolated_not_treated_as_one_value() -> None:
    assert render(template({"v": "{{ a }}{{ b }}"}), {"a": 1, "b": 2}) == {"v": "12"}


def test_missing_or_none_inside_text_becomes_empty() -> None:
    tpl = template({"v": "[{{ missing }}|{{ none }}]"})

    assert render(tpl, {"none": None}) == {"v": "[|]"}


# --- keys whose only placeholder has no value are dropped ----------------------------------------


def test_key_with_missing_value_is_dropped() -> None:
    tpl = template({"kept": "{{ present }}", "dropped": "{{ absent }}"})

    assert render(tpl, {"present": "x"}) == {"kept": "x"}


def test_key_with_none_value_is_dropped() -> None:
    tpl = template({"kept": "{{ present }}", "dropped": "{{ nothing }}"})

    assert render(tpl, {"present": 1, "nothing": None}) == {"kept": 1}


def test_none_in_a_later_layer_unsets_a_default() -> None:
    tpl = template({"image": "{{ image }}"}, image={"type": "string", "default": "python:3.12"})

    assert render(tpl) == {"image": "python:3.12"}
    assert render(tpl, {"image": None}) == {}


def test_falsy_values_are_not_dropped() -> None:
    tpl = template({"a": "{{ zero }}", "b": "{{ false }}", "c": "{{ empty }}", "d": "{{ empty_list }}"})

    assert render(tpl, {"zero": 0, "false": False, "empty": "", "empty_list": []}) == {
        "a": 0,
        "b": False,
        "c": "",
        "d": [],
    }


def test_list_item_with_missing_value_is_dropped() -> None:
    tpl = template({"args": ["run", "{{ maybe }}", "{{ there }}"]})

    assert render(tpl, {"there": "yes"}) == {"args": ["run", "yes"]}


# --- {{ $NAME }} reads the environment ----------------------------------------------------------


def test_dollar_placeholder_reads_environ() -> None:
    tpl = template({"home": "{{ $HOME_DIR }}", "path": "{{ $HOME_DIR }}/work"})

    rendered = render(tpl, {"HOME_DIR": "from-values"}, environ={"HOME_DIR": "/home/me"})

    assert rendered == {"home": "/home/me", "path": "/home/me/work"}


def test_dollar_placeholder_missing_from_environ_is_dropped() -> None:
    tpl = template({"token": "{{ $NOT_SET }}", "text": "t={{ $NOT_SET }}"})

    assert render(tpl, environ={"OTHER": "x"}) == {"text": "t="}


def test_environ_is_not_read_implicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_UNIT_TEST_MARKER", "leaked")

    assert render(template({"v": "{{ $ORCH_UNIT_TEST_MARKER }}"})) == {}


def test_plain_placeholder_does_not_read_environ() -> None:
    assert render(template({"v": "{{ NAME }}"}), environ={"NAME": "env"}) == {}


# --- precedence and merging ---------------------------------------------------------------------


def test_precedence_defaults_then_deployment_then_run() -> None:
    tpl = template(
        {"a": "{{ a }}", "b": "{{ b }}", "c": "{{ c }}"},
        a={"type": "string", "default": "default-a"},
        b={"type": "string", "default": "default-b"},
        c={"type": "string", "default": "default-c"},
    )

    rendered = render(tpl, {"b": "deployment-b", "c": "deployment-c"}, {"c": "run-c"})

    assert rendered == {"a": "default-a", "b": "deployment-b", "c": "run-c"}


def test_env_is_merged_key_by_key_across_layers() -> None:
    tpl = template({"env": "{{ env }}"}, env={"type": "object", "default": {"A": "default", "B": "default"}})

    rendered = render(tpl, {"env": {"B": "deployment", "C": "deployment"}}, {"env": {"C": "run", "D": "run"}})

    assert rendered == {"env": {"A": "default", "B": "deployment", "C": "run", "D": "run"}}


def test_non_env_dicts_are_replaced_not_merged() -> None:
    tpl = template({"labels": "{{ labels }}"}, labels={"type": "object", "default": {"team": "a"}})

    assert render(tpl, {"labels": {"owner": "b"}}) == {"labels": {"owner": "b"}}


def test_render_does_not_mutate_its_inputs() -> None:
    tpl = template({"env": "{{ env }}", "x": "{{ x }}"}, env={"type": "object", "default": {"A": "1"}})
    deployment = {"env": {"B": "2"}, "x": [1]}
    run = {"env": {"C": "3"}}
    snapshot = copy.deepcopy((tpl, deployment, run))

    render(tpl, deployment, run)

    assert (tpl, deployment, run) == snapshot


def test_merge_values_later_layers_win() -> None:
    assert merge_values({"a": 1, "b": 1}, {"b": 2, "c": 2}, {"c": 3}) == {"a": 1, "b": 2, "c": 3}


def test_merge_values_deep_merges_env_only() -> None:
    merged = merge_values(
        {"env": {"A": "1", "B": "1"}, "labels": {"x": "1"}},
        {"env": {"B": "2"}, "labels": {"y": "2"}},
    )

    assert merged == {"env": {"A": "1", "B": "2"}, "labels": {"y": "2"}}


def test_merge_values_env_replaced_when_a_side_is_not_a_mapping() -> None:
    assert merge_values({"env": "not-a-dict"}, {"env": {"A": "1"}}) == {"env": {"A": "1"}}
    assert merge_values({"env": {"A": "1"}}, {"env": None}) == {"env": None}


def test_merge_values_does_not_mutate_layers() -> None:
    first = {"env": {"A": "1"}}
    second = {"env": {"B": "2"}}

    merge_values(first, second)

    assert first == {"env": {"A": "1"}}
    assert second == {"env": {"B": "2"}}


def test_merge_values_of_nothing_is_empty() -> None:
    assert merge_values() == {}


# --- variable_defaults / default_template -------------------------------------------------------


def test_variable_defaults_collects_only_properties_with_defaults() -> None:
    tpl = template(
        {},
        with_default={"type": "integer", "default": 3},
        none_default={"type": ["string", "null"], "default": None},
        without_default={"type": "string"},
    )

    assert variable_defaults(tpl) == {"with_default": 3, "none_default": None}


def test_variable_defaults_of_template_without_variables() -> None:
    assert variable_defaults({"job_configuration": {}}) == {}


def test_render_without_job_configuration_is_empty() -> None:
    assert render({"variables": {"type": "object", "properties": {}}}, {"x": 1}) == {}


def test_default_template_unknown_worker_type_raises_key_error() -> None:
    with pytest.raises(KeyError, match="no-such-worker"):
        default_template("no-such-worker")


DEFAULT_TYPES = sorted(
    entry.name.removesuffix(".json")
    for entry in resources.files("job_templates").joinpath("defaults").iterdir()
    if entry.name.endswith(".json")
)


def test_the_expected_default_templates_ship() -> None:
    assert {"process", "docker", "kubernetes"} <= set(DEFAULT_TYPES)


@pytest.mark.parametrize("worker_type", DEFAULT_TYPES)
def test_default_template_is_well_formed(worker_type: str) -> None:
    tpl = default_template(worker_type)

    assert isinstance(tpl["job_configuration"], dict) and tpl["job_configuration"]
    variables = tpl["variables"]
    assert variables["type"] == "object"
    assert isinstance(variables["properties"], dict)
    jsonschema.Draft202012Validator.check_schema(variables)


@pytest.mark.parametrize("worker_type", DEFAULT_TYPES)
def test_default_template_defaults_satisfy_its_schema(worker_type: str) -> None:
    tpl = default_template(worker_type)

    jsonschema.Draft202012Validator(tpl["variables"]).validate(variable_defaults(tpl))


@pytest.mark.parametrize("worker_type", DEFAULT_TYPES)
def test_default_template_renders_with_only_defaults(worker_type: str) -> None:
    tpl = default_template(worker_type)

    rendered = render(tpl)

    assert rendered, "rendering the defaults produced an empty job"
    assert "{{" not in json.dumps(rendered)


@pytest.mark.parametrize("worker_type", DEFAULT_TYPES)
def test_default_template_placeholders_all_name_declared_variables(worker_type: str) -> None:
    from job_templates.render import PLACEHOLDER

    tpl = default_template(worker_type)
    names = set(PLACEHOLDER.findall(json.dumps(tpl["job_configuration"])))

    assert names, "a default template without placeholders takes no job variables"
    assert names - {n for n in names if n.startswith("$")} <= set(tpl["variables"]["properties"])


def test_default_process_template_renders_defaults() -> None:
    assert render(default_template("process")) == {"env": {}, "stream_output": True}


def test_default_process_template_takes_job_variables() -> None:
    rendered = render(
        default_template("process"),
        {"env": {"A": "1"}, "working_dir": "/srv"},
        {"env": {"B": "2"}, "command": "python run.py", "stream_output": False},
    )

    assert rendered == {
        "command": "python run.py",
        "env": {"A": "1", "B": "2"},
        "working_dir": "/srv",
        "stream_output": False,
    }


def test_default_kubernetes_template_keeps_typed_values_and_drops_unset_ones() -> None:
    rendered = render(default_template("kubernetes"), {"command": ["python", "-m", "x"], "backoff_limit": 2})

    spec = rendered["job_manifest"]["spec"]
    assert spec["backoffLimit"] == 2
    pod = spec["template"]["spec"]
    assert "serviceAccountName" not in pod
    assert pod["containers"][0]["args"] == ["python", "-m", "x"]
    assert pod["containers"][0]["image"] == "orchestrator:latest"
    assert rendered["namespace"] == "default"


def test_default_docker_template_drops_unset_optional_keys() -> None:
    rendered = render(default_template("docker"))

    assert "command" not in rendered
    assert "network_mode" not in rendered
    assert rendered["auto_remove"] is False
    assert rendered["image"] == "orchestrator:latest"
