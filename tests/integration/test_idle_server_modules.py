"""What a server that has run flows holds (issue 22: idle RSS): the real ``orch server start``, after a
pool on a bundled template, deployments of flows with no or simple parameters and their runs, has not
imported jsonschema (plain schemas are answered by ``plain_schemas.py``), the API client (the reaper
reads its one constant from ``orchestrator.retries``) nor urllib.request, and runs no webhook caller
(``triggers/service.py`` starts it when a call is to be made); the API keys' models come with their
routes (``schemas.scopes`` is what every request's check needs); FastAPI's models of an OpenAPI document
are built at the first ``/api/openapi.json`` (``cli/serve.py``), not when FastAPI is imported (the
document itself: test_server_start_modules.py)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_server_start import WAIT_FOR_HEALTH, served_report

# The real ``orch server start``; once health answers, a pool, two deployments and their runs
# through ``http.client`` (already imported by the server, unlike urllib.request), then what the
# process holds; then SIGTERM.
SERVED = WAIT_FOR_HEALTH + r"""
import http.client, json, os, signal, sys, threading

port = int(sys.argv[1])
NO_PARAMETERS = {"additionalProperties": False, "properties": {}, "title": "Parameters", "type": "object"}
SIMPLE = {"additionalProperties": False, "title": "Parameters", "type": "object", "required": ["path"],
          "properties": {"path": {"title": "Path", "type": "string"},
                         "seconds": {"default": 600.0, "title": "Seconds", "type": "number"},
                         "tags": {"anyOf": [{"items": {"type": "string"}, "type": "array"}, {"type": "null"}],
                                  "default": None, "title": "Tags"}}}


def call(method, path, body=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, None if body is None else json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def report_when_healthy():
    try:
        report()
    finally:
        os.kill(os.getpid(), signal.SIGTERM)


def report():
    wait_for_health(port)
    statuses = [call("POST", "/api/work_pools", {"name": "local", "type": "process"})[0]]
    for name, schema, defaults, parameters in (("none", NO_PARAMETERS, {}, {}),
                                               ("simple", SIMPLE, {"seconds": 5}, {"path": "/data", "tags": ["a"]})):
        status, deployment = call("POST", "/api/deployments", {
            "flow_name": "etl", "name": name, "entrypoint": "flows.py:etl", "work_pool_name": "local",
            "parameter_openapi_schema": schema, "enforce_parameter_schema": True, "parameters": defaults})
        statuses.append(status)
        statuses.append(call("POST", f"/api/deployments/{deployment['id']}/runs", {"parameters": parameters})[0])
    held = {name: name in sys.modules
            for name in ("jsonschema", "orchestrator.client", "urllib.request", "orchestrator.schemas.api_keys")}
    threads = sorted(t.name for t in threading.enumerate())
    import fastapi.openapi.models as openapi_models
    import pydantic

    def built():
        return sorted(name for name, value in vars(openapi_models).items() if isinstance(value, type)
                      and issubclass(value, pydantic.BaseModel) and value.__module__ == openapi_models.__name__
                      and value.__pydantic_complete__)

    openapi = {"idle": built(), "status": call("GET", "/api/openapi.json")[0], "after": "OpenAPI" in built()}
    # An invalid run is still refused by jsonschema, with the same 422 as before.
    refused = call("POST", f"/api/deployments/{deployment['id']}/runs", {"parameters": {"path": "/data", "seconds": "soon"}})
    # The API keys' models come with their routes: the first key is created as before (it closes the
    # server, so last).
    status, key = call("POST", "/api/api_keys", {"name": "ops", "scopes": ["worker"], "pools": ["local"]})
    created = {"status": status, "fields": sorted(key), "scopes": key["scopes"], "pools": key["pools"],
               "secret": key["secret"].startswith("orch_"), "models": "orchestrator.schemas.api_keys" in sys.modules}
    print("REPORT " + json.dumps({"statuses": statuses, "held": held, "threads": threads, "refused": refused,
                                  "created": created, "openapi": openapi}), flush=True)


threading.Thread(target=report_when_healthy, daemon=True).start()
sys.argv = ["orch", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
from orchestrator.cli.main import main

main()
"""


def test_a_server_that_ran_plain_flows_holds_no_jsonschema_client_caller_nor_openapi_models(database_url: str, tmp_path: Path) -> None:
    report = served_report(SERVED, tmp_path, database_url)
    assert report["statuses"] == [201, 201, 201, 201, 201]
    assert report["held"] == {"jsonschema": False, "orchestrator.client": False, "urllib.request": False,
                              "orchestrator.schemas.api_keys": False}
    # FastAPI's OpenAPI models: built when the document is first asked for, but for the four FastAPI
    # builds itself at its import (the module's own ``model_rebuild()`` calls, ``fastapi.security``'s
    # default ``OAuthFlows()``); an eager import builds all 36.
    openapi = report["openapi"]
    assert set(openapi["idle"]) <= {"Encoding", "OAuthFlows", "Operation", "Schema"}, openapi["idle"]
    assert openapi["status"] == 200 and openapi["after"]
    assert "automation-calls" not in report["threads"] and "triggers" in report["threads"]
    status, body = report["refused"]
    assert status == 422 and body["code"] == "invalid_input" and body["detail"] == [{"loc": ["body", "parameters", "seconds"], "type": "parameter_schema.type",
                                                "msg": "parameter 'seconds': 'soon' is not of type 'number'"}]
    assert report["created"] == {"status": 201, "scopes": ["worker"], "pools": ["local"], "secret": True, "models": True,
                                 "fields": ["created", "expires", "id", "last_used", "name", "pools", "prefix",
                                            "revoked", "run_id", "scopes", "secret"]}


# The real ``orch server start``: once health answers, a pool, a deployment and a run, then one event
# posted (the events routes load); which of the answers' models a server only built for an answer
# it has not given yet are built; then those answers, then the same look again.
ANSWERS = WAIT_FOR_HEALTH + r"""
import http.client, json, os, signal, sys, threading

port = int(sys.argv[1])
# Built at their first use (``schemas/base.py``'s DEFERRED): answers an idle server never gives.
DEFERRED = {"flow_runs": ("FlowRunPage", "DirectFlowRun", "WaitingReason", "FlowRunRelatives"),
            "deployments": ("JobPreview", "ConcurrencyOptions"), "schedules": ("BackfillResult",),
            "event_queries": ("Event", "EventPage")}


def call(method, path, body=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, None if body is None else json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def built():
    return sorted(name for module, names in DEFERRED.items() for name in names
                  if getattr(sys.modules.get(f"orchestrator.schemas.{module}"), name, None) is not None
                  and getattr(sys.modules[f"orchestrator.schemas.{module}"], name).__pydantic_complete__)


def report_when_healthy():
    try:
        report()
    finally:
        os.kill(os.getpid(), signal.SIGTERM)


def report():
    wait_for_health(port)
    statuses = [call("POST", "/api/work_pools", {"name": "local", "type": "process"})[0]]
    status, deployment = call("POST", "/api/deployments", {"flow_name": "etl", "name": "nightly", "entrypoint": "flows.py:etl",
                                                           "work_pool_name": "local"})
    statuses.append(status)
    status, run = call("POST", f"/api/deployments/{deployment['id']}/runs", {})
    statuses.append(status)
    reading_before_events = "orchestrator.schemas.event_queries" in sys.modules
    event = {"event": "etl.done", "resource": {"orchestrator.resource.id": "etl.table.users"}, "payload": {"rows": 3}}
    statuses.append(call("POST", "/api/events", [event])[0])
    idle = built()
    answers = {
        "page": call("GET", f"/api/flow_runs?deployment_id={deployment['id']}"),
        "waiting": call("GET", f"/api/flow_runs/{run['id']}/waiting_reason"),
        "relatives": call("GET", f"/api/flow_runs/{run['id']}/relatives"),
        "preview": call("GET", f"/api/deployments/{deployment['id']}/job_preview"),
        "events": call("GET", "/api/events?event=etl.*"),
        "filtered": call("POST", "/api/events/filter", {"filter": {"resource": {"id": ["etl.table.*"]}}, "limit": 5}),
    }
    print("REPORT " + json.dumps({"statuses": statuses, "reading_before_events": reading_before_events, "idle": idle,
                                  "after": built(), "answers": answers, "run": run["id"], "deployment": deployment["id"]}),
          flush=True)


threading.Thread(target=report_when_healthy, daemon=True).start()
sys.argv = ["orch", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
from orchestrator.cli.main import main

main()
"""


def test_answers_an_idle_server_never_gives_are_built_at_their_first_answer(database_url: str, tmp_path: Path) -> None:
    report = served_report(ANSWERS, tmp_path, database_url)
    assert report["statuses"] == [201, 201, 201, 202]
    # The reading side of events is not even imported until the events routes load (the first event
    # posted loads them), and neither those answers' models nor the eight others are built by a
    # server that ran a flow and recorded an event.
    assert report["reading_before_events"] is False
    assert report["idle"] == []
    answers, run, deployment = report["answers"], report["run"], report["deployment"]
    status, page = answers["page"]
    assert status == 200 and [item["id"] for item in page["items"]] == [run] and page["total"] == 1
    assert page["items"][0]["state"]["type"] == "SCHEDULED" and page["total_capped"] is False
    status, waiting = answers["waiting"]
    assert status == 200 and waiting["flow_run_id"] == run and waiting["state"]["type"] == "SCHEDULED"
    assert [cause["code"] for cause in waiting["causes"]] == ["NO_WORKER"] and "no online worker" in waiting["reason"]
    assert answers["relatives"] == [200, {"parent_task_run_id": None, "parent": None, "children": [],
                                          "children_capped": False}]
    status, preview = answers["preview"]
    assert status == 200 and preview["deployment_id"] == deployment and preview["work_pool_name"] == "local"
    assert preview["work_pool_type"] == "process" and set(preview) == {"deployment_id", "work_pool_name", "work_pool_type",
                                                                          "job_variables", "job"}
    for name in ("events", "filtered"):
        status, events = answers[name]
        assert status == 200 and [e["event"] for e in events["events"]] == ["etl.done"], events
        assert events["events"][0]["resource"] == {"orchestrator.resource.id": "etl.table.users"}
        assert events["events"][0]["payload"] == {"rows": 3} and events["next_page"] is None
        assert set(events["events"][0]) == {"id", "occurred", "event", "resource", "related", "payload", "follows",
                                            "received"}
    # Each answer built its model, once asked for.
    assert report["after"] == ["Event", "EventPage", "FlowRunPage", "FlowRunRelatives", "JobPreview", "WaitingReason"]
