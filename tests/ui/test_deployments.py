"""Deployment pages: search, the description's Markdown, Run, Custom run (errors next to the
field), pausing a schedule and the deployment."""

from __future__ import annotations

import re
import urllib.request
from typing import Any

import pytest

from tests.ui.conftest import UIStack, expect, screenshot

RUN_URL = re.compile(r"/runs/([0-9a-f-]{36})$")

pytestmark = pytest.mark.ui

def open_deployment(ui: UIStack, page: Any) -> dict[str, Any]:
    deployment = ui.deployment()
    page.goto(f"{ui.base}/deployments/{deployment['id']}")
    return deployment

def run_id_of(page: Any) -> str:
    expect(page).to_have_url(RUN_URL)
    match = RUN_URL.search(page.url)
    assert match
    return match.group(1)

def test_list_searches_by_name_and_tag(ui: UIStack, page: Any) -> None:
    page.goto(ui.base + "/deployments")
    rows = page.locator("main table tbody tr")
    expect(rows.filter(has_text="greet/hello")).to_have_count(1)
    expect(rows.first).to_contain_text("cron 0 9 * * *")
    expect(rows.first).to_contain_text("active")
    screenshot(page, "deployments")
    page.get_by_label("Name").fill("GREE")
    page.get_by_role("button", name="Search").click()
    expect(rows.filter(has_text="greet/hello")).to_have_count(1)
    page.get_by_label("Name").fill("nothing-like-it")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("No deployment matches.")).to_be_visible()
    page.goto(ui.base + "/deployments?tag=demo")
    expect(rows.filter(has_text="greet/hello")).to_have_count(1)
    page.goto(ui.base + "/deployments?tag=other")
    expect(rows).to_have_count(0)

def test_description_is_markdown_with_html_escaped(ui: UIStack, page: Any) -> None:
    open_deployment(ui, page)
    about = page.locator(".markdown")
    expect(about.get_by_role("heading", name="Greeter")).to_be_visible()
    expect(about.locator("strong")).to_have_text("hello")
    expect(about.locator("li")).to_have_count(2)
    expect(about).to_contain_text("<script>window.pwned = 1</script>")  # shown as text
    assert about.locator("script").count() == 0
    assert about.locator("a").count() == 0  # the javascript: link is not made a link
    assert page.evaluate("window.pwned") is None
    expect(page.locator("dl.facts")).to_contain_text("1.0")
    expect(page.get_by_role("region", name="History")).to_contain_text("created")
    screenshot(page, "deployment")

def test_run_button_creates_a_run_that_completes(ui: UIStack, page: Any) -> None:
    deployment = open_deployment(ui, page)
    page.get_by_role("button", name="Run", exact=True).click()
    run_id = run_id_of(page)
    run = ui.run(run_id)
    assert run["deployment_id"] == deployment["id"]
    assert run["parameters"]["name"] == "world"
    expect(page.locator("#run-state")).to_have_text("Completed", timeout=60_000)

def test_custom_run_shows_the_apis_errors_next_to_their_fields(ui: UIStack, page: Any) -> None:
    open_deployment(ui, page)
    page.get_by_role("link", name="Custom run").click()
    form = page.locator("#custom-run-form")
    # The form is the schema: defaults filled in, each kind its input.
    expect(form.get_by_label("Name")).to_have_value("world")
    expect(form.get_by_label("Count")).to_have_value("3")
    expect(form.get_by_label("Loud")).not_to_be_checked()
    expect(form.get_by_label("Color")).to_have_value('"red"')
    expect(form.get_by_label("Items")).to_have_value("[\n  1,\n  2\n]")
    before = len(ui.get(f"/flow_runs?deployment_id={ui.deployment()['id']}&limit=1000")["items"])

    form.get_by_label("Count").fill("three")
    form.get_by_label("Ratio").fill("1.5.2")
    form.get_by_role("button", name="Create run").click()
    count_error = page.locator("#param-count-error")
    expect(count_error).to_be_visible()
    expect(count_error).to_contain_text("'three' is not of type 'integer'")
    expect(form.get_by_label("Count")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#param-ratio-error")).to_contain_text("is not of type 'number'")
    expect(page.locator("#param-name-error")).to_be_hidden()
    expect(form.get_by_label("Count")).to_be_focused()
    screenshot(page, "custom-run-errors")
    # Bad JSON is caught before anything is sent, next to its field too.
    form.get_by_label("Items").fill("[1, 2")
    form.get_by_role("button", name="Create run").click()
    expect(page.locator("#param-items-error")).to_contain_text("not valid JSON")
    assert len(ui.get(f"/flow_runs?deployment_id={ui.deployment()['id']}&limit=1000")["items"]) == before

    form.get_by_label("Count").fill("2")
    form.get_by_label("Ratio").fill("0.25")
    form.get_by_label("Items").fill("[7]")
    form.get_by_label("Loud").check()
    form.get_by_label("Color").select_option(label="blue")
    form.get_by_label("Tags (comma-separated)").fill("ui, manual")
    form.get_by_role("button", name="Create run").click()
    run = ui.run(run_id_of(page))
    assert run["parameters"] == {"name": "world", "count": 2, "ratio": 0.25, "loud": True, "color": "blue",
                                 "items": [7], "options": None, "nap": 0.0}
    assert set(run["tags"]) == {"demo", "ui", "manual"}

def test_custom_run_raw_json_and_a_start_time(ui: UIStack, page: Any) -> None:
    open_deployment(ui, page)
    form = page.locator("#custom-run-form")
    form.get_by_label("Edit parameters as raw JSON").check()
    raw = form.get_by_label("Parameters (JSON object)")
    expect(raw).to_have_value(re.compile(r'"name": "world"'))
    raw.fill('{"name": "raw", "colour": "red"}')
    form.get_by_role("button", name="Create run").click()
    expect(page.locator("#raw-parameters-error")).to_contain_text("parameter 'colour': is not a parameter of this flow")
    raw.fill('{"name": "later"}')
    form.get_by_label("Start time (your local time)").fill("2099-01-02T03:04:05")
    form.get_by_role("button", name="Create run").click()
    run = ui.run(run_id_of(page))
    assert run["parameters"]["name"] == "later"
    assert run["state"]["type"] == "SCHEDULED"
    assert run["expected_start_time"].startswith("2099-01-0")

def test_pause_and_resume_a_schedule(ui: UIStack, page: Any) -> None:
    deployment = open_deployment(ui, page)
    slug = deployment["schedules"][0]["slug"]
    schedule = page.locator(f'li.schedule[data-slug="{slug}"]')
    schedule.get_by_role("button", name=f"Pause schedule {slug}").click()
    expect(schedule.get_by_text("paused")).to_be_visible()
    assert ui.get(f"/deployments/{deployment['id']}/schedules/{slug}")["active"] is False
    schedule.get_by_role("button", name=f"Resume schedule {slug}").click()
    expect(schedule.get_by_text("active")).to_be_visible()
    assert ui.get(f"/deployments/{deployment['id']}/schedules/{slug}")["active"] is True

def test_pause_and_resume_the_deployment(ui: UIStack, page: Any) -> None:
    deployment = open_deployment(ui, page)
    page.get_by_role("button", name="Pause deployment").click()
    expect(page.locator("#deployment-status")).to_have_text("paused")
    assert ui.get(f"/deployments/{deployment['id']}")["paused"] is True
    page.get_by_role("button", name="Resume deployment").click()
    expect(page.locator("#deployment-status")).to_have_text("active")
    assert ui.get(f"/deployments/{deployment['id']}")["paused"] is False

def test_add_a_schedule_with_a_preview_of_its_next_times(ui: UIStack, page: Any) -> None:
    deployment = open_deployment(ui, page)
    page.get_by_text("Add a schedule").click()
    form = page.locator("#schedule-form")
    preview = page.locator("#schedule-preview li")
    form.get_by_label("Expression").fill("61 * * * *")
    expect(page.locator("#schedule-value-error")).to_contain_text("cron")
    expect(form.get_by_label("Expression")).to_have_attribute("aria-invalid", "true")
    form.get_by_label("Expression").fill("30 6 * * *")
    form.get_by_label("Time zone").fill("Mars/Olympus")
    expect(page.locator("#schedule-timezone-error")).to_contain_text("Mars/Olympus")
    form.get_by_label("Time zone").fill("Europe/Paris")
    expect(page.locator("#schedule-preview-for")).to_have_text("cron '30 6 * * *' (Europe/Paris)")
    expect(preview).to_have_count(5)
    for text in preview.all_inner_texts():  # 06:30 in Paris, winter or summer
        assert re.fullmatch(r"\d{4}-\d\d-\d\d 06:30:00\+0[12]:00", text), text
    form.get_by_label("Interval").check()
    form.get_by_label("Expression").fill("PT4H")
    expect(page.locator("#schedule-hint")).to_contain_text("ISO 8601")
    expect(page.locator("#schedule-preview-for")).to_contain_text("every 4h")
    expect(preview.first).to_contain_text(":00:00")
    form.get_by_label("Cron").check()
    form.get_by_label("Expression").fill("30 6 * * *")
    expect(page.locator("#schedule-preview-for")).to_contain_text("30 6 * * *")
    expect(preview.first).to_contain_text("06:30:00")
    screenshot(page, "schedule-preview")
    form.get_by_role("button", name="Add schedule").click()
    added = page.locator("li.schedule", has_text="cron 30 6 * * * (Europe/Paris)")
    expect(added).to_be_visible()
    [made] = [s for s in ui.get(f"/deployments/{deployment['id']}/schedules") if s["cron"] == "30 6 * * *"]
    assert made["timezone"] == "Europe/Paris" and made["active"] is True
    request = urllib.request.Request(f"{ui.api_url}/deployments/{deployment['id']}/schedules/{made['slug']}",
                                     method="DELETE")
    urllib.request.urlopen(request, timeout=30).close()

def test_custom_run_job_variables_from_the_pools_schema(ui: UIStack, page: Any) -> None:
    open_deployment(ui, page)
    form = page.locator("#custom-run-form")
    jobs = form.locator("#jobvar-fields")
    # The process pool's variables: command, env, working_dir, stream_output, with their defaults.
    expect(jobs.get_by_label("Stream output")).to_be_checked()
    expect(jobs.get_by_label("Environment")).to_have_value("{}")
    expect(jobs.get_by_label("Working directory")).to_have_value("")
    jobs.get_by_label("Environment").fill('{"GREETING": 5}')
    form.get_by_role("button", name="Create run").click()
    expect(page.locator("#jobvar-env-error")).to_contain_text("is not of type 'string'")
    expect(jobs.get_by_label("Environment")).to_have_attribute("aria-invalid", "true")
    jobs.get_by_label("Environment").fill('{"GREETING": "hi"}')
    jobs.get_by_label("Stream output").uncheck()
    form.get_by_role("button", name="Create run").click()
    run = ui.run(run_id_of(page))
    assert run["job_variables"]["env"] == {"GREETING": "hi"}
    assert run["job_variables"]["stream_output"] is False
    assert "working_dir" not in run["job_variables"]  # left empty: the pool's default applies
    expect(page.locator("#run-state")).to_have_text("Completed", timeout=60_000)

def test_recent_runs_on_the_deployment_page_are_live(ui: UIStack, page: Any) -> None:
    deployment = open_deployment(ui, page)
    page.evaluate("window.samePage = true")
    run = ui.post(f"/deployments/{deployment['id']}/runs", {"parameters": {"name": "seen", "count": 1}})
    row = page.get_by_role("region", name="Recent runs").locator(f'tr[data-run="{run["id"]}"]')
    expect(row).to_be_visible(timeout=30_000)
    expect(row.locator("[data-state]")).to_have_text("Completed", timeout=60_000)
    assert page.evaluate("window.samePage") is True
