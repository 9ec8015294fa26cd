"""Shared fixtures: one headless Chromium per test session for the browser tests.

The browser is Debian's `chromium`, launched by its path (no browser download). Without it (or without
playwright) the browser tests skip, unless AUTOBP_NEED_BROWSER=1, as CI sets, which turns that into a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip


def _unavailable(reason: str) -> None:
    if os.environ.get("AUTOBP_NEED_BROWSER") == "1":
        pytest.fail(f"AUTOBP_NEED_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class OpenedPage:
    """A page opened from disk, with every request it made that was not to a local file, and its console errors."""

    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def open_file(browser: Any, path: Path, width: int = 1300) -> OpenedPage:
    """Open a local HTML file; any request other than file:// is recorded and aborted."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    opened = OpenedPage(page)

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if url.startswith("file://"):
            request_route.continue_()
        else:
            opened.requests.append(url)
            request_route.abort()

    page.route("**/*", route)
    page.on("console", lambda message: message.type == "error" and opened.errors.append(message.text))
    page.on("pageerror", lambda error: opened.errors.append(str(error)))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    return opened
