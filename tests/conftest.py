"""Shared fixtures and helpers: one headless Chromium per test session for the browser tests, the optional extras,
and commands run as a user whom file permissions bind.

The browser is Debian's `chromium`, launched by its path (no browser download). Without it (or without
playwright) the browser tests skip, and so do the tests of an extra that is not installed (plotly, optuna, …) and,
when the suite runs as root, the permission tests if `setpriv` is missing. AUTOBP_NEED_ALL=1, as CI sets, turns
every such skip into a failure (AUTOBP_NEED_BROWSER=1 only the browser's).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip


NOBODY = 65534  # the user and group a permission test runs its command as when the suite runs as root


def unavailable(reason: str, *switches: str) -> NoReturn:
    """Skip the test (or the module) for want of `reason`; fail instead under AUTOBP_NEED_ALL=1 or `switches`."""
    for switch in ("AUTOBP_NEED_ALL", *switches):
        if os.environ.get(switch) == "1":
            pytest.fail(f"{switch}=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require(module: str, extra: str) -> ModuleType:
    """The module an optional extra provides, for the tests of that extra (see `unavailable`)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pass
    unavailable(f"{module} is not installed (pip install -e '.[{extra}]')")


def _unavailable(reason: str) -> None:
    unavailable(reason, "AUTOBP_NEED_BROWSER")


def as_unprivileged(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m autobp ARGS` as a user whom permissions bind: this one, or `nobody` when the suite runs as root
    (as CI does), which reads and writes whatever the permissions say."""
    command = [sys.executable, "-m", "autobp", *map(str, args)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            unavailable("the suite runs as root and setpriv (util-linux) is missing to run a command as nobody")
        command = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
        reach = subprocess.run([*command[:4], sys.executable, "-c", "import autobp"], capture_output=True, text=True)
        if reach.returncode != 0:
            unavailable(f"user nobody cannot run {sys.executable} with autobp (make the checkout and the venv "
                        f"readable by others): {reach.stderr.strip()[-300:]}")  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture
def unprivileged_folder() -> Iterator[Path]:
    """An empty folder that the user of `as_unprivileged` owns (tmp_path is root's own when the suite runs as root)."""
    folder = Path(tempfile.mkdtemp(prefix="autobp-unprivileged-"))
    folder.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(folder, NOBODY, NOBODY)
    yield folder
    shutil.rmtree(folder)


def give_to_unprivileged(path: Path, mode: int) -> None:
    """Make `path` the unprivileged user's (see `as_unprivileged`), with permissions `mode`."""
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    path.chmod(mode)


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
