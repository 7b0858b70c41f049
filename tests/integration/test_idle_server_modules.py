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

from tests.integration.test_server_start import served_report

# The real ``orch server start``; once health answers, a pool, two deployments and their runs
# through ``http.client`` (already imported by the server, unlike urllib.request), then what the
# process holds; then SIGTERM.
SERVED = r"""
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
    while True:
        try:
            if call("GET", "/api/health")[0] == 200:
                break
        except OSError:  # not listening yet
            threading.Event().wait(0.02)
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
