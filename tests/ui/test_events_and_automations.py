"""The events feed (filters, older pages by the API's key, live, each event opened) and the
automations page (list, enable / disable, delete, create from YAML or JSON with the API's 422),
and a deployment's own automations on its page."""

from __future__ import annotations

import json
import urllib.request
import uuid
from typing import Any

import pytest

from tests.ui.conftest import UIStack, expect, screenshot

pytestmark = pytest.mark.ui


def patch(ui: UIStack, path: str, body: Any) -> None:
    request = urllib.request.Request(f"{ui.api_url}{path}", data=json.dumps(body).encode(), method="PATCH",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def emit(ui: UIStack, name: str, resource_id: str, **payload: Any) -> dict[str, Any]:
    event = {"id": str(uuid.uuid4()), "occurred": "2026-01-01T00:00:00Z", "event": name,
             "resource": {"orchestrator.resource.id": resource_id, "orchestrator.resource.name": "t1"},
             "related": [{"orchestrator.resource.id": "acme.bucket.raw", "orchestrator.resource.role": "bucket"}],
             "payload": payload}
    ui.post("/events", [event])
    return event


def test_events_feed_filters_pages_opens_and_goes_live(ui: UIStack, page: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    for i in range(55):
        emit(ui, f"acme.{tag}.loaded", f"acme.table.{tag}.{i}", rows=i)
    emit(ui, f"acme.{tag}.other", f"acme.table.{tag}.x")
    page.goto(ui.base + "/events")
    page.get_by_label("Event name").fill(f"acme.{tag}.load*")
    page.get_by_role("button", name="Filter").click()
    items = page.locator("#event-feed > li")
    expect(items).to_have_count(50)
    expect(page.get_by_role("link", name="Newest events")).to_have_count(0)
    page.get_by_role("link", name="Older events").click()
    expect(items).to_have_count(5)
    expect(page.get_by_role("link", name="Older events")).to_have_count(0)
    expect(page.locator("#feed-status")).to_contain_text("Not live")
    page.get_by_role("link", name="Newest events").click()
    expect(items).to_have_count(50)

    # By resource id, and by related resource id.
    page.goto(f"{ui.base}/events?resource=acme.table.{tag}.7")
    expect(items).to_have_count(1)
    item = items.first
    item.locator("summary").click()  # expand: resource, related, payload
    body = item.locator(".event-body")
    expect(body).to_contain_text(f"acme.table.{tag}.7")
    expect(body).to_contain_text("acme.bucket.raw")
    expect(body).to_contain_text('"rows": 7')
    page.goto(f"{ui.base}/events?related=acme.bucket.*&event=acme.{tag}.other")
    expect(items).to_have_count(1)
    page.goto(f"{ui.base}/events?event=acme.{tag}.*&until=2025-12-31T00:00")
    expect(page.get_by_text("No events.")).to_be_visible()
    page.goto(f"{ui.base}/events?since=not-a-time")
    expect(page.get_by_role("alert")).to_contain_text("Invalid isoformat")

    # Live: new events appear at the top without reload (the stream filtered as the page is).
    page.goto(f"{ui.base}/events?event=acme.{tag}.*")
    expect(page.locator("#feed-status")).to_contain_text("Live")
    page.evaluate("window.samePage = true")
    expect(page.locator("#event-feed")).to_have_attribute("data-live", "open")  # the stream listens
    fresh = emit(ui, f"acme.{tag}.landed", f"acme.table.{tag}.new", rows=99)
    emit(ui, "acme.elsewhere.landed", "acme.table.elsewhere")  # filtered out
    expect(items.first).to_have_attribute("data-event-id", fresh["id"], timeout=20_000)
    expect(items.first).to_contain_text(f"acme.{tag}.landed")
    expect(page.locator("#event-feed")).not_to_contain_text("acme.elsewhere")
    items.first.locator("summary").click()
    expect(items.first.locator(".event-body")).to_contain_text('"rows": 99')
    assert page.evaluate("window.samePage") is True
    screenshot(page, "events")


YAML = """\
name: {name}
description: made in the browser
trigger:
  expect: [orchestrator.flow-run.Failed]
  match: {{orchestrator.resource.id: "orchestrator.flow-run.*"}}
  threshold: 3
  within: 600
actions:
  - type: cancel-flow-run
"""


def test_automations_create_from_yaml_errors_enable_disable_delete(ui: UIStack, page: Any) -> None:
    name = f"ui-made-{uuid.uuid4().hex[:6]}"
    page.goto(ui.base + "/automations")
    text = page.get_by_label("Definition (YAML or JSON")
    # The API's 422, with where: a misspelt key of the trigger.
    text.fill("name: bad\ntrigger:\n  expects: [x]\n")
    page.get_by_role("button", name="Create automation").click()
    problems = page.locator("#automation-text-error")
    expect(problems).to_contain_text("expects")
    expect(text).to_have_attribute("aria-invalid", "true")
    text.fill("name: [unclosed\n")
    page.get_by_role("button", name="Create automation").click()
    expect(problems).to_contain_text("not valid YAML (line")
    text.fill('{"name": ')
    page.get_by_role("button", name="Create automation").click()
    expect(problems).to_contain_text("not valid JSON")

    text.fill(YAML.format(name=name))
    page.get_by_role("button", name="Create automation").click()
    row = page.locator("main table tbody tr", has_text=name)
    expect(row).to_contain_text("3 × orchestrator.flow-run.Failed within 10 min")
    expect(row).to_contain_text("cancel-flow-run")
    expect(row).to_contain_text("enabled")
    [made] = [a for a in ui.get("/automations") if a["name"] == name]
    assert made["description"] == "made in the browser"
    row = page.locator(f'tr[data-automation="{made["id"]}"]')

    row.get_by_role("button", name=f"Disable {name}", exact=True).click()
    expect(row.get_by_text("disabled")).to_be_visible()
    assert ui.get(f"/automations/{made['id']}")["enabled"] is False
    row.get_by_role("button", name=f"Enable {name}", exact=True).click()
    expect(row.get_by_text("enabled")).to_be_visible()
    assert ui.get(f"/automations/{made['id']}")["enabled"] is True

    # JSON works as well.
    other = f"{name}-json"
    text.fill(json.dumps({"name": other, "trigger": {"expect": ["acme.*"]}, "actions": [{"type": "do-nothing"}]}))
    page.get_by_role("button", name="Create automation").click()
    expect(page.locator("main table tbody tr", has_text=other)).to_contain_text("each acme.*")
    screenshot(page, "automations")

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"Delete {name}", exact=True).click()
    expect(row).to_have_count(0)
    expect(page.locator("main table tbody tr", has_text=other)).to_have_count(1)
    assert all(a["id"] != made["id"] for a in ui.get("/automations"))


def test_owned_automations_say_whose_and_show_on_the_deployment(ui: UIStack, page: Any) -> None:
    deployment = ui.deployment()
    trigger = {"expect": ["acme.ready"], "enabled": True, "name": "on-ready"}
    patch(ui, f"/deployments/{deployment['id']}", {"triggers": [trigger]})
    owned = [a for a in ui.get(f"/automations?owner=orchestrator.deployment.{deployment['id']}")]
    assert owned, "the deployment's trigger became an automation"
    page.goto(ui.base + "/automations")
    row = page.locator(f'tr[data-automation="{owned[0]["id"]}"]')
    expect(row).to_contain_text("owned by greet/hello")
    expect(row.get_by_role("button", name="Delete")).to_have_count(0)
    expect(row.get_by_role("link", name="greet/hello")).to_have_attribute("href", f"/deployments/{deployment['id']}")
    page.goto(f"{ui.base}/deployments/{deployment['id']}")
    section = page.get_by_role("region", name="Triggers and automations")
    expect(section).to_contain_text("each acme.ready")
    section.get_by_role("button", name=f"Disable {owned[0]['name']}").click()
    expect(section.get_by_text("disabled")).to_be_visible()
    assert ui.get(f"/automations/{owned[0]['id']}")["enabled"] is False
