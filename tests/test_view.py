"""`autobp view`: a live page of runs and sweeps, opened in a real headless Chromium while they train.

Trainings are paused with SIGSTOP and let go with SIGCONT instead of timed: the page must catch up with what the
files hold, however loaded the machine is; every wait polls with a generous deadline and nothing asserts a time.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from typer.testing import CliRunner

from conftest import CONFIGS, ROOT, require
from autobp.cli import app
from autobp.rundir.reader import is_run_dir, read_appended
from autobp.training.entry import train

DEADLINE = 180.0  # seconds: generous, for a loaded 2-core machine
require("plotly", "report")


def wait_for(condition: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def autobp(*args: str, **popen: Any) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "autobp", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)  # fmt: skip


class Server:
    """`autobp view DIR --port 0` in a subprocess: its address, and how it ended."""

    def __init__(self, root: Path, *extra: str) -> None:
        self.process = autobp("view", str(root), "--port", "0", *extra)
        line = self.process.stdout.readline()
        assert line.startswith("autobp view: serving "), line + self.process.stderr.read()
        self.url = line.split(" at ")[1].split(" ")[0].rstrip("/")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def stop(self, how: signal.Signals = signal.SIGTERM) -> str:
        self.process.send_signal(how)
        _, err = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, err
        return err


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Server]]:
    root = tmp_path / "runs"
    root.mkdir()
    server = Server(root)
    yield root, server
    if server.process.poll() is None:
        assert "autobp view: stopped" in server.stop()


def open_page(browser: Any, server: Server, path: str) -> tuple[Any, list[str], list[str]]:
    """The page at `path`; every request not to the server is aborted and recorded, and every console error."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.set_default_timeout(DEADLINE * 1000)
    outside, errors = [], []

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if url.startswith(server.url + "/") or url.startswith("data:"):
            request_route.continue_()
        else:
            outside.append(url)
            request_route.abort()

    page.route("**/*", route)
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url + path)
    return page, outside, errors


def rows(path: Path) -> int:
    """The complete data rows of a log."""
    return path.read_bytes().count(b"\n") - 1 if path.is_file() else 0


EPOCHS = 40


def heatmap_steps(page: Any) -> int:
    return page.evaluate("document.getElementById('gradient-flow').data[0].x.length")


def logged_steps(run_dir: Path) -> int:
    return len({row[0] for row in read_appended(run_dir / "gradients.csv", 0).rows})  # the step column


def instrumented(page: Any) -> int:
    """The noise scale's per-step dots on the instruments chart."""
    return page.evaluate("document.getElementById('instruments').data[0].x.length")


def total_rows(run_dir: Path) -> int:
    appended = read_appended(run_dir / "instruments.csv", 0)
    block, scale = appended.columns.index("block"), appended.columns.index("noise_scale")
    return sum(row[block] == "total" and row[scale] is not None for row in appended.rows)


def badge(page: Any, name: str) -> str:
    return page.evaluate(f"""(() => {{
        const row = [...document.querySelectorAll('#runs tbody tr')].find(r => r.dataset.name === {name!r});
        return row ? row.cells[2].textContent.trim() : '';
    }})()""")


def points(page: Any, div: str, trace: str) -> int:
    return page.evaluate(f"""(() => {{
        const gd = document.getElementById({div!r});
        const t = gd && gd.data && gd.data.find(t => t.name === {trace!r});
        return t ? t.x.length : 0;
    }})()""")


def test_a_run_grows_finishes_and_a_killed_one_reads_killed(browser, served: tuple[Path, Server]) -> None:
    root, server = served
    slow = ["--set", "data.n_samples=20000", "--set", "training.log_every=50"]
    trainer = autobp("train", str(CONFIGS / "xor.yaml"), "--output-dir", str(root), "--set", f"training.epochs={EPOCHS}",
                     "--set", "training.instruments={every: 50}", *slow, start_new_session=True)  # fmt: skip
    run_dir = wait_for(lambda: next(iter(root.glob("xor-*")), None), "the run directory")
    wait_for(lambda: rows(run_dir / "metrics.csv") >= 2, "two epochs")
    os.killpg(trainer.pid, signal.SIGSTOP)  # paused: the page must show it running, with the epochs logged so far
    try:
        listing, outside, errors = open_page(browser, server, "/")
        wait_for(lambda: badge(listing, run_dir.name) == "running", "the badge `running`")
        listing.click(f"a:text-is('{run_dir.name}')")
        page = listing
        logged = rows(run_dir / "metrics.csv")
        wait_for(lambda: page.locator(".live-count").text_content() == str(logged), "the epoch count")
        assert points(page, "curves", "val_loss") == logged and instrumented(page) == total_rows(run_dir)
        assert page.locator("h1 .status").text_content() == "running"
        page.evaluate("document.querySelectorAll('main section').forEach(s => { s.drawn = true; })")
    finally:
        os.killpg(trainer.pid, signal.SIGCONT)
    # It trains on, paused again a few epochs later: from the appended rows alone (the sections are the same
    # elements: none of these was rebuilt, nor the page reloaded), the count, curves, heatmap and instruments advance.
    wait_for(lambda: rows(run_dir / "metrics.csv") >= logged + 3, "three more epochs")
    os.killpg(trainer.pid, signal.SIGSTOP)
    try:
        now = rows(run_dir / "metrics.csv")
        assert now < EPOCHS
        wait_for(lambda: page.locator(".live-count").text_content() == str(now), "the epoch count to advance")
        wait_for(lambda: points(page, "curves", "val_loss") == now, "the curves to advance")
        wait_for(lambda: heatmap_steps(page) == logged_steps(run_dir), "the heatmap to advance")
        wait_for(lambda: instrumented(page) == total_rows(run_dir), "the instruments to advance")
        # The sections drawn from the logs' rows (not distributions: a checkpoint rewrites histograms.npz).
        kept = "['summary', 'curves', 'gradient-flow', 'instruments'].map(id => document.getElementById('section-' + id))"
        assert page.evaluate(f"{kept}.every(s => s && s.drawn)")
        assert page.locator("h1 .status").text_content() == "running"
    finally:
        os.killpg(trainer.pid, signal.SIGCONT)
    wait_for(lambda: page.locator("h1 .status").text_content() == "completed", "`completed`")
    assert trainer.wait(timeout=DEADLINE) == 0
    wait_for(lambda: points(page, "curves", "val_loss") == EPOCHS, "every epoch on the curves")
    assert page.locator(".live-count").text_content() == str(EPOCHS)
    wait_for(lambda: heatmap_steps(page) == logged_steps(run_dir), "the whole heatmap")
    # A run killed outright reads `killed` in the list; resumed, `running` again, then `completed`.
    killed = autobp("train", str(CONFIGS / "xor.yaml"), "--output-dir", str(root), "--name", "doomed", *slow,
                    "--set", "training.epochs=100000", "--set", "training.checkpoint_every=1")  # fmt: skip
    doomed = wait_for(lambda: next(iter(root.glob("doomed-*")), None), "the second run")
    wait_for(lambda: (doomed / "checkpoint.npz").is_file() and rows(doomed / "metrics.csv") >= 2, "a checkpoint")
    page.goto(server.url + "/")
    wait_for(lambda: badge(page, doomed.name) == "running", "the second run `running`")
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    wait_for(lambda: badge(page, doomed.name) == "killed", "the badge `killed`")
    assert badge(page, run_dir.name) == "completed"
    page.click(f"a:text-is('{doomed.name}')")
    assert page.locator("h1 .status").text_content() == "killed"
    before = int(page.locator(".live-count").text_content())
    resumed = autobp("train", "--resume", str(doomed), "--set", f"training.epochs={before + 30}")
    wait_for(lambda: page.locator("h1 .status").text_content() == "completed", "the resumed run `completed`")
    assert resumed.wait(timeout=DEADLINE) == 0
    wait_for(lambda: points(page, "curves", "val_loss") == before + 30, "the resumed run's curves")
    assert page.locator(".live-count").text_content() == str(before + 30)
    assert outside == [] and errors == []
    page.close()


def test_a_sweep_table_grows_as_trials_start(browser, served: tuple[Path, Server]) -> None:
    root, server = served
    sweep_file = root.parent / "sweep.yaml"
    sweep_file.write_text(f"base: {CONFIGS / 'quickstart.yaml'}\nname: widths\nparameters:\n  model.layers.0.units: [2, 3, 4]\n")
    sweep = autobp("sweep", str(sweep_file), "--output-dir", str(root), "--jobs", "1", "-q", "--set", "training.epochs=8",
                   "--set", "data.n_samples=20000", "--set", "training.log_every=50", start_new_session=True)  # fmt: skip
    sweep_dir = wait_for(lambda: next(iter((root / "sweeps").glob("widths-*")), None), "the sweep directory")
    wait_for(lambda: rows(sweep_dir / "trial-000" / "metrics.csv") >= 1, "the first trial's first epoch")
    os.killpg(sweep.pid, signal.SIGSTOP)
    try:
        page, outside, errors = open_page(browser, server, "/")
        name = f"sweeps/{sweep_dir.name}"
        wait_for(lambda: "running" in badge(page, name), "the sweep listed as running")
        page.click(f"a:text-is('{name}')")
        page.wait_for_selector("#section-trials table", state="attached")
        shown = page.locator("a.trial").all_inner_texts()
        started = sorted(path.name for path in sweep_dir.glob("trial-*") if is_run_dir(path))
        assert "trial-000" in shown and sorted(shown) == started and len(started) < 3
    finally:
        os.killpg(sweep.pid, signal.SIGCONT)
    wait_for(lambda: len(page.locator("a.trial").all_inner_texts()) == 3, "every trial in the table")
    assert sweep.wait(timeout=DEADLINE) == 0
    wait_for(lambda: page.locator("#section-trials tbody .status.completed").count() == 3, "every trial `completed`")
    cells = page.evaluate("[...document.querySelectorAll('#section-trials tbody tr')].map(r => r.cells[3].textContent)")
    assert sorted(cells) == ["2", "3", "4"]  # the swept per-layer key, not None
    wait_for(lambda: all(points(page, "sweep-curves", f"trial-00{i}") == 8 for i in range(3)), "the curves")
    assert outside == [] and errors == []
    page.close()


def test_hostile_names_and_paths_are_inert_or_refused(browser, served: tuple[Path, Server], tmp_path: Path) -> None:
    root, server = served
    hostile = "<script>window.pwned=2</script>"
    trained = train(CONFIGS / "xor.yaml", ["training.epochs=2"], output=root).run_dir
    run_dir = trained.rename(root / "<img src=x onerror=window.pwned=1>")  # a folder name is any text
    with open(run_dir / "config.yaml", "a") as config:
        config.write(f"# {hostile}\n")
    outside_dir = train(CONFIGS / "xor.yaml", ["training.epochs=2"], output=tmp_path / "elsewhere").run_dir
    (root / "link").symlink_to(outside_dir)
    (root / "passwd").symlink_to("/etc/passwd")
    page, outside, errors = open_page(browser, server, "/")
    wait_for(lambda: page.locator("#runs tbody tr").count() == 1, "the listing")
    assert page.locator("#runs tbody a").text_content() == run_dir.name
    assert "skipped link: it leads out of the served folder" in page.locator("#notes").text_content()
    page.click("#runs tbody a")
    page.wait_for_selector("#section-config pre", state="attached")
    assert page.locator("h1").first.text_content().startswith(run_dir.name)
    assert hostile in page.locator("#section-config pre").text_content()
    assert page.evaluate("window.pwned") is None and page.locator("img").count() == 0
    assert outside == [] and errors == []
    page.close()
    for path in ("/page/link", "/page/link/", "/api/tail?file=link/metrics.csv&from=0", "/page/..%2F..%2Fetc",
                 "/page/%2Fetc", "/api/state?page=../runs", "/api/tail?file=passwd&from=0",
                 f"/api/tail?file={quote(run_dir.name)}/config.yaml&from=0", "/api/section?page=%2Ftmp&id=config"):  # fmt: skip
        status, text = server.get(path)
        assert status == 403, (path, status, text)
    assert server.get("/page/nothing-here")[0] == 404
    assert server.get("/", {"Host": "attacker.example:80"})[0] == 403  # DNS rebinding: not our name
    status, text = server.get(f"/api/tail?file={quote(run_dir.name)}/metrics.csv&from=0")
    assert status == 200 and '"rows": [[1, ' in text


def test_damaged_files_are_shown_not_fatal(served: tuple[Path, Server]) -> None:
    root, server = served
    run_dir = train(CONFIGS / "xor.yaml", ["training.epochs=3"], output=root).run_dir
    (run_dir / "summary.json").write_text('{"status": "runn')
    (run_dir / "histograms.npz").write_bytes(b"not a zip")
    with open(run_dir / "metrics.csv", "a") as log:
        log.write("4,40,0.1,0.")  # half a row: the tail stops before it
    status, text = server.get(f"/page/{run_dir.name}")
    assert status == 200 and "summary.json: not readable JSON" in text and "histograms.npz: not a readable" in text
    status, text = server.get(f"/api/tail?file={run_dir.name}/metrics.csv&from=0")
    assert status == 200 and '"rows": [[1, 10, ' in text and "[4, 40" not in text
    assert server.get("/api/runs")[0] == 200


def test_read_appended_reads_whole_new_rows_only(tmp_path: Path) -> None:
    log = tmp_path / "metrics.csv"
    log.write_text("epoch,train_loss\n1,0.5\n2,0.2")
    first = read_appended(log, 0)
    assert first.columns == ["epoch", "train_loss"] and first.rows == [[1, 0.5]] and first.end == len("epoch,train_loss\n1,0.5\n")
    with open(log, "a") as handle:
        handle.write("5\n3,nan\n")
    second = read_appended(log, first.end)
    assert second.rows[0] == [2, 0.25] and second.rows[1][0] == 3 and math.isnan(second.rows[1][1])
    assert second.file_id == first.file_id
    assert read_appended(log, second.end).rows == []
    log.write_text("epoch,train_loss\n1,0.4\n")  # rewritten (a resumed run): a new file
    assert read_appended(log, 0).rows == [[1, 0.4]]


def test_view_needs_plotly_and_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(app, ["view", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no such directory" in result.output
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    result = CliRunner().invoke(app, ["view", str(tmp_path)])
    assert result.exit_code == 2 and "pip install 'autobp[report]'" in result.output


def test_another_host_is_warned_about_a_port_in_use_refused_and_ctrl_c_stops(tmp_path: Path) -> None:
    server = Server(tmp_path, "--host", "0.0.0.0")
    port = server.url.rpartition(":")[2]
    taken = autobp("view", str(tmp_path), "--port", port, "--host", "0.0.0.0")
    _, err = taken.communicate(timeout=60)
    assert taken.returncode == 2 and f"--port {port}: cannot listen there" in err
    err = server.stop(signal.SIGINT)  # Ctrl-C
    assert "warning: --host 0.0.0.0: anyone who can reach this machine" in err and "autobp view: stopped" in err


def test_the_list_reads_again_only_the_runs_that_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autobp.tools import compare

    old = train(CONFIGS / "xor.yaml", ["training.epochs=2"], output=tmp_path).run_dir
    new = train(CONFIGS / "xor.yaml", ["training.epochs=3"], output=tmp_path).run_dir
    cache: dict = {}
    assert {entry.name: entry.epochs for entry in compare.list_runs(tmp_path, cache)[0]} == {old.name: 2, new.name: 3}
    read, original = [], compare._run_entry
    monkeypatch.setattr(compare, "_run_entry", lambda path, name: read.append(path.name) or original(path, name))
    compare.list_runs(tmp_path, cache)
    assert read == []
    with open(old / "metrics.csv", "a") as log:
        log.write((old / "metrics.csv").read_text().splitlines()[-1].replace("2,", "3,", 1) + "\n")
    listed = {entry.name: entry.epochs for entry in compare.list_runs(tmp_path, cache)[0]}
    assert read == [old.name] and listed == {old.name: 3, new.name: 3}
