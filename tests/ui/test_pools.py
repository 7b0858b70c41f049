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
