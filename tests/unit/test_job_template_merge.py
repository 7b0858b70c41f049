"""Job templates as Prefect users write them: dotted placeholders, a literal ``env`` in the
template merged with the ``env`` variable, dotted job-variable keys, ``null`` unsetting an env
key; and the pool-schema check accepting all of these."""

from __future__ import annotations

from typing import Any

import pytest

from job_templates.render import checkable, default_template, merge_values, render
from orchestrator.errors import InvalidInput
from orchestrator.server.services.deployments import validate_job_variables


def template(job_configuration: dict[str, Any], **properties: dict[str, Any]) -> dict[str, Any]:
    return {"job_configuration": job_configuration, "variables": {"type": "object", "properties": properties}}


IMAGE = {"type": "object", "default": {"name": "python", "tag": "3.11"}}
ENV = {"type": "object", "additionalProperties": {"type": "string"}, "default": {"DEFAULT": "d", "OVER": "d"}}


def test_dotted_placeholders_look_inside_dict_variables() -> None:
    tpl = template({"image": "{{ image.name }}:{{ image.tag }}", "name": "{{ image.name }}",
                    "first": "{{ ports.0 }}", "nothing": "{{ image.missing }}", "deep": "{{ a.b.c }}"},
                   image=IMAGE, ports={"type": "array"}, a={"type": "object"})
    rendered = render(tpl, {"ports": [8080, 9090], "a": {"b": {"c": {"typed": True}}}})
    assert rendered == {"image": "python:3.11", "name": "python", "first": 8080, "deep": {"typed": True}}
    assert render(tpl, {"image": {"name": "custom"}})["image"] == "custom:"  # a missing key: empty text


def test_a_literal_env_in_the_template_takes_the_env_variable_template_lt_deployment_lt_run() -> None:
    tpl = template({"env": {"FROM_TEMPLATE": "t", "OVER": "t", "REGION": "{{ region }}"}, "command": "{{ command }}"},
                   env=ENV, region={"type": "string", "default": "eu"}, command={"type": "string"})
    deployment = {"env": {"DEPLOYMENT": "1", "OVER": "deployment"}}
    run = {"env": {"RUN": "r", "FROM_TEMPLATE": None}}
    assert render(tpl, deployment, run) == {"env": {
        "OVER": "deployment", "REGION": "eu", "DEFAULT": "d", "DEPLOYMENT": "1", "RUN": "r"}}
    # Without any env variable the template's own env stays, rendered.
    assert render(template({"env": {"A": "{{ x }}-1"}}, x={"type": "string"}), {"x": "v"}) == {"env": {"A": "v-1"}}


def test_null_in_a_run_env_unsets_the_key_from_any_lower_layer() -> None:
    tpl = default_template("process")
    assert render(tpl, {"env": {"A": "1", "B": "2"}}, {"env": {"A": None}}) == {"env": {"B": "2"}, "stream_output": True}
    assert render(tpl, {"env.A": "1"}, {"env.A": None}) == {"env": {}, "stream_output": True}


def test_dotted_job_variable_keys_set_one_key_inside_a_dict_variable() -> None:
    assert merge_values({"env": {"A": "1"}}, {"env.B": "2"}, {"env": {"C": "3"}}) == {"env": {"A": "1", "B": "2", "C": "3"}}
    assert merge_values({"image": {"name": "py", "tag": "1"}}, {"image.tag": "2"}) == {"image": {"name": "py", "tag": "2"}}
    assert merge_values({"a.b.c": 1}) == {"a": {"b": {"c": 1}}}
    layer = {"image": {"name": "py"}}
    merge_values(layer, {"image.tag": "2"})
    assert layer == {"image": {"name": "py"}}  # layers are not changed
    tpl = default_template("process")
    assert render(tpl, {"env.FOO": "x"}, {"env": {"BAR": "y"}})["env"] == {"FOO": "x", "BAR": "y"}


def test_checkable_values_expand_dotted_keys_and_leave_out_unsets() -> None:
    assert checkable({"env.FOO": "x", "env": {"A": None, "B": "b"}, "command": None}) == {"env": {"B": "b", "FOO": "x"}}


@pytest.mark.parametrize("values", [
    {"env": {"A": None}},
    {"env.FOO": "x"},
    {"env.FOO": None, "stream_output": False},
])
def test_the_pool_schema_accepts_unsets_and_dotted_keys(values: dict[str, Any]) -> None:
    validate_job_variables(default_template("process"), values, pool_name="p", partial=False)


@pytest.mark.parametrize(("values", "loc", "reason"), [
    ({"env.FOO": 1}, ["env", "FOO"], "job variable 'env.FOO': 1 is not of type 'string'"),
    ({"enviroment.FOO": "x"}, ["enviroment"], "job variable 'enviroment' is not a variable of work pool 'p'"),
])
def test_the_pool_schema_still_refuses_bad_values_naming_them(values: dict[str, Any], loc: list[str], reason: str) -> None:
    with pytest.raises(InvalidInput) as error:
        validate_job_variables(default_template("process"), values, pool_name="p", partial=False)
    [problem] = error.value.detail
    assert problem["loc"] == ["body", "job_variables", *loc]
    assert problem["msg"].startswith(reason), problem


def test_a_literal_env_template_accepts_the_env_variable_undeclared() -> None:
    tpl = template({"env": {"A": "1"}, "command": "{{ command }}"}, command={"type": "string"})
    validate_job_variables(tpl, {"env": {"B": "2", "A": None}}, pool_name="p", partial=False)
    with pytest.raises(InvalidInput, match="job variable 'env.B': 2 is not of type 'string'"):
        validate_job_variables(tpl, {"env": {"B": 2}}, pool_name="p", partial=False)
