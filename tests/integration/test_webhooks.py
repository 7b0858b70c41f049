"""Incoming webhooks on a live server: a call with the secret becomes the event its template
makes (JSON, form or text body; headers; query), and that event fires an automation; a wrong
secret is 401 and a failing template 422."""

from __future__ import annotations

import urllib.parse
import urllib.request
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator import schemas
from orchestrator.server.db import models as m
from tests.conftest import LiveServer
from tests.harness import wait_until

TEMPLATE = ('{"event": "file.landed", "resource": {"orchestrator.resource.id": "s3.{{ body.bucket }}"}, '
            '"payload": {"key": {{ body.key | tojson }}, "agent": {{ headers["user-agent"] | tojson }}, '
            '"q": {{ query.tag | tojson }}}}')


def _post(url: str, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": content_type, "User-Agent": "tester", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _landed(api: LiveServer) -> list[m.Event]:
    with api.ctx.sessions() as session:
        return list(session.scalars(select(m.Event).where(m.Event.event == "file.landed").order_by(m.Event.seq)))


@pytest.fixture
def hook(api: LiveServer) -> dict[str, Any]:
    made = api.client().create_webhook("files", TEMPLATE)
    assert made["secret"] and made["url_path"].startswith("/api/hooks/files-")
    return made


def test_a_json_call_becomes_the_event_and_fires_an_automation(api: LiveServer, hook: dict[str, Any]) -> None:
    client = api.client()
    client.create_work_pool(schemas.WorkPoolCreate(name="local", type="process"))
    code, deployment = api.raw("POST", "/deployments", {"flow_name": "etl", "name": "load",
                                                         "entrypoint": "flows.py:etl", "work_pool_name": "local"})
    client.create_automation({"name": "on-file", "trigger": {"expect": ["file.landed"]}, "actions": [
        {"type": "run-deployment", "deployment_id": deployment["id"], "parameters": {"key": "{{ event.payload.key }}"}}]})
    base = api.url.removesuffix("/api")
    code, body = _post(f"{base}{hook['url_path']}?tag=t1", b'{"bucket": "raw", "key": "a/b.csv"}',
                       "application/json", {"X-Orch-Webhook-Secret": hook["secret"]})
    assert code == 202, body
    event = _landed(api)[0]
    assert event.resource["orchestrator.resource.id"] == "s3.raw"
    assert event.payload == {"key": "a/b.csv", "agent": "tester", "q": "t1"}

    def run() -> list[m.FlowRun]:
        with api.ctx.sessions() as session:
            return list(session.scalars(select(m.FlowRun).where(m.FlowRun.deployment_id == uuid.UUID(deployment["id"]))))
    assert wait_until("the triggered run", run, 20)[0].parameters == {"key": "a/b.csv"}


def test_form_body_and_secret_in_the_query(api: LiveServer, hook: dict[str, Any]) -> None:
    base = api.url.removesuffix("/api")
    data = urllib.parse.urlencode({"bucket": "in", "key": "x"}).encode()
    code, body = _post(f"{base}{hook['url_path']}?tag=t&secret={hook['secret']}", data,
                       "application/x-www-form-urlencoded")
    assert code == 202, body
    assert _landed(api)[0].payload["key"] == "x"


def test_wrong_secret_is_401_and_a_bad_template_422(api: LiveServer, hook: dict[str, Any]) -> None:
    base = api.url.removesuffix("/api")
    assert _post(f"{base}{hook['url_path']}", b"{}", "application/json",
                 {"X-Orch-Webhook-Secret": "wrong"})[0] == 401
    assert _post(f"{base}/api/hooks/nope", b"{}", "application/json", {"X-Orch-Webhook-Secret": "x"})[0] == 401
    broken = api.client().create_webhook("broken", '{"event": "x", "resource": {}}')
    code, body = _post(f"{base}{broken['url_path']}", b"{}", "application/json",
                       {"X-Orch-Webhook-Secret": broken["secret"]})
    assert code == 422 and "orchestrator.resource.id" in body
    assert api.raw("POST", "/webhooks", {"name": "bad", "template": "{{ unclosed"})[0] == 422
    assert _landed(api) == []


def test_list_and_delete(api: LiveServer, hook: dict[str, Any]) -> None:
    client = api.client()
    assert [w["name"] for w in client.list_webhooks()] == ["files"]
    assert api.raw("POST", "/webhooks", {"name": "files", "template": "{}"})[0] == 409
    client.delete_webhook("files")
    assert client.list_webhooks() == []
