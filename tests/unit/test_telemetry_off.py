"""FastAPI's own OpenTelemetry (``FastAPI(telemetry=...)``) is off in the server's app when the
OpenTelemetry SDK is not installed and ``FASTAPI_OTEL_AUTO_CONFIGURE`` does not ask for it: FastAPI
would otherwise look at the global providers at every request (``api/app.py::telemetry``). A
provider set in the process is then not asked for a tracer, and the answers are the same. Run in
a fresh interpreter (the global providers can be set once per process)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json
from fastapi.testclient import TestClient
from opentelemetry import trace

asked = []

class Recording(trace.TracerProvider):  # a provider of the API's, as a vendor's would be (no SDK)
    def get_tracer(self, *args, **kwargs):
        asked.append(args[0] if args else "")
        return trace.NoOpTracer()

trace.set_tracer_provider(Recording())
from orchestrator.server.api.app import create_app
from orchestrator.settings import Settings

with TestClient(create_app(Settings(), run_services=False)) as client:
    answers = [(r.status_code, r.json()) for r in (client.get("/api/health"), client.get("/api/nothing"),
                                                   client.post("/api/flow_runs/not-a-uuid/state", content=b"{"))]
print(json.dumps({"asked": asked, "answers": answers}))
"""


def run(**env: str) -> dict:
    environ = {key: value for key, value in os.environ.items() if key != "FASTAPI_OTEL_AUTO_CONFIGURE"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120,
                            check=False, env={**environ, "ORCH_HOME": tempfile.mkdtemp(prefix="orch-otel-"), **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.skipif(importlib.util.find_spec("opentelemetry.sdk") is not None,
                    reason="the OpenTelemetry SDK is installed: FastAPI's telemetry stays on")
def test_without_the_sdk_no_tracer_is_asked_for_and_the_answers_are_the_same() -> None:
    found = run()
    assert found["asked"] == []
    (health, health_body), (missing, missing_body), (invalid, invalid_body) = found["answers"]
    assert (health, missing, invalid) == (200, 404, 422)
    assert missing_body["code"] == "route_not_found" and invalid_body["code"] == "invalid_input"
    assert health_body
