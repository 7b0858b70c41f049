"""The one function that hides secret job variables (``orchestrator/masking.py``), the env
references (``job_templates/secret_env.py``) and the worker's log scrubbing (``workers/redaction.py``)."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from job_templates.kubernetes import build_job
from job_templates.render import default_template, render
from job_templates.secret_env import SecretRefError, kubernetes_env_entry, resolve_files
from orchestrator.masking import (
    MASK,
    keep_masked,
    keep_masked_template,
    mask_template,
    mask_values,
    secret_texts,
)
from workers.redaction import REDACTOR, install

SCHEMA = {"type": "object", "properties": {
    "token": {"type": "string", "secret": True, "default": "pool-default-token"},
    "password": {"type": "string", "format": "password"},
    "image": {"type": "string", "default": "python:3.12"},
    "env": {"type": "object", "additionalProperties": {"type": "string"},
            "properties": {"DB_PASSWORD": {"type": "string", "secret": True}}},
    "all_hidden": {"type": "object", "additionalProperties": {"type": "string", "secret": True}},
}}


def test_secret_and_password_values_are_masked_at_any_depth_and_the_rest_shown() -> None:
    values = {"token": "t0k", "password": "pw", "image": "img", "env": {"DB_PASSWORD": "s3", "PLAIN": "p"},
              "env.DB_PASSWORD": "dotted", "all_hidden": {"A": "a"}, "unknown": "u", "password_unset": None}
    assert mask_values(SCHEMA, values) == {
        "token": MASK, "password": MASK, "image": "img", "env": {"DB_PASSWORD": MASK, "PLAIN": "p"},
        "env.DB_PASSWORD": MASK, "all_hidden": {"A": MASK}, "unknown": "u", "password_unset": None}
    assert mask_values(SCHEMA, {"token": None}) == {"token": None}  # unsetting reveals nothing
    assert mask_values({"type": "object", "properties": {"a": {}}}, {"a": 1}) == {"a": 1}


def test_a_template_shows_its_secret_defaults_masked_and_keeps_them_when_sent_back() -> None:
    template = {"job_configuration": {"token": "{{ token }}"}, "variables": SCHEMA}
    shown = mask_template(template)
    assert shown["variables"]["properties"]["token"]["default"] == MASK
    assert shown["variables"]["properties"]["image"]["default"] == "python:3.12"
    assert template["variables"]["properties"]["token"]["default"] == "pool-default-token"  # not changed in place
    shown["variables"]["properties"]["image"]["default"] = "python:3.13"  # edited in a form, token left masked
    kept = keep_masked_template(shown, template)
    assert kept["variables"]["properties"]["token"]["default"] == "pool-default-token"
    assert kept["variables"]["properties"]["image"]["default"] == "python:3.13"


def test_values_sent_back_masked_keep_the_stored_secret_and_new_ones_replace_it() -> None:
    old = {"token": "old", "env": {"DB_PASSWORD": "old-db", "PLAIN": "p"}}
    assert keep_masked(SCHEMA, {"token": MASK, "env": {"DB_PASSWORD": MASK, "PLAIN": "q"}}, old) == {
        "token": "old", "env": {"DB_PASSWORD": "old-db", "PLAIN": "q"}}
    assert keep_masked(SCHEMA, {"token": "new"}, old) == {"token": "new"}
    assert keep_masked(SCHEMA, {"password": MASK}, old) == {}  # nothing stored behind the mask


def test_secret_texts_are_what_the_worker_scrubs() -> None:
    texts = secret_texts(SCHEMA, {"env": {"DB_PASSWORD": "db-pw", "PLAIN": "p"}}, {"password": "pw1"})
    assert texts == {"pool-default-token", "db-pw", "pw1"}


def test_kubernetes_env_reference_becomes_a_secret_key_ref() -> None:
    assert kubernetes_env_entry("A", "x") == {"name": "A", "value": "x"}
    assert kubernetes_env_entry("DB", {"secret_ref": {"name": "db", "key": "password"}}) == {
        "name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
    job = render(default_template("kubernetes"), {"env": {"DB": {"secret_ref": {"name": "db", "key": "pw"}}}})
    _, container = build_job(job, pool="p", worker="w", run_id=uuid.uuid4(), run_name="r", run_env={})
    assert {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}} in container["env"]
    with pytest.raises(SecretRefError, match="env DB: a Kubernetes secret_ref needs 'name' and 'key'"):
        kubernetes_env_entry("DB", {"secret_ref": {"file": "/x"}})


def test_file_references_are_read_on_the_workers_host(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    env, texts = resolve_files({"A": "plain", "B": {"secret_ref": {"file": str(tmp_path / "pw")}}})
    assert env == {"A": "plain", "B": "from-file"} and texts == {"from-file"}
    with pytest.raises(SecretRefError, match=r"env C: cannot read secret file .*missing: No such file"):
        resolve_files({"C": {"secret_ref": {"file": str(tmp_path / "missing")}}})
    with pytest.raises(SecretRefError, match="env D: this worker reads secret_ref {'file': path} only"):
        resolve_files({"D": {"secret_ref": {"name": "s", "key": "k"}}})


def test_every_log_record_of_the_worker_process_is_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    install()
    run_id = uuid.uuid4()
    REDACTOR.add(run_id, {"hunter2"})
    log = logging.getLogger("some.library")
    try:
        with caplog.at_level(logging.INFO):
            log.info("connecting with %s", "hunter2")
            try:
                raise RuntimeError("bad password hunter2")
            except RuntimeError:
                log.exception("failed")
        assert "hunter2" not in caplog.text and MASK in caplog.text
        assert "hunter2" not in caplog.records[-1].exc_text
    finally:
        REDACTOR.forget(run_id)
    assert REDACTOR.scrub("hunter2") == "hunter2"  # forgotten with its run


def test_secret_env_values_move_out_of_the_kubernetes_container_into_the_runs_secret() -> None:
    from job_templates.kubernetes import move_secret_env

    container = {"env": [{"name": "TOKEN", "value": "Bearer s3cret"}, {"name": "PLAIN", "value": "p"},
                         {"name": "REF", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]}
    data = move_secret_env(container, {"s3cret"}, "orch-run-1")
    assert data == {"TOKEN": "Bearer s3cret"}
    assert container["env"] == [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "orch-run-1", "key": "TOKEN"}}},
                                {"name": "PLAIN", "value": "p"},
                                {"name": "REF", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]
    assert move_secret_env({"env": [{"name": "A", "value": "a"}]}, set(), "x") == {}


def test_a_refused_secret_value_is_not_quoted_back_in_the_error() -> None:
    from orchestrator.errors import InvalidInput
    from orchestrator.server.services.deployments import validate_job_variables

    template = {"job_configuration": {}, "variables": SCHEMA | {"properties": {
        **SCHEMA["properties"], "token": {"type": "string", "secret": True, "minLength": 20}}}}
    with pytest.raises(InvalidInput) as error:
        validate_job_variables(template, {"token": "too-short-s3cr"}, pool_name="p", partial=False)
    [problem] = error.value.detail
    assert problem["loc"] == ["body", "job_variables", "token"]
    assert problem["msg"] == "job variable 'token' (secret) is not valid: it must satisfy minLength 20"


def test_a_secret_mark_inside_a_referenced_definition_is_found() -> None:
    # Schemas generated from models (pydantic, Prefect's templates) put nested objects in $defs
    # (or definitions) and point at them: the mark there hides the value like any other.
    schema = {"type": "object", "properties": {
        "credentials": {"$ref": "#/$defs/Credentials"},
        "db": {"$ref": "#/definitions/Db", "description": "the database"},
        "tree": {"$ref": "#/$defs/Node"}},
        "$defs": {"Credentials": {"type": "object", "properties": {"token": {"type": "string", "secret": True}}},
                  "Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"},
                                                              "key": {"type": "string", "format": "password"}}}},
        "definitions": {"Db": {"type": "string", "secret": True}}}
    values = {"credentials": {"token": "t0k", "user": "u"}, "db": "pg-pw", "tree": {"key": "k1", "child": {"key": "k2"}}}
    assert mask_values(schema, values) == {"credentials": {"token": MASK, "user": "u"}, "db": MASK,
                                           "tree": {"key": MASK, "child": {"key": MASK}}}
    assert secret_texts(schema, values) == {"t0k", "pg-pw", "k1", "k2"}
    sent_back = {"credentials": {"token": MASK, "user": "v"}, "db": MASK, "tree": {"key": MASK, "child": {"key": "new"}}}
    assert keep_masked(schema, sent_back, values) == {"credentials": {"token": "t0k", "user": "v"}, "db": "pg-pw",
                                                       "tree": {"key": "k1", "child": {"key": "new"}}}
