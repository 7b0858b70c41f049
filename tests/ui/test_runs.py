"""Flow-run pages: filters and the next page, the run with its timeline, live logs, cancel seen
live, run again."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.ui.conftest import UIStack, expect, screenshot, wait_for_state

FAR = "2099-06-01T00:00:00Z"

pytestmark = pytest.mark.ui

def test_list_filters_and_pages(ui: UIStack, page: Any) -> None:
    deployment = ui.deployment()
    made = [ui.post(f"/deployments/{deployment['id']}/runs",
                    {"tags": ["paging"], "scheduled_time": FAR, "parameters": {"name": f"p{i}"}}) for i in range(53)]
    page.goto(ui.base + "/runs")
    page.get_by_label("Tag").fill("paging")
    page.get_by_label("State").select_option("SCHEDULED")
    page.get_by_label("Deployment").select_option(label="greet/hello")
    page.get_by_label("Work pool").select_option("local")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("main table tbody tr")
    expect(rows).to_have_count(50)
    shown = set(rows.locator("a").all_inner_texts())
    expect(page.get_by_role("link", name="Newer runs")).to_have_count(0)
    page.get_by_role("link", name="Older runs").click()
    expect(rows).to_have_count(3)
    shown |= set(rows.locator("a").all_inner_texts())
    assert shown == {r["name"] for r in made}
    expect(page.get_by_role("link", name="Older runs")).to_have_count(0)
    expect(page.get_by_label("Tag")).to_have_value("paging")  # the filters stay as chosen
    page.get_by_role("link", name="Newer runs").click()
    expect(rows).to_have_count(50)
    assert set(rows.locator("a").all_inner_texts()) | shown == shown
    expect(page.get_by_role("link", name="Newer runs")).to_have_count(0)
    expect(page.get_by_role("link", name="Older runs")).to_have_count(1)
    page.goto(ui.base + "/runs?tag=paging&state=COMPLETED")
    expect(page.get_by_text("No runs.")).to_be_visible()
    page.goto(ui.base + "/runs?tag=paging")
    screenshot(page, "runs")
    for run in made:
        ui.post(f"/flow_runs/{run['id']}/cancel", {})


def test_time_filter(ui: UIStack, page: Any) -> None:
    deployment = ui.deployment()
    times = ["2098-01-01T00:00:00Z", "2098-02-01T00:00:00Z", "2098-03-01T00:00:00Z"]
    made = [ui.post(f"/deployments/{deployment['id']}/runs", {"tags": ["timed"], "scheduled_time": t}) for t in times]
    page.goto(ui.base + "/runs?tag=timed")
    page.get_by_label("Expected start from (UTC)").fill("2098-01-15T00:00:00")
    page.get_by_label("Expected start until (UTC)").fill("2098-02-15T00:00:00")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("main table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(made[1]["name"])
    expect(page.get_by_label("Expected start from (UTC)")).to_have_value("2098-01-15T00:00")  # the browser drops :00 seconds
    for run in made:
        ui.post(f"/flow_runs/{run['id']}/cancel", {})


def test_a_run_started_by_the_api_appears_and_completes_without_reload(ui: UIStack, page: Any) -> None:
    deployment = ui.deployment()
    page.goto(ui.base + "/runs?tag=live-list")
    expect(page.get_by_text("No runs.")).to_be_visible()
    page.evaluate("window.samePage = true")
    run = ui.post(f"/deployments/{deployment['id']}/runs",
                  {"tags": ["live-list"], "parameters": {"name": "listed", "count": 1}})
    row = page.locator(f'tr[data-run="{run["id"]}"]')
    expect(row).to_be_visible(timeout=30_000)
    expect(row.locator("[data-state]")).to_have_text("Completed", timeout=60_000)
    assert page.evaluate("window.samePage") is True


def test_bulk_cancel_cancels_the_selected_runs(ui: UIStack, page: Any) -> None:
    deployment = ui.deployment()
    made = [ui.post(f"/deployments/{deployment['id']}/runs", {"tags": ["bulk"], "scheduled_time": FAR})
            for _ in range(3)]
    page.goto(ui.base + "/runs?tag=bulk")
    cancel = page.get_by_role("button", name="Cancel selected")
    expect(cancel).to_be_disabled()
    for run in made[:2]:
        page.get_by_label(f"Select {run['name']}").check()
    cancel.click()
    expect(page.locator("#flash")).to_have_text("Cancelling 2 runs.")
    for run in made[:2]:  # seen live, from the event stream
        expect(page.locator(f'tr[data-run="{run["id"]}"] [data-state]')).to_have_text("Cancelled")
        expect(page.get_by_label(f"Select {run['name']}")).to_be_disabled()
        assert ui.run(run["id"])["state"]["type"] == "CANCELLED"
    expect(page.locator(f'tr[data-run="{made[2]["id"]}"] [data-state]')).to_have_text("Scheduled")
    assert ui.run(made[2]["id"])["state"]["type"] == "SCHEDULED"
    ui.post(f"/flow_runs/{made[2]['id']}/cancel", {})

def test_logs_follow_live_and_the_run_completes(ui: UIStack, page: Any) -> None:
    deployment = ui.deployment()
    run = ui.post(f"/deployments/{deployment['id']}/runs", {"parameters": {"count": 6, "nap": 0.4, "name": "live"}})
    page.goto(f"{ui.base}/runs/{run['id']}")
    logs = page.get_by_role("log")
    expect(logs).to_contain_text("hello live #0", timeout=60_000)
    # Lines keep arriving on the same page (no reload): the last one is written ~2 s after the first.
    page.evaluate("window.samePage = true")
    expect(logs).to_contain_text("hello live #5", timeout=60_000)
    expect(page.locator("#run-state")).to_have_text("Completed", timeout=60_000)
    assert page.evaluate("window.samePage") is True
    expect(logs.locator(".log", has_text="hello live #")).to_have_count(6)
    timeline = page.get_by_role("region", name="State timeline")
    for name in ("Scheduled", "Pending", "Running", "Completed"):
        expect(timeline.get_by_text(name, exact=True)).to_be_visible()
    expect(page.locator("#run-worker")).not_to_have_text("—")
    expect(page.locator("#run-infra")).not_to_have_text("—")
    expect(page.get_by_role("button", name="Cancel run")).to_be_hidden()
    screenshot(page, "run")

def test_cancel_a_running_run_and_see_it_cancelled_live(ui: UIStack, page: Any) -> None:
    deployment = ui.deployment()
    run = ui.post(f"/deployments/{deployment['id']}/runs", {"parameters": {"count": 200, "nap": 0.5, "name": "long"}})
    page.goto(f"{ui.base}/runs/{run['id']}")
    expect(page.locator("#run-state")).to_have_text("Running", timeout=60_000)
    page.evaluate("window.samePage = true")
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("#run-state")).to_have_text("Cancelled", timeout=60_000)
    assert page.evaluate("window.samePage") is True
    assert ui.run(run["id"])["state"]["type"] == "CANCELLED"
    expect(page.get_by_role("region", name="State timeline")).to_contain_text("Cancelling")

def test_run_again_makes_a_new_run_with_the_same_inputs(ui: UIStack, page: Any) -> None:
    deployment = ui.deployment()
    first = ui.post(f"/deployments/{deployment['id']}/runs",
                    {"parameters": {"name": "again", "count": 1}, "tags": ["extra"]})
    wait_for_state(ui, first["id"], "COMPLETED")
    page.goto(f"{ui.base}/runs/{first['id']}")
    page.get_by_role("button", name="Run again").click()
    expect(page).not_to_have_url(re.compile(first["id"]))
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    second = ui.run(page.url.rsplit("/", 1)[1])
    assert second["id"] != first["id"]
    assert second["parameters"] == ui.run(first["id"])["parameters"]
    assert sorted(second["tags"]) == ["demo", "extra"]
    expect(page.locator("#run-state")).to_have_text("Completed", timeout=60_000)


def test_a_flow_called_directly_shows_as_a_run_without_deployment(ui: UIStack, page: Any) -> None:
    called = ui.python("from flows import greet\nprint(greet('direct', count=2))")
    assert called.returncode == 0 and called.stdout.strip() == "direct", called.stderr
    (run,) = [r for r in ui.get("/flow_runs?limit=1000")["items"] if r["parameters"].get("name") == "direct"]
    assert run["deployment_id"] is None and run["state"]["type"] == "COMPLETED"
    page.goto(ui.base + "/runs?state=COMPLETED")
    row = page.locator(f"main table tbody tr[data-run='{run['id']}']")
    expect(row).to_contain_text(run["name"])
    expect(row).to_contain_text("—")  # no pool
    row.get_by_role("link", name=run["name"]).click()
    expect(page.locator("#run-flow")).to_have_text("greet")
    expect(page.locator("#run-deployment")).to_have_text("— (called directly)")
    expect(page.get_by_role("button", name="Run again")).to_have_count(0)
    expect(page.get_by_role("log")).to_contain_text("hello direct #1")
