"""Shared fixtures and helpers: one headless Chromium per test session for the browser tests, the optional extras,
commands run as a user whom file permissions bind, and the helpers several test modules use (CONFIGS, read_csv, cli,
runs compared bit for bit, sweep files).

The browser is Debian's `chromium`, launched by its path (no browser download). Without it (or without
playwright) the browser tests skip, and so do the tests of an extra that is not installed (plotly, optuna, …) and,
when the suite runs as root, the permission tests if `setpriv` is missing. AUTOBP_NEED_ALL=1, as CI sets, turns
every such skip into a failure (AUTOBP_NEED_BROWSER=1 only the browser's).
"""

from __future__ import annotations

import csv
import importlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import numpy as np
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


# --- helpers the test modules share --------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


def read_csv(path: Path) -> list[dict[str, str]]:
    """A CSV file's rows, by column name."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


DEADLINE = 30  # seconds: a command still running after this long has hung (a hang check, never a speed check)


def finished(process: subprocess.Popen) -> tuple[int, str]:
    """How a started command ended: its exit code and its output, which never holds a traceback."""
    out, err = process.communicate(timeout=DEADLINE)
    assert "Traceback" not in out + err, out + err
    return process.returncode, out + err


def cli(*args: object) -> tuple[int, str]:
    """Run the CLI in-process: no traceback, never an exception other than the exit."""
    from typer.testing import CliRunner

    from autobp.cli import app

    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def autobp_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The command as the installed `autobp` script runs it (completion is keyed to the program's name)."""
    program = "import sys; from autobp.cli import app; sys.argv[0] = 'autobp'; app(prog_name='autobp')"
    return subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})  # fmt: skip


# --- runs stopped and resumed, compared bit for bit ----------------------------------------------------------------
def resumable_config(tmp_path: Path, **training: Any) -> dict:
    """A small moons run with a checkpoint every epoch, dropout and two activations; `training` keys override."""
    return {
        "name": "r",
        "seed": 5,
        "data": {"source": "moons", "n_samples": 160, "noise": 0.15},
        "model": {"layers": [{"units": 12, "activation": "tanh", "dropout": 0.1}, {"units": 12, "activation": "relu"}, {}]},
        "loss": "cross_entropy",
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 6, "batch_size": 16, "checkpoint_every": 1, **training},
        "output": {"dir": str(tmp_path / "runs")},
    }


def without_seconds(path: Path) -> list[list[str]]:
    """metrics.csv's cells less its `seconds` column: the one thing two identical runs may differ in."""
    rows = list(csv.reader(io.StringIO(path.read_text())))
    column = rows[0].index("seconds")
    return [row[:column] + row[column + 1 :] for row in rows]


def assert_same_run(a: Path, b: Path) -> None:
    """Two runs agree bit for bit: weights, gradient log, metrics less the clock, and the checkpoint (when there is
    one) less the clock."""
    for name in ("model.npz", "gradients.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert without_seconds(a / "metrics.csv") == without_seconds(b / "metrics.csv")
    assert (a / "checkpoint.npz").exists() == (b / "checkpoint.npz").exists()
    if (a / "checkpoint.npz").exists():  # optimizer state and generators too; only the clock differs
        with np.load(a / "checkpoint.npz") as first, np.load(b / "checkpoint.npz") as second:
            assert first.files == second.files
            for key in set(first.files) - {"seconds", "started"}:
                assert first[key].tobytes() == second[key].tobytes(), key


def interrupted(settings: dict, monkeypatch: pytest.MonkeyPatch, step: int) -> Any:
    """The run `settings` describes, stopped by Ctrl-C just before training step `step` (its RunResult)."""
    from autobp.training.entry import train
    from autobp.training.trainer import Trainer

    original = Trainer._train_step

    def step_or_interrupt(self: Trainer, number: int, *args: Any, **kwargs: Any) -> Any:
        if number == step:
            raise KeyboardInterrupt
        return original(self, number, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_train_step", step_or_interrupt)
        return train(settings)


def wait_for_rows(runs: Path, rows: int, process: subprocess.Popen, limit: float = 60.0) -> Path:
    """The run directory under `runs` once its metrics.csv has more than `rows` rows (a hang fails after `limit` s)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for metrics in runs.glob("*/metrics.csv"):
            if len(metrics.read_text().splitlines()) > rows:
                return metrics.parent
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.005)
    raise AssertionError("the run made no progress")


def write_sweep(folder: Path, parameters: dict, base: dict, **keys: Any) -> Path:
    """folder/sweep.yaml sweeping `parameters` over the config `base` (written beside it as base.yaml)."""
    import yaml

    (folder / "base.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    sweep = {"base": "base.yaml", **keys, "parameters": parameters}
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    return folder / "sweep.yaml"
