"""``orch automation ...`` as a user types it, and a deployment's triggers from ``Flow.deploy``
becoming automations it owns -- on both stacks."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.e2e.conftest import Stack
from tests.e2e.test_schedule_cli import ok, refused

pytestmark = pytest.mark.e2e

FLOWS = textwrap.dedent('''
    from orchestrator import flow

    @flow
    def ingest(key: str = "") -> str:
        return key
''')
AUTOMATIONS = textwrap.dedent('''
    automations:
      - name: on-file-landed
        trigger:
          expect: ["file.landed"]
          match: {prefect.resource.id: "s3.bucket.*"}
        actions:
          - type: run-deployment
            deployment: ingest/on-file
            parameters: {key: "{{ event.payload.key }}"}
      - name: ping
        trigger: {expect: ["my.ping"]}
        actions: [{type: do-nothing}]
''')


def test_automation_commands(stack: Stack) -> None:
    stack.start_server()
    ok(stack.orch("work-pool", "create", "local", "--type", "process"), stack)
    (stack.project / "flows.py").write_text(FLOWS)
    ok(stack.python('from flows import ingest; ingest.deploy("on-file", "local", '
                    'triggers=[{"expect": ["prefect.flow-run.Completed"], '
                    '"match_related": {"prefect.resource.name": "upstream"}}])'), stack)
    deployment = stack.get("/deployments/name/ingest/on-file")["id"]

    (stack.project / "automations.yaml").write_text(AUTOMATIONS)
    out = ok(stack.orch("automation", "create", "-f", "automations.yaml"), stack)
    assert "Created automation 'on-file-landed'" in out and "Created automation 'ping'" in out
    listed = ok(stack.orch("automation", "ls"), stack)
    assert "on-file__automation_1" in listed and f"orchestrator.deployment.{deployment}" in listed
    assert "on-file-landed" in listed and "run-deployment" in listed
    shown = json.loads(ok(stack.orch("automation", "inspect", "on-file-landed"), stack))
    assert shown["actions"][0]["deployment_id"] == deployment
    assert shown["trigger"]["match"] == {"orchestrator.resource.id": "s3.bucket.*"}

    ok(stack.orch("automation", "disable", "ping"), stack)
    assert "ping" not in ok(stack.orch("automation", "ls", "--enabled"), stack)
    assert "ping" in ok(stack.orch("automation", "ls", "--disabled"), stack)
    ok(stack.orch("automation", "enable", "ping"), stack)
    ok(stack.orch("automation", "delete", "ping"), stack)
    refused(stack.orch("automation", "inspect", "ping"), "automation 'ping' not found")
    refused(stack.orch("automation", "delete", "on-file__automation_1"), f"orchestrator.deployment.{deployment}")
    ok(stack.orch("automation", "disable", "on-file__automation_1"), stack)

    (stack.project / "bad.yaml").write_text("name: x\ntrigger: {posture: Proactive, within: 3}\n")
    refused(stack.orch("automation", "create", "-f", "bad.yaml"), "within", "at least 10 seconds")
    (stack.project / "loop.json").write_text(json.dumps({"name": "x", "trigger": {"expect": ["prefect.flow-run.*"]},
                                                         "actions": [{"type": "run-deployment", "source": "inferred"}]}))
    refused(stack.orch("automation", "create", "-f", "loop.json"), "would trigger itself forever")
    refused(stack.orch("automation", "create", "-f", "missing.yaml"), "cannot read missing.yaml")
