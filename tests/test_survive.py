"""Runs that survive everything, round 2: outputs that never clobber, terminals that never obey data, every damaged
or hostile file named with exit code 2, resume that reads everything before it writes, and the cap held end to end.

Each test here failed on the code before issue 26 (a traceback, a hang, a replaced FIFO, raw escapes, a lie)."""

from __future__ import annotations

import ast
import io
import json
import os
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import autobp
from autobp.cli import app
from autobp.common import files
from autobp.sweeps.plan import run_sweep

DEADLINE = 60  # seconds: a command still running after this long has hung
ROOT = Path(__file__).resolve().parents[1]
CONTROLS = ("\x1b", "\x07", "\x9b", "\u202e", "\u2066", "\r")  # what must never reach a terminal raw


def base_config(folder: Path, **training) -> dict:
    return {
        "name": "s",
        "seed": 2,
        "data": {"source": "moons", "n_samples": 120, "noise": 0.2},
        "model": {"hidden": [6, 6], "activation": "tanh"},
        "loss": "cross_entropy",
        "optimizer": {"name": "adam", "lr": 0.02},
        "training": {"epochs": 3, "batch_size": 16, "checkpoint_every": 1, **training},
        "output": {"dir": str(folder / "runs")},
    }


def cli(*args: object) -> tuple[int, str]:
    """Run the CLI in-process: no traceback, never an exception other than the exit."""
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def autobp_process(*args: object, limit_file_size: int | None = None, cwd: Path | None = None) -> tuple[int, str]:
    """`python -m autobp ARGS` in its own process, optionally under a file-size limit; it must end by DEADLINE."""

    def limit() -> None:
        if limit_file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    process = subprocess.run([sys.executable, "-m", "autobp", *map(str, args)], capture_output=True, text=True,
                             preexec_fn=limit, timeout=DEADLINE, cwd=cwd)  # fmt: skip
    output = process.stdout + process.stderr
    assert "Traceback" not in output, output
    return process.returncode, output


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished classification run with every file a run writes, and an .npz of examples to predict."""
    folder = tmp_path_factory.mktemp("trained")
    result = autobp.train(base_config(folder))
    assert result.status == "completed"
    rng = np.random.default_rng(0)
    np.savez(folder / "examples.npz", X=rng.normal(size=(300, 2)))
    return result.run_dir


def fresh(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained run to damage (in tmp_path/runs, with the examples to predict in tmp_path)."""
    shutil.copy(trained.parent.parent / "examples.npz", tmp_path / "examples.npz")
    return Path(shutil.copytree(trained, tmp_path / "runs" / trained.name))


# --- one output rule -------------------------------------------------------------------------------------------------


def writers(run: Path) -> dict[str, list[object]]:
    """Every command that writes a user-named file, without its target (appended)."""
    return {
        "graph": ["graph", run, "-o"],
        "report --html": ["report", run, "--html", "-o"],
        "report --plot": ["report", run, "--plot"],
        "export onnx": ["export", run, "--format", "onnx", "-o"],
        "predict": ["predict", run, run.parent.parent / "examples.npz", "--out"],
    }


SUFFIX = {"graph": ".svg", "report --html": ".html", "report --plot": ".png", "export onnx": ".onnx", "predict": ".csv"}


def special(path: Path, kind: str) -> socket.socket | None:
    """Make a named pipe, a folder or a (listening) socket at `path`."""
    if kind == "named pipe":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        return server
    return None


@pytest.mark.parametrize("kind", ["named pipe", "folder", "socket"])
@pytest.mark.parametrize("command", list(SUFFIX))
def test_an_output_that_is_not_a_regular_file_is_refused_and_left_alone(trained, tmp_path, command, kind) -> None:
    target = tmp_path / f"out{SUFFIX[command]}"
    server = special(target, kind)
    try:
        before = target.lstat()
        code, output = cli(*writers(trained)[command], target)
        assert code == 2 and f"{target}: a {kind}; autobp writes a file by replacing it" in output, output
        after = target.lstat()
        assert (stat.S_IFMT(after.st_mode), after.st_ino) == (stat.S_IFMT(before.st_mode), before.st_ino)
        assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary left either
    finally:
        if server is not None:
            server.close()


@pytest.mark.parametrize("command", list(SUFFIX))
def test_an_output_through_a_symbolic_link_writes_the_file_it_leads_to(trained, tmp_path, command) -> None:
    real = tmp_path / "real" / f"out{SUFFIX[command]}"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / f"link{SUFFIX[command]}"
    link.symlink_to(real)
    dangling = tmp_path / f"dangling{SUFFIX[command]}"
    dangling.symlink_to(tmp_path / "real" / f"new{SUFFIX[command]}")
    for path in (link, dangling):
        code, output = cli(*writers(trained)[command], path)
        assert code == 0, output
        assert path.is_symlink() and path.resolve().is_file() and path.resolve().stat().st_size > 3
    device = tmp_path / f"device{SUFFIX[command]}"
    device.symlink_to("/dev/null")
    code, output = cli(*writers(trained)[command], device)
    assert code == 2 and "a device (where the link leads: /dev/null)" in output, output
    assert device.is_symlink() and stat.S_ISCHR(Path("/dev/null").stat().st_mode)


@pytest.mark.parametrize("command", [*SUFFIX, "export tensorboard"])
def test_a_failed_output_write_exits_1_naming_the_file(trained, tmp_path, command) -> None:
    """A file-size limit below the output's size: exit 1 (a file could not be written), nothing left behind."""
    run = fresh(trained, tmp_path)
    out = tmp_path / "out" / f"result{SUFFIX.get(command, '')}"
    out.parent.mkdir()
    args = ["export", run, "--format", "tensorboard", "-o"] if command == "export tensorboard" else writers(run)[command]
    before = sorted(p.name for p in run.iterdir())
    code, output = autobp_process(*args, out, limit_file_size=400)
    assert code == 1 and "cannot write" in output and "File too large" in output, output
    assert list(out.parent.iterdir()) == [] and sorted(p.name for p in run.iterdir()) == before


def test_report_of_a_sweep_never_writes_through_a_linked_trial_folder(tmp_path) -> None:
    sweep = small_sweep(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(sweep / "trial-001", elsewhere)
    (sweep / "trial-001").symlink_to(elsewhere)
    code, output = cli("report", sweep, "--html")
    assert code == 2 and f"{sweep / 'trial-001'}: a symbolic link out of {sweep}" in output, output
    assert not (elsewhere / "report.html").exists() and not (sweep / "report.html").exists()
    assert not (sweep / "trial-000" / "report.html").exists()  # refused before the first page


def test_report_of_a_sweep_checks_the_room_for_its_pages_first(tmp_path, monkeypatch) -> None:
    sweep = small_sweep(tmp_path)
    monkeypatch.setattr(files, "free_bytes", lambda path: 3_000_000)
    code, output = cli("report", sweep, "--html")
    assert code == 1 and "3.0 MB free, but the HTML reports take about" in output, output
    assert not list(sweep.rglob("report.html"))


def small_sweep(folder: Path, **keys) -> Path:
    (folder / "base.yaml").write_text(yaml.safe_dump(base_config(folder, epochs=2, checkpoint_every=None)))
    sweep = {"base": "base.yaml", "parameters": {"optimizer.lr": [0.01, 0.03]}, **keys}
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    result = run_sweep([folder / "sweep.yaml"], jobs=1)
    return result.directory


# --- terminal text ---------------------------------------------------------------------------------------------------


HOSTILE = "evil\x1b]0;pwned\x07\x1b[2J\x9b31m\u202etxt.exe\u2066\rX"


def test_no_control_character_from_data_reaches_the_terminal(trained, tmp_path) -> None:
    runs = tmp_path / "runs"
    run = Path(shutil.copytree(trained, runs / f"run-{HOSTILE}"))
    summary = json.loads((run / "summary.json").read_text())
    summary.update(name=HOSTILE, status="failed", error=f"boom {HOSTILE}")
    (run / "summary.json").write_text(json.dumps(summary))
    table = tmp_path / "table.csv"
    column = "a\x1b[31m\x07\u202eb"  # no ';': the CSV reader would take it for the separator
    table.write_text(f"{column},label\n" + "".join(f"{i % 7},{column if i % 2 else 'b'}\n" for i in range(40)))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data": {"source": "csv", "path": str(table), "target": "label"},
                                      "model": {"hidden": [3]}, "loss": "cross_entropy"}))  # fmt: skip
    commands = [
        ["runs", runs], ["runs", runs, "--format", "markdown"],
        ["report", run], ["report", run, "--format", "markdown"],
        ["compare", run, trained], ["compare", run, trained, "--format", "markdown"],
        ["validate", config],
    ]  # fmt: skip
    for command in commands:
        code, output = cli(*command)
        assert code == 0 and not any(char in output for char in CONTROLS), (command, output)
        shown = "[31m" if command[0] == "validate" else "\\u001b]0;pwned\\u0007"
        assert shown in output, (command, output)  # shown, escaped
    code, output = cli("runs", runs, "--format", "json")
    listed = json.loads(output)  # the escapes are JSON escapes: JSON stays JSON, and reads back the names
    assert [entry["name"] for entry in listed] == [f"run-{HOSTILE}"], output


OUTPUT_CALLS = {"echo", "secho", "print"}
ALLOWED_OUTPUT = {("autobp/cli.py", "_say"), ("autobp/training/progress.py", "_line")}


def test_every_output_path_passes_the_sanitizer() -> None:
    """Structural: the CLI prints through `_say` only, progress lines through `_line` only, and both call
    terminal_safe; nothing else in autobp prints or writes to standard output or error."""
    found = set()
    for path in sorted((ROOT / "autobp").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for function in [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for call in [node for node in ast.walk(function) if isinstance(node, ast.Call)]:
                name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
                target = ast.unparse(call.func)
                if name in OUTPUT_CALLS or target.startswith(("sys.stdout.write", "sys.stderr.write")):
                    found.add((str(path.relative_to(ROOT)), function.name))
                    assert "terminal_safe(" in ast.unparse(function), (path, function.name)
    assert found == ALLOWED_OUTPUT
    cli_source = (ROOT / "autobp" / "cli.py").read_text()
    assert cli_source.count("typer.echo(") == 1 and "_say(" in cli_source


# --- the TensorBoard export -------------------------------------------------------------------------------------


def test_a_tensorboard_export_killed_by_sigterm_cleans_up_like_ctrl_c(trained, tmp_path) -> None:
    run = fresh(trained, tmp_path)
    assert cli("export", run, "--format", "tensorboard")[0] == 0
    earlier = sorted(p.relative_to(run) for p in (run / "tensorboard").rglob("*"))
    script = ("import os, signal, sys\n"
              "from autobp.tools import tensorboard_export as tb\n"
              "write = tb._add_gradients\n"
              "def killed(*args):\n"
              "    write(*args)\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "    return 0\n"
              "tb._add_gradients = killed\n"
              f"sys.argv = ['autobp', 'export', {str(run)!r}, '--format', 'tensorboard']\n"
              "from autobp.cli import main\n"
              "main()\n")  # fmt: skip
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=DEADLINE)
    assert process.returncode == 130 and process.stderr == "interrupted\n", process.stderr  # not killed outright
    assert not [p for p in run.iterdir() if p.name.startswith(".tensorboard")]
    assert sorted(p.relative_to(run) for p in (run / "tensorboard").rglob("*")) == earlier


def test_tensorboard_out_onto_links_and_files_follows_the_output_rule(trained, tmp_path) -> None:
    run = fresh(trained, tmp_path)
    export = tmp_path / "exports" / "tb"
    export.parent.mkdir()
    assert cli("export", run, "--format", "tensorboard", "-o", export)[0] == 0
    link = tmp_path / "tb-link"
    link.symlink_to(export)
    code, output = cli("export", run, "--format", "tensorboard", "-o", link)
    assert code == 0 and link.is_symlink() and link.resolve() == export, output
    assert [p.name for p in export.iterdir()][0].startswith("events.out.tfevents.")
    assert sorted(p.name for p in export.parent.iterdir()) == ["tb"]  # nothing moved aside, nothing staged
    events = next(export.iterdir())
    content = events.read_bytes()
    code, output = cli("export", run, "--format", "tensorboard", "-o", events)
    assert code == 2 and "a file, not a folder" in output, output
    assert events.read_bytes() == content and sorted(p.name for p in export.parent.iterdir()) == ["tb"]


@pytest.mark.parametrize("damage", ["infinite counts", "text steps"])
def test_hostile_histogram_values_are_refused_naming_the_file(trained, tmp_path, damage) -> None:
    run = fresh(trained, tmp_path)
    with np.load(run / "histograms.npz") as archive:
        arrays = dict(archive)
    if damage == "infinite counts":
        arrays["counts"] = arrays["counts"].astype(np.float64)
        arrays["counts"][0, 0, 0, :2] = [np.inf, -np.inf]
    else:
        arrays["steps"] = arrays["steps"].astype(str)
    np.savez(run / "histograms.npz", **arrays)
    code, output = cli("export", run, "--format", "tensorboard")
    assert code == 2 and f"{run / 'histograms.npz'}: " in output, output
    assert not (run / "tensorboard").exists() and not [p for p in run.iterdir() if p.name.endswith(".tmp")]
