"""Layout, navigation and the dashboard, in a real browser."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui.conftest import PHONE, UIStack, expect, screenshot

pytestmark = pytest.mark.ui

def test_navigation_is_labelled_and_usable_by_keyboard(ui: UIStack, page: Any) -> None:
    page.goto(ui.base + "/")
    nav = page.get_by_role("navigation", name="Main")
    for label in ("Dashboard", "Deployments", "Flow runs", "Task runs", "Work pools", "Events", "Automations",
                  "API docs"):
        expect(nav.get_by_role("link", name=label)).to_be_visible()
    expect(nav.get_by_role("link", name="Dashboard")).to_have_attribute("aria-current", "page")
    # The first Tab reaches "Skip to content"; keyboard alone moves between pages.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    nav.get_by_role("link", name="Deployments").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(ui.base + "/deployments")
    expect(page.get_by_role("heading", level=1)).to_have_text("Deployments")

def test_phone_width_has_no_sideways_scroll(ui: UIStack, page: Any) -> None:
    page.set_viewport_size(PHONE)
    deployment = ui.deployment()
    for path in ("/", "/deployments", f"/deployments/{deployment['id']}", "/runs", "/task-runs", "/pools",
                 "/pools/local", "/events", "/automations"):
        page.goto(ui.base + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} is {overflow} px wider than a 375 px screen"

def test_dashboard_counts_runs_by_state_and_lists_pools_needing_attention(ui: UIStack, page: Any) -> None:
    deployment = ui.deployment()
    # A paused pool with no worker: shown as needing attention.
    ui.post("/work_pools", {"name": "idle", "paused": True})
    run = ui.post(f"/deployments/{deployment['id']}/runs", {"parameters": {"count": 1}})
    from tests.ui.conftest import wait_for_state

    wait_for_state(ui, run["id"], "COMPLETED")
    completed = ui.get("/flow_runs?state=COMPLETED&limit=1")["total"]
    page.goto(ui.base + "/")
    expect(page.locator('[data-count="COMPLETED"]')).to_have_text(str(completed))
    attention = page.get_by_role("region", name="Work pools needing attention")
    expect(attention.get_by_role("link", name="idle")).to_be_visible()
    expect(attention).to_contain_text("paused")
    expect(attention.get_by_role("link", name="local")).to_have_count(0)  # it has its online worker
    screenshot(page, "dashboard")


def test_dashboard_counts_follow_the_event_stream(ui: UIStack, page: Any) -> None:
    deployment = ui.deployment()
    page.goto(ui.base + "/")
    completed = page.locator('[data-count="COMPLETED"]')
    before = int(completed.inner_text())
    page.evaluate("window.samePage = true")
    ui.post(f"/deployments/{deployment['id']}/runs", {"parameters": {"count": 1}})
    expect(completed).not_to_have_text(str(before), timeout=60_000)  # without reload
    assert int(completed.inner_text()) > before
    assert page.evaluate("window.samePage") is True
