"""Work-pool pages: status, workers and heartbeats, queues with pause, the pool's limit and its
base job template, changed through the API with its errors next to the field."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui.conftest import UIStack, expect, screenshot

pytestmark = pytest.mark.ui

def test_pool_list_shows_status_and_workers(ui: UIStack, page: Any) -> None:
    page.goto(ui.base + "/pools")
    row = page.locator("main table tbody tr", has_text="local")
    expect(row).to_contain_text("READY")
    expect(row).to_contain_text("1 online")
    expect(row).to_contain_text("process")
    screenshot(page, "pools")

def test_pool_page_queues_limit_and_template(ui: UIStack, page: Any) -> None:
    ui.post("/work_pools/local/queues", {"name": "urgent", "priority": 5, "concurrency_limit": 2})
    page.goto(ui.base + "/pools/local")
    expect(page.locator("#pool-status")).to_have_text("READY")
    workers = page.get_by_role("region", name="Workers")
    expect(workers).to_contain_text("ONLINE")
    expect(workers).to_contain_text("last heartbeat")
    queue = page.locator('tr[data-queue="urgent"]')
    expect(queue).to_contain_text("5")
    expect(queue).to_contain_text("2")
    screenshot(page, "pool")

    queue.get_by_role("button", name="Pause queue urgent").click()
    expect(queue.get_by_text("paused")).to_be_visible()
    assert ui.get("/work_pools/local/queues/urgent")["paused"] is True
    queue.get_by_role("button", name="Resume queue urgent").click()
    expect(queue.get_by_text("open")).to_be_visible()

    limit = page.get_by_label("Concurrency limit (empty: unlimited)")
    limit.fill("-3")
    limit.press("Enter")
    expect(page.locator("#pool-limit-error")).to_contain_text("greater than or equal to 0")
    assert ui.get("/work_pools/local")["concurrency_limit"] is None
    limit.fill("4")
    with page.expect_navigation():  # saved, the page reloads with the pool as the API has it
        limit.press("Enter")
    expect(page.get_by_label("Concurrency limit (empty: unlimited)")).to_have_value("4")
    assert ui.get("/work_pools/local")["concurrency_limit"] == 4
    page.get_by_label("Concurrency limit (empty: unlimited)").fill("")
    with page.expect_navigation():
        page.get_by_label("Concurrency limit (empty: unlimited)").press("Enter")
    expect(page.get_by_label("Concurrency limit (empty: unlimited)")).to_have_value("")
    assert ui.get("/work_pools/local")["concurrency_limit"] is None

    template = page.get_by_label("Template (JSON: job_configuration and variables)")
    before = ui.get("/work_pools/local")["base_job_template"]
    template.fill('{"job_configuration": {}, "variables": {"type": "object", "properties": {"x": {"type": "nope"}}}}')
    page.get_by_role("button", name="Save template").click()
    expect(page.locator("#pool-template-error")).to_be_visible()
    assert ui.get("/work_pools/local")["base_job_template"] == before
    template.fill("{not json")
    page.get_by_role("button", name="Save template").click()
    expect(page.locator("#pool-template-error")).to_contain_text("not valid JSON")


def test_pool_pages_update_live_from_the_event_stream(ui: UIStack, page: Any) -> None:
    """Pause and resume through the API, and a worker's first heartbeat, show on the open pages
    without a reload (the marker set on the page survives)."""
    from orchestrator import schemas

    ui.post("/work_pools", {"name": "live-pool", "type": "process"})
    page.goto(ui.base + "/pools/live-pool")
    page.evaluate("window.notReloaded = true")
    queue = page.locator('tr[data-queue="default"]')
    expect(queue).to_contain_text("open")
    expect(page.get_by_role("region", name="Workers")).to_contain_text("No worker has polled this pool")

    ui.client.update_work_queue("live-pool", "default", schemas.WorkQueueUpdate(paused=True))
    expect(queue).to_contain_text("paused")
    ui.client.update_work_pool("live-pool", schemas.WorkPoolUpdate(paused=True))
    expect(page.get_by_role("button", name="Resume pool")).to_be_visible()
    ui.post("/work_pools/live-pool/workers/heartbeat", {"name": "remote-worker"})
    workers = page.get_by_role("region", name="Workers")
    expect(workers).to_contain_text("remote-worker")
    expect(workers).to_contain_text("ONLINE")
    expect(page.locator("#pool-status")).to_have_text("READY")
    assert page.evaluate("window.notReloaded") is True

    page.goto(ui.base + "/pools")
    page.evaluate("window.notReloaded = true")
    row = page.locator('tr[data-pool="live-pool"]')
    expect(row.get_by_text("paused")).to_be_visible()
    ui.client.update_work_pool("live-pool", schemas.WorkPoolUpdate(paused=False))
    expect(row.get_by_text("paused")).to_have_count(0)
    assert page.evaluate("window.notReloaded") is True


def test_job_preview_shows_the_rendered_job_with_secrets_masked(ui: UIStack, page: Any) -> None:
    template = {"job_configuration": {"command": "{{ command }}", "env": {"API_TOKEN": "{{ api_token }}"},
                                      "stream_output": "{{ stream_output }}"},
                "variables": {"type": "object", "properties": {
                    "command": {"type": "string"}, "stream_output": {"type": "boolean", "default": False},
                    "api_token": {"type": "string", "secret": True, "default": "never-shown-Yt31"},
                    "env": {"type": "object", "additionalProperties": {"type": "string"}, "default": {}}}}}
    ui.post("/work_pools", {"name": "preview-pool", "type": "process", "base_job_template": template})
    deployed = ui.python(
        "from flows import greet\n"
        "greet.deploy(name='previewed', work_pool_name='preview-pool', parameters={'name': 'p'},"
        " job_variables={'env': {'REGION': 'eu-west-1'}, 'command': 'python -m orchestrator.engine'})")
    assert deployed.returncode == 0, deployed.stderr
    page.goto(ui.base + "/pools/preview-pool")
    page.get_by_label("Deployment").select_option(label="greet/previewed")
    page.get_by_role("button", name="Preview job").click()
    job = page.get_by_label("Rendered job")
    expect(job).to_contain_text('"REGION": "eu-west-1"')
    expect(job).to_contain_text('"API_TOKEN": "********"')
    expect(job).to_contain_text('"command": "python -m orchestrator.engine"')
    assert "never-shown-Yt31" not in page.content()
    screenshot(page, "pool-job-preview")
