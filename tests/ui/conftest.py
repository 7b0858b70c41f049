"""The web UI in a real browser: Python Playwright driving Debian's Chromium (``/usr/bin/chromium``,
never a browser Playwright downloads) against a real server and process worker from
``tests.harness``. Without Chromium or Playwright the tests skip locally and fail under CI, as a
missing service does (``tests/conftest.py``).

``ORCH_UI_SCREENSHOTS=docs/ui`` makes the tests save each page at 1280x800 and 375 px wide."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing_service

try:
    from playwright.sync_api import expect
except ImportError:  # the ``browser`` fixture says so: a skip locally, a failure under CI
    expect = None
from tests.harness import Stack, wait_until

CHROMIUM = os.environ.get("ORCH_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
WIDE = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 800}

FLOWS = textwrap.dedent('''
    import enum
    import time

    from orchestrator import flow, get_run_logger


    class Color(enum.Enum):
        RED = "red"
        BLUE = "blue"


    @flow
    def greet(name: str, count: int = 3, ratio: float = 0.5, loud: bool = False, color: Color = Color.RED,
              items: list[int] = [1, 2], options: dict[str, int] | None = None, nap: float = 0.0) -> str:
        """Greet someone, ``count`` times, ``nap`` seconds apart."""
        log = get_run_logger()
        for i in range(count):
            log.info("hello %s #%d", name, i)
            time.sleep(nap)
        return name
''')
DESCRIPTION = ("# Greeter\n\nSays **hello** to `name`.\n\n- one\n- two\n\n"
               "<script>window.pwned = 1</script> [click](javascript:window.pwned=1)")


class UIStack(Stack):
    """A server, the pool ``local`` with a process worker, and the deployment ``greet/hello``."""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def deployment(self, name: str = "hello") -> dict[str, Any]:
        return dict(self.get(f"/deployments/name/greet/{name}"))

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/flow_runs/{run_id}"))


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One Chromium for the tier. Package-scoped, not session-scoped: Playwright's sync API keeps an
    event loop running on the main thread while it is open, and the tests that run after this tier
    (tests/unit calls ``asyncio.run``) must not find one."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_service("Python Playwright (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        missing_service(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


@pytest.fixture(scope="package")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIStack]:
    stack = UIStack(tmp_path_factory.mktemp("ui"), {"PYTHONUNBUFFERED": "1"})
    try:
        stack.start_server()
        created = stack.orch("work-pool", "create", "local", "--type", "process")
        assert created.returncode == 0, created.stderr
        (stack.project / "flows.py").write_text(FLOWS)
        deployed = stack.python(
            "from flows import greet\n"
            f"greet.deploy(name='hello', work_pool_name='local', parameters={{'name': 'world'}}, tags=['demo'],"
            f" description={DESCRIPTION!r}, cron='0 9 * * *', version='1.0')")
        assert deployed.returncode == 0, deployed.stderr
        stack.start_worker("local")
        yield stack
    finally:
        stack.stop()


def screenshot(page: Any, name: str) -> None:
    """With ``ORCH_UI_SCREENSHOTS`` set, the page as it is, wide and phone-wide, into that folder."""
    folder = os.environ.get("ORCH_UI_SCREENSHOTS")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    for label, size in (("wide", WIDE), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.screenshot(path=str(Path(folder) / f"{name}-{label}.png"))
    page.set_viewport_size(WIDE)


def wait_for_state(stack: UIStack, run_id: str, *states: str, timeout: float = 60) -> dict[str, Any]:
    return wait_until(f"run {run_id} in {states}", lambda: (r := stack.run(run_id))["state"]["type"] in states and r,
                      timeout, 0.1, describe=stack.all_logs)
