"""``/api/automations`` and a deployment's triggers as the automations it owns, on SQLite and
PostgreSQL: CRUD and filters, 422s naming the field, the loop guard, and ownership (created with
the deployment, kept with stable ids across redeploys, deleted with it, all in its transaction)."""

from __future__ import annotations

import urllib.request
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator import schemas
from orchestrator.server.db import models as m
from tests.conftest import LiveServer
from tests.harness import wait_until

COMPLETED = {"expect": ["prefect.flow-run.Completed"]}
LANDED = {"expect": ["file.landed"]}


def _deploy(api: LiveServer, name: str = "nightly", triggers: list[dict[str, Any]] | None = None,
            status: int | None = None) -> dict[str, Any]:
    code, body = api.raw("POST", "/deployments", {
        "flow_name": "etl", "name": name, "entrypoint": "flows.py:etl", "work_pool_name": "local",
        "triggers": triggers or []})
    assert code == status if status else code < 300, body
    return body  # type: ignore[no-any-return]


@pytest.fixture
def pool(api: LiveServer) -> str:
    api.client().create_work_pool(schemas.WorkPoolCreate(name="local", type="process"))
    return "local"


def _owned(api: LiveServer, deployment_id: str) -> list[dict[str, Any]]:
    code, body = api.raw("GET", f"/automations?owner=orchestrator.deployment.{deployment_id}")
    assert code == 200, body
    return sorted(body, key=lambda a: a["name"])  # type: ignore[no-any-return]


def test_create_read_list_change_and_delete(api: LiveServer, pool: str) -> None:
    target = _deploy(api, "target")
    code, made = api.raw("POST", "/automations", {
        "name": "on-file", "trigger": {"expect": ["file.landed"], "match": {"prefect.resource.id": "s3.bucket.*"}},
        "actions": [{"type": "run-deployment", "deployment": "etl/target", "parameters": {"key": "{{ event.payload.key }}"}}]})
    assert code == 201, made
    assert made["actions"][0]["deployment_id"] == target["id"] and made["owner_resource"] is None
    assert made["trigger"]["match"] == {"orchestrator.resource.id": "s3.bucket.*"} and made["enabled"] is True
    assert api.raw("GET", f"/automations/{made['id']}") == (200, made)
    client = api.client()
    assert [a.name for a in client.list_automations(enabled=True)] == ["on-file"]
    assert client.list_automations(enabled=False) == []
    assert client.read_automation_ref("on-file").id == client.read_automation(made["id"]).id
    assert client.set_automation_enabled(made["id"], False).enabled is False
    changed = client.update_automation(made["id"], {"name": "on-file-2", "enabled": True})
    assert (changed.name, changed.enabled) == ("on-file-2", True)
    assert changed.trigger.id == client.read_automation(made["id"]).trigger.id  # same trigger: same ids
    retriggered = client.update_automation(made["id"], {"trigger": {"expect": ["file.moved"]}})
    assert retriggered.trigger.id != changed.trigger.id  # a changed trigger starts afresh
    assert api.raw("DELETE", f"/automations/{made['id']}")[0] == 204
    assert api.raw("GET", f"/automations/{made['id']}")[0] == 404


@pytest.mark.parametrize(("body", "loc", "needle"), [
    ({"name": "a", "trigger": {"posture": "Proactive", "within": 3}}, ["body", "trigger", "event", "within"],
     "at least 10 seconds"),
    ({"name": "a", "trigger": {}, "actions": [{"type": "run-deployment", "deployment": "etl/nope"}]},
     ["body", "actions", 0, "deployment"], "deployment 'etl/nope' not found"),
    ({"name": "a", "trigger": {}, "actions": [{"type": "pause-work-pool", "work_pool_name": "nope"}]},
     ["body", "actions", 0, "work_pool_name"], "work pool 'nope' not found"),
    ({"name": "a", "trigger": {"expect": ["x"]}, "actions": [{"type": "emit-event", "event": "{{ x",
      "resource": {"orchestrator.resource.id": "r"}}]}, ["body", "actions", 0, "emit-event", "event"], "template"),
    ({"name": "a", "trigger": {}, "owner_resource": "orchestrator.deployment.x"}, ["body", "owner_resource"], ""),
])
def test_bad_automations_are_a_422_naming_the_field(api: LiveServer, pool: str, body: dict[str, Any],
                                                     loc: list[Any], needle: str) -> None:
    code, answer = api.raw("POST", "/automations", body)
    assert code == 422, answer
    assert any(p["loc"] == loc and needle in p["msg"] for p in answer["detail"]), answer


@pytest.mark.parametrize(("trigger", "action", "refused"), [
    ({"expect": ["prefect.flow-run.*"]}, {"source": "inferred"}, True),
    ({"expect": ["prefect.flow-run.Running"], "match_related": {"prefect.resource.id": "prefect.deployment.*"}},
     {"source": "inferred"}, True),
    ({"expect": ["prefect.flow-run.Completed"]}, {"deployment": "etl/target"}, True),
    ({"expect": ["orchestrator.flow-run.Completed"], "match_related": {"orchestrator.resource.name": "target",
      "orchestrator.resource.role": "deployment"}}, {"deployment": "etl/target"}, True),
    ({"expect": ["orchestrator.flow-run.Completed"], "match_related": {"orchestrator.resource.name": "other",
      "orchestrator.resource.role": "deployment"}}, {"deployment": "etl/target"}, False),
    ({"expect": ["orchestrator.flow-run.Completed"], "threshold": 3, "within": 3600}, {"deployment": "etl/target"},
     False),
    ({"expect": ["orchestrator.flow-run.Running"], "threshold": 3, "within": 3600}, {"deployment": "etl/target"},
     True),
    ({"expect": ["orchestrator.flow-run.Completed"], "match": {"orchestrator.resource.id": "my.thing"}},
     {"deployment": "etl/target"}, False),
    ({"expect": ["file.landed"]}, {"deployment": "etl/target"}, False),
    ({"expect": ["orchestrator.flow-run.Failed"], "posture": "Proactive", "within": 60}, {"deployment": "etl/target"},
     False),
])
def test_the_loop_guard_refuses_run_deployment_that_triggers_itself(
        api: LiveServer, pool: str, trigger: dict[str, Any], action: dict[str, Any], refused: bool) -> None:
    _deploy(api, "target")
    code, answer = api.raw("POST", "/automations", {"name": "a", "trigger": trigger,
                                                    "actions": [{"type": "run-deployment", **action}]})
    if not refused:
        assert code == 201, answer
        return
    assert code == 422, answer
    [problem] = answer["detail"]
    assert problem["loc"] == ["body", "actions", 0] and problem["type"] == "loop", problem
    assert "would trigger itself forever" in problem["msg"]


def test_the_loop_guard_refuses_emitting_what_it_expects_and_any_event_at_all(api: LiveServer) -> None:
    emit = {"type": "emit-event", "event": "prefect.custom.ping", "resource": {"orchestrator.resource.id": "my.x"}}
    code, answer = api.raw("POST", "/automations", {"name": "a", "trigger": {"expect": ["orchestrator.custom.*"]},
                                                    "actions": [emit]})
    assert code == 422 and "emits 'orchestrator.custom.ping'" in answer["detail"][0]["msg"], answer
    code, answer = api.raw("POST", "/automations", {"name": "a", "trigger": {"expect": ["orchestrator.custom.*"],
                                                    "match": {"orchestrator.resource.id": "other.*"}}, "actions": [emit]})
    assert code == 201, answer
    code, answer = api.raw("POST", "/automations", {"name": "a", "trigger": {}, "actions": [{"type": "do-nothing"}]})
    assert code == 422 and answer["detail"][0]["loc"] == ["body", "trigger"], answer
    assert "orchestrator.automation.triggered" in answer["detail"][0]["msg"]


def test_a_deployments_triggers_are_automations_it_owns_with_ids_stable_across_redeploys(
        api: LiveServer, pool: str) -> None:
    first = {**COMPLETED, "match_related": {"prefect.resource.name": "upstream"}, "parameters": {"n": "{{ 1 }}"}}
    second = {"name": "hourly-check", "posture": "Proactive", "expect": ["orchestrator.flow-run.Completed"],
              "within": 3600}
    deployment = _deploy(api, triggers=[first, second])
    owned = _owned(api, deployment["id"])
    assert [a["name"] for a in owned] == ["hourly-check", "nightly__automation_1"]
    assert all(a["owner_resource"] == f"orchestrator.deployment.{deployment['id']}" for a in owned)
    run = owned[1]["actions"][0]
    assert (run["type"], run["deployment_id"], run["parameters"]) == ("run-deployment", deployment["id"], {"n": "{{ 1 }}"})

    assert _owned(api, _deploy(api, triggers=[first, second])["id"]) == owned  # identical redeploy: nothing moves
    _deploy(api, triggers=[first, {**second, "within": 7200}])
    again = _owned(api, deployment["id"])
    assert [a["id"] for a in again] == [a["id"] for a in owned]  # same automations, updated in place
    assert again[0]["trigger"]["within"] == 7200 and again[0]["trigger"]["id"] != owned[0]["trigger"]["id"]
    assert again[1]["trigger"]["id"] == owned[1]["trigger"]["id"]  # unchanged trigger: its state carries on

    _deploy(api, triggers=[second])
    assert [a["id"] for a in _owned(api, deployment["id"])] == [owned[0]["id"]]
    code, answer = api.raw("PATCH", f"/deployments/{deployment['id']}", {"triggers": [first, second]})
    assert code == 200, answer
    assert len(_owned(api, deployment["id"])) == 2
    assert api.raw("DELETE", f"/deployments/{deployment['id']}")[0] == 204
    assert _owned(api, deployment["id"]) == []


def test_a_deployment_deployed_or_updated_without_triggers_owns_no_automation_any_more(
        api: LiveServer, pool: str) -> None:
    deployment = _deploy(api, triggers=[LANDED, {"expect": ["file.moved"]}])
    assert len(_owned(api, deployment["id"])) == 2
    _deploy(api, triggers=[])  # a re-deploy without triggers: its automations go
    assert _owned(api, deployment["id"]) == []
    _deploy(api, triggers=[LANDED])
    code, answer = api.raw("PATCH", f"/deployments/{deployment['id']}", {"triggers": []})
    assert code == 200, answer
    assert _owned(api, deployment["id"]) == []
    _deploy(api, triggers=[LANDED])
    assert api.raw("PATCH", f"/deployments/{deployment['id']}", {"description": "kept"})[0] == 200
    assert len(_owned(api, deployment["id"])) == 1  # an update that leaves the triggers out keeps them


def test_a_failed_deploy_leaves_the_owned_automations_as_they_were(api: LiveServer, pool: str) -> None:
    deployment = _deploy(api, triggers=[{**COMPLETED, "match_related": {"prefect.resource.name": "upstream"}}])
    before = _owned(api, deployment["id"])
    # The first trigger is written, then the second fails the loop guard: the whole upsert rolls back.
    refused = _deploy(api, triggers=[{"expect": ["file.landed"]}, {"name": "loops", **COMPLETED}], status=422)
    assert refused["detail"][0]["loc"] == ["body", "triggers", 1, "actions", 0], refused
    assert _owned(api, deployment["id"]) == before
    bad = _deploy(api, triggers=[{"type": "compound", "triggers": []}], status=422)
    assert bad["detail"][0]["loc"][:4] == ["body", "triggers", 0, "compound"], bad
    assert _owned(api, deployment["id"]) == before


def test_an_owned_automation_can_only_be_enabled_or_disabled(api: LiveServer, pool: str) -> None:
    deployment = _deploy(api, triggers=[{"expect": ["file.landed"]}])
    [owned] = _owned(api, deployment["id"])
    code, answer = api.raw("PATCH", f"/automations/{owned['id']}", {"name": "renamed"})
    assert code == 409 and f"orchestrator.deployment.{deployment['id']}" in answer["detail"], answer
    code, answer = api.raw("DELETE", f"/automations/{owned['id']}")
    assert code == 409 and "disable it" in answer["detail"], answer
    assert api.raw("POST", f"/automations/{owned['id']}/disable")[1]["enabled"] is False
    assert api.raw("PATCH", f"/automations/{owned['id']}", {"enabled": True})[1]["enabled"] is True


def test_secret_job_variables_of_a_run_deployment_action_are_masked_and_kept(api: LiveServer) -> None:
    # The pool marks `token` secret: answers and the UI show the mask; a PATCH sending the mask back
    # keeps the stored value; with the deployment inferred from the event, every value is masked.
    template = {"job_configuration": {"command": "{{ command }}"}, "variables": {"type": "object", "properties": {
        "command": {"type": "string"}, "token": {"type": "string", "secret": True}, "size": {"type": "string"}}}}
    api.client().create_work_pool(schemas.WorkPoolCreate(name="local", type="process", base_job_template=template))
    target = _deploy(api, "target")
    secret, plain = {"token": "tok-Qz19", "size": "big"}, {"token": "********", "size": "big"}
    code, made = api.raw("POST", "/automations", {
        "name": "with-secrets", "trigger": {"expect": ["file.landed"]},
        "actions": [{"type": "run-deployment", "deployment_id": target["id"], "job_variables": secret},
                    {"type": "run-deployment", "source": "inferred", "job_variables": {"size": "small"}}]})
    assert code == 201, made
    assert [a["job_variables"] for a in made["actions"]] == [plain, {"size": "********"}]
    for path in (f"/automations/{made['id']}", "/automations"):
        assert "tok-Qz19" not in str(api.raw("GET", path)[1])
    browser = urllib.request.Request(api.url.removesuffix("/api") + "/automations", headers={"Accept": "text/html"})
    with urllib.request.urlopen(browser, timeout=10) as page:  # the UI's list
        listed = page.read()
    assert b"with-secrets" in listed and b"tok-Qz19" not in listed
    code, changed = api.raw("PATCH", f"/automations/{made['id']}", {"actions": [
        {"type": "run-deployment", "deployment_id": target["id"], "job_variables": {**plain, "size": "huge"}},
        {"type": "run-deployment", "source": "inferred", "job_variables": {"size": "********"}}]})
    assert code == 200, changed
    with api.ctx.sessions() as session:
        stored = session.get(m.Automation, uuid.UUID(made["id"])).actions
    assert [a["job_variables"] for a in stored] == [{"token": "tok-Qz19", "size": "huge"}, {"size": "small"}]
    assert changed["actions"][0]["job_variables"] == {"token": "********", "size": "huge"}
    # The evaluator acts on the stored values, not on what answers show.
    api.client().emit_events([{"id": str(uuid.uuid4()), "event": "file.landed",
                               "resource": {"orchestrator.resource.id": "s3.a"}}])

    def runs() -> list[m.FlowRun]:
        with api.ctx.sessions() as session:
            return list(session.scalars(select(m.FlowRun).where(m.FlowRun.deployment_id == uuid.UUID(target["id"]))))

    assert wait_until("the triggered run", runs, 20)[0].job_variables == {"token": "tok-Qz19", "size": "huge"}
