"""The web console in a real browser: headless Chromium from Debian's `chromium` package, driven by
Playwright for Python with that executable (browsers cannot be downloaded here; `playwright install` is
never run). Servers are the integration tests' real stacks (Redis, API, worker processes).

Without a Chromium the browser tests are skipped, and the run ends with a banner that says so: `.ci/run`
installs Chromium first, so CI always runs them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The real stacks of the integration tests (fixtures re-exported: pytest_plugins is for the root only).
from tests.integration.conftest import make_stack, prefix, redis_url  # noqa: F401

from ..conftest import ROOT

SHOTS = ROOT / "docs" / "console"
ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
        "--disable-dev-shm-usage", "--disable-extensions", "--mute-audio",
        # A page in a background or headless window must keep its timers and animation frames running.
        "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows"]

_skipped: list[str] = []


def chromium_path() -> str | None:
    """Debian's Chromium (the binary behind the /usr/bin/chromium wrapper), or AGSS_CHROMIUM."""
    for candidate in (os.environ.get("AGSS_CHROMIUM"), "/usr/lib/chromium/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _skip(reason: str) -> None:
    _skipped.append(reason)
    print(f"\n!!! {reason}")  # noqa: T201 - said at once too, not only in the summary
    pytest.skip(reason)


def pytest_terminal_summary(terminalreporter) -> None:
    if _skipped:
        terminalreporter.write_sep("!", "BROWSER TESTS SKIPPED", red=True, bold=True)
        terminalreporter.write_line(f"  {_skipped[0]}", red=True, bold=True)
        terminalreporter.write_line("  Install Debian's chromium (apt-get install chromium) to run them; CI does.",
                                    red=True, bold=True)
        terminalreporter.write_sep("!", red=True, bold=True)


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        _skip("no Chromium found (/usr/lib/chromium/chromium, chromium on PATH or AGSS_CHROMIUM): the web console "
              "browser tests did not run")
    try:
        import playwright  # noqa: F401
    except ImportError:
        _skip("Playwright for Python is not installed (pip install -e '.[dev]'): the browser tests did not run")
    return path


@pytest.fixture(scope="package")
def playwright_driver(chromium) -> Iterator:
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    yield pw
    pw.stop()


@pytest.fixture
def launch(playwright_driver, chromium) -> Iterator[Callable]:
    """launch(*extra_args) -> a new headless Chromium; every one is closed when the test ends."""
    browsers = []

    def start(*extra: str):
        b = playwright_driver.chromium.launch(executable_path=chromium, headless=True, args=ARGS + list(extra),
                                              timeout=60_000)
        browsers.append(b)
        return b

    yield start
    for b in browsers:
        b.close()


@pytest.fixture
def browser(launch):
    return launch()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 720}, accept_downloads=True)
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    # Playwright turns on its file-chooser interception when the first "filechooser" listener is added, by
    # a protocol call that `expect_file_chooser` does not wait for: a key that opens the chooser right after
    # could beat it (seen 1 run in ~8: the input's click() ran, with user activation, and no event came).
    # A listener from the start keeps the interception on for the page's whole life.
    p.on("filechooser", lambda chooser: None)
    if os.environ.get("AGSS_BROWSER_LOG"):  # with pytest -s: what the page logs, throws and fetches
        p.on("console", lambda m: print("console:", m.text))  # noqa: T201
        p.on("pageerror", lambda e: print("page error:", e))  # noqa: T201
        p.on("response", lambda r: print("response:", r.status, r.url))  # noqa: T201
    p.page_errors = errors
    yield p
    context.close()


@pytest.fixture(scope="session")
def shots() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS
