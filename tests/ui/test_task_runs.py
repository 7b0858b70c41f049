"""The task runs page: every task run newest first with its flow run (linked), those of tasks
called outside any flow (recorded by a real script with ORCH_API_URL set) shown with none, the
filters and the next page."""

from __future__ import annotations

import datetime as dt
import textwrap
import uuid
from typing import Any

import pytest

from tests.harness import wait_until
from tests.ui.conftest import UIStack, expect, screenshot

pytestmark = pytest.mark.ui

SCRIPT = textwrap.dedent('''
    from orchestrator import task

    @task
    def shelve(n: int) -> int:
        return n

    @task(retries=1)
    def wobble() -> None:
        raise ValueError("row 7 will not parse")

    for n in range(3):
        shelve(n)
    try:
        wobble()
    except ValueError:
        pass
''')


def _task_run(name: str, task_name: str, created: dt.datetime) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "name": name, "task_name": task_name, "state_type": "COMPLETED",
            "state_name": "Completed", "run_count": 1, "start_time": created.isoformat(),
            "end_time": created.isoformat(), "created": created.isoformat()}


def test_task_runs_of_flow_runs_and_outside_flows(ui: UIStack, page: Any) -> None:
    # Outside any flow: a real script, its task runs shipped to POST /api/task_runs at its exit.
    (ui.project / "shelving.py").write_text(SCRIPT)
    ran = ui.python("import shelving")
    assert ran.returncode == 0, ran.stderr
    wait_until("the script's 4 task runs", lambda: len(ui.get("/task_runs?task_name=shelve")) == 3
               and len(ui.get("/task_runs?task_name=wobble")) == 1, 30, 0.1)
    # Of a flow run: what a flow-run process reports for its tasks (the same route), older than those.
    deployment = ui.deployment()
    run = ui.post(f"/deployments/{deployment['id']}/runs", {"tags": ["task-page"], "scheduled_time": "2099-01-01T00:00:00Z"})
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    ui.post(f"/flow_runs/{run['id']}/task_runs", [_task_run("in-flow-0", "in_flow", earlier)])

    page.goto(ui.base + "/")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Task runs").click()
    expect(page.get_by_role("heading", name="Task runs")).to_be_visible()
    rows = page.locator("main table tbody tr")
    wobble = rows.filter(has_text="wobble-0")
    expect(wobble).to_contain_text("Failed")
    expect(wobble).to_contain_text("row 7 will not parse")
    expect(wobble).to_contain_text("2 of 2")  # retried once
    expect(wobble.get_by_role("cell").nth(2)).to_have_text("none")
    in_flow = rows.filter(has_text="in-flow-0")
    expect(in_flow.get_by_role("link", name=run["name"])).to_have_attribute("href", f"/runs/{run['id']}")
    screenshot(page, "task-runs")

    page.get_by_label("Flow run").select_option(label="none (outside flows)")
    page.get_by_role("button", name="Filter").click()
    expect(rows.filter(has_text="in-flow-0")).to_have_count(0)
    expect(rows.filter(has_text="shelve-")).to_have_count(3)
    page.get_by_label("Task").fill("wobble")
    page.get_by_label("State").select_option("FAILED")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(page.get_by_label("Flow run")).to_have_value("none")  # the filters stay as chosen

    page.goto(ui.base + "/task-runs?task=in_flow")
    expect(rows).to_have_count(1)
    rows.get_by_role("link", name=run["name"]).click()
    expect(page).to_have_url(f"{ui.base}/runs/{run['id']}")
    expect(page.get_by_role("heading", name="Task runs")).to_be_visible()  # the run's own list
    ui.post(f"/flow_runs/{run['id']}/cancel", {})


def test_task_runs_page_by_page(ui: UIStack, page: Any) -> None:
    deployment = ui.deployment()
    run = ui.post(f"/deployments/{deployment['id']}/runs", {"tags": ["task-pages"], "scheduled_time": "2099-01-01T00:00:00Z"})
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    made = [_task_run(f"paged-{i}", "paged", start + dt.timedelta(seconds=i)) for i in range(53)]
    ui.post(f"/flow_runs/{run['id']}/task_runs", made)
    page.goto(ui.base + "/task-runs?task=paged")
    rows = page.locator("main table tbody tr")
    expect(rows).to_have_count(50)
    expect(rows.first).to_contain_text("paged-52")  # newest first
    shown = {name.split()[0] for name in rows.locator("td.name").all_inner_texts()}
    page.get_by_role("link", name="Older task runs").click()
    expect(rows).to_have_count(3)
    shown |= {name.split()[0] for name in rows.locator("td.name").all_inner_texts()}
    assert shown == {t["name"] for t in made}
    expect(page.get_by_role("link", name="Older task runs")).to_have_count(0)
    page.get_by_role("link", name="Newest task runs").click()
    expect(rows).to_have_count(50)
    page.goto(ui.base + "/task-runs?task=paged&older=not-a-key")  # a mangled address: the first page
    expect(rows).to_have_count(50)
    ui.post(f"/flow_runs/{run['id']}/cancel", {})
