"""API keys in the browser (asked once, kept in an HTTP-only SameSite=Strict cookie, every action
through the API's own check) and the API's docs pages working with no internet."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ui.conftest import UIStack, expect, screenshot

KEY = "ui-test-key-0123456789"

pytestmark = pytest.mark.ui

@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIStack]:
    stack = UIStack(tmp_path_factory.mktemp("locked"), {"ORCH_SERVER_API_KEYS": f"other-key,{KEY}",
                                                        "ORCH_API_KEY": KEY})
    try:
        stack.start_server()
        created = stack.orch("work-pool", "create", "keyed", "--type", "process")
        assert created.returncode == 0, created.stderr
        yield stack
    finally:
        stack.stop()

def read_with_key(stack: UIStack, path: str) -> Any:
    request = urllib.request.Request(stack.api_url + path, headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())

def fetch_status(page: Any, method: str, path: str, headers: dict[str, str]) -> int:
    return int(page.evaluate(
        "async ([method, path, headers]) => (await fetch(path, {method, headers, body: method === 'GET' ? undefined"
        " : '{\"paused\": true}'})).status", [method, path, headers]))

def test_a_key_is_asked_once_and_kept_in_an_http_only_cookie(locked: UIStack, page: Any) -> None:
    page.goto(locked.base + "/pools/keyed")
    expect(page).to_have_url(locked.base + "/login?next=%2Fpools%2Fkeyed")
    screenshot(page, "login")
    page.get_by_label("Key").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("That key is not accepted.")).to_be_visible()
    assert page.context.cookies() == []
    page.get_by_label("Key").fill(KEY)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(locked.base + "/pools/keyed")
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # no script can read the key
    # Actions go through the API's own key check: with the UI's header the cookie is the key...
    page.get_by_role("button", name="Pause pool").click()
    expect(page.get_by_text("paused", exact=True)).to_be_visible()
    assert read_with_key(locked, "/work_pools/keyed")["paused"] is True
    # ...without it (what another site's form could send) the cookie alone is not a key.
    assert fetch_status(page, "PATCH", "/api/work_pools/keyed", {"Content-Type": "application/json"}) == 401
    assert fetch_status(page, "PATCH", "/api/work_pools/keyed",
                        {"Content-Type": "application/json", "X-Orch-UI": "1"}) == 200
    # The live pages' stream is read with the same header and cookie (an EventSource could send no header).
    page.goto(locked.base + "/events?event=acme.keyed.*")
    expect(page.locator("#event-feed")).to_have_attribute("data-live", "open")
    event = {"id": str(uuid.uuid4()), "event": "acme.keyed.done", "resource": {"orchestrator.resource.id": "acme.k"}}
    request = urllib.request.Request(locked.api_url + "/events", data=json.dumps([event]).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()
    expect(page.locator("#event-feed > li").first).to_have_attribute("data-event-id", event["id"])
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(locked.base + "/login")
    page.goto(locked.base + "/")
    expect(page).to_have_url(locked.base + "/login?next=%2F")

def test_login_never_sends_a_person_to_another_site(locked: UIStack, page: Any) -> None:
    page.goto(locked.base + "/login?next=//example.invalid/x")
    page.get_by_label("Key").fill(KEY)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(locked.base + "/")

def test_api_docs_pages_work_without_internet(ui: UIStack, page: Any) -> None:
    outside: list[str] = []

    def only_this_server(route: Any) -> None:
        if route.request.url.startswith(ui.base):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto(ui.base + "/api/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("orchestrator")
    expect(page.locator(".opblock-tag", has_text="deployments").first).to_be_visible()
    screenshot(page, "api-docs")
    page.goto(ui.base + "/api/redoc")
    expect(page.get_by_role("heading", name="orchestrator").first).to_be_visible(timeout=30_000)
    expect(page.get_by_text("flow runs", exact=False).first).to_be_visible()
    assert outside == []

def test_pages_for_missing_things_say_so(ui: UIStack, page: Any) -> None:
    response = page.goto(ui.base + "/runs/00000000-0000-0000-0000-000000000000")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    response = page.goto(ui.base + "/pools/nope")
    assert response is not None and response.status == 404



def test_pages_answer_browsers_only(ui: UIStack) -> None:
    """A client whose API address lacks /api reaches GET /deployments: it gets the API's
    route_not_found (which the CLI turns into "is ORCH_API_URL right?"), not a page."""
    request = urllib.request.Request(ui.base + "/deployments", headers={"Accept": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=10)
    assert answer.value.code == 404
    assert json.loads(answer.value.read())["code"] == "route_not_found"
    page = urllib.request.Request(ui.base + "/deployments", headers={"Accept": "text/html"})
    with urllib.request.urlopen(page, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/html")


def test_a_mistyped_address_gets_the_not_found_page_in_a_browser(ui: UIStack, page: Any) -> None:
    response = page.goto(ui.base + "/deploymnets/<b>typo</b>")
    assert response is not None and response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    expect(page.get_by_text("There is no page at /deploymnets/<b>typo</b>.")).to_be_visible()  # escaped
    expect(page.get_by_role("link", name="Deployments")).to_be_visible()  # the usual header, a way back


@pytest.mark.parametrize(("path", "accept"), [("/nonexistent", "application/json"), ("/nonexistent", "*/*"),
                                              ("/api/nonexistent", "text/html")])
def test_a_mistyped_address_stays_json_for_api_clients_and_api_paths(ui: UIStack, path: str, accept: str) -> None:
    request = urllib.request.Request(ui.base + path, headers={"Accept": accept})
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=10)
    assert answer.value.code == 404
    assert json.loads(answer.value.read()) == {"detail": "Not Found", "code": "route_not_found"}


@pytest.mark.parametrize("path", ["/runs/brave-otter", "/deployments/add-sum"])
def test_a_page_address_that_names_no_id_is_not_found(ui: UIStack, path: str) -> None:
    """An address typed or cut short gets the Not found page, as an unknown id does, not the API's
    JSON 422."""
    page = urllib.request.Request(ui.base + path, headers={"Accept": "text/html"})
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(page, timeout=10)
    assert answer.value.code == 404
    assert answer.value.headers["Content-Type"].startswith("text/html")
    assert "<h1>Not found</h1>" in answer.value.read().decode()
