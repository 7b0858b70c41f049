"""``orch server start`` serves its API without ``pydantic.v1``, which FastAPI imports only to refuse
v1 models (``cli/serve.py``): the real server, once it has loaded every route family (the OpenAPI
document loads them all), answers the same document as an app built in this process and serves a
lazily loaded family's routes, and has still not imported it."""

from __future__ import annotations

from pathlib import Path

from orchestrator.server.api.app import create_app
from orchestrator.settings import Settings
from pools.broker import MemoryBroker
from tests.integration.test_server_start import served_report

# The real ``orch server start``; once health answers: the OpenAPI document, a request to each of
# two lazy families, and whether pydantic.v1 was imported; then SIGTERM.
SERVED = r"""
import json, os, signal, sys, threading, urllib.request

port = sys.argv[1]


def get(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return response.status, json.loads(response.read())


def report_when_healthy():
    while True:
        try:
            if get("/api/health")[0] == 200:
                break
        except OSError:  # not listening yet
            threading.Event().wait(0.02)
    document = get("/api/openapi.json")[1]
    answers = {path: get(path) for path in ("/api/automations", "/api/events?limit=1")}
    print("REPORT " + json.dumps({"document": document, "answers": answers, "v1": sys.modules.get("pydantic.v1") is not None}),
          flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


threading.Thread(target=report_when_healthy, daemon=True).start()
sys.argv = ["orch", "server", "start", "--host", "127.0.0.1", "--port", port]
from orchestrator.cli.main import main

main()
"""


def test_the_served_api_leaves_out_pydantic_v1_and_is_the_same(database_url: str, tmp_path: Path) -> None:
    report = served_report(SERVED, tmp_path, database_url)
    assert report["v1"] is False
    assert report["answers"]["/api/automations"] == [200, []]
    assert report["answers"]["/api/events?limit=1"][0] == 200
    here = create_app(Settings(home=tmp_path / "here", database_url=f"sqlite:///{tmp_path / 'here.db'}"),
                      broker=MemoryBroker(), run_services=False)
    assert report["document"] == here.openapi()
