"""Runs that survive everything, round 2: outputs that never clobber, terminals that never obey data, every damaged
or hostile file named with exit code 2, resume that reads everything before it writes, and the cap held end to end.

Each test here failed on the code before issue 26 (a traceback, a hang, a replaced FIFO, raw escapes, a lie)."""

from __future__ import annotations

import ast
import json
import os
import resource
import shutil
import socket
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from conftest import ROOT, cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import autobp
from autobp.common import files
from autobp.rundir.status import Status
from autobp.sweeps.run import run_sweep
from autobp.tools import tensorboard_export

DEADLINE = 60  # seconds: a command still running after this long has hung
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
        "predict": ["predict", run, run.parent.parent / "examples.npz", "-o"],
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


@pytest.mark.parametrize("command", ["graph", "report --html", "export onnx", "predict", "export tensorboard"])
def test_an_output_named_dev_stdout_onto_a_pipe_is_refused_as_the_pipe(trained, command) -> None:
    """`-o /dev/stdout` piped into another program: /dev/stdout leads through /proc to a pipe that has no path of its
    own; it is the named pipe that is refused (exit 2), not a write into /proc that fails."""
    tensorboard = ["export", trained, "--format", "tensorboard", "-o"]
    args = tensorboard if command == "export tensorboard" else writers(trained)[command]
    code, output = autobp_process(*args, "/dev/stdout")  # its standard output is a pipe
    assert code == 2 and f"{args[-1]} /dev/stdout: a named pipe" in output, output


@pytest.mark.parametrize("command", list(SUFFIX))
def test_ctrl_c_while_an_output_is_written_exits_130_and_keeps_the_earlier_output(trained, tmp_path, command) -> None:
    """Ctrl-C arriving as the new output is flushed to disk: exit 130, the earlier file as it was, no temporary."""
    out = tmp_path / "out" / f"result{SUFFIX[command]}"
    out.parent.mkdir()
    out.write_text("earlier")
    script = ("import os, sys\n"
              "def ctrl_c(fd):\n"
              "    raise KeyboardInterrupt\n"
              "os.fsync = ctrl_c\n"
              f"sys.argv = ['autobp', *{[str(a) for a in writers(trained)[command]]!r}, {str(out)!r}]\n"
              "from autobp.cli import main\n"
              "main()\n")  # fmt: skip
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=DEADLINE)
    assert process.returncode == 130 and process.stderr == "interrupted\n", process.stderr
    assert [p.name for p in out.parent.iterdir()] == [out.name] and out.read_text() == "earlier"


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
    trained_on_it = autobp.train(config, ["training.epochs=1"], output=tmp_path / "labels").run_dir
    code, output = cli("predict", trained_on_it, table)  # class names in the CSV header and rows, to a terminal
    assert code == 0 and "p_a\\u001b[31m" in output and not any(char in output for char in CONTROLS), output
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


# --- every reader bounded ----------------------------------------------------------------------------------------


def npy_bytes(shape: str, body: bytes = b"\0" * 64) -> bytes:
    """An .npy file whose header says `shape` (any text), followed by `body`."""
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + body


LYING_SHAPES = ["(-1, 2)", "(4, -2)", "(-2, -2)", f"({2**70}, 2)", f"({10**30}, 2)"]


@pytest.mark.parametrize("shape", LYING_SHAPES)
def test_npy_headers_with_negative_or_overflowing_shapes_are_named(trained, tmp_path, shape) -> None:
    features = tmp_path / "X.npy"
    features.write_bytes(npy_bytes(shape))
    np.save(tmp_path / "y.npy", np.zeros(4))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data": {"source": "npy", "path": str(features), "target_path": str(tmp_path / "y.npy")},
                                      "model": {"hidden": [3]}, "loss": "mse", "output": {"dir": str(tmp_path / "runs")}}))  # fmt: skip
    for command in (["validate", config], ["train", config, "--quiet"], ["predict", trained, features]):
        code, output = cli(*command)
        assert code == 2 and f"{features}: " in output, (command, output)
    archive = tmp_path / "X.npz"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("X.npy", npy_bytes(shape))
    code, output = cli("predict", trained, archive)
    assert code == 2 and f"{archive}: array 'X.npy' " in output, output
    assert not (tmp_path / "runs").exists()


def journal_search(folder: Path):
    from autobp.sweeps.search import Search

    settings = {"method": "tpe", "seed": 0, "parameters": {"model.hidden": [[4], [8]],
                                                          "optimizer.lr": {"min": 1e-3, "max": 1.0, "log": True}}}  # fmt: skip
    study = Search(folder, settings, "min", max_epochs=1)
    for index in range(3):
        study.start(f"trial-{index:03d}", index)
        study.finish(f"trial-{index:03d}", Status.COMPLETED, 0.5 + index)
    return settings


def test_a_journal_cut_mid_line_keeps_every_entry_before_the_cut(tmp_path) -> None:
    from autobp.sweeps.search import JOURNAL_FILE, Search, check_journal

    settings = journal_search(tmp_path)
    journal = tmp_path / JOURNAL_FILE
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-9])  # a full disk or power loss in the middle of the last entry
    notes: list[str] = []
    check_journal(tmp_path, settings["parameters"], notes)
    entries = whole.count(b"\n") - 1
    assert notes == [f"{journal}: its last line was cut mid-write and is dropped; the {entries} entries before it are kept"]
    reopened = Search(tmp_path, settings, "min", max_epochs=1)
    reopened.start("trial-003", 3)
    reopened.finish("trial-003", Status.COMPLETED, 0.1)
    states = [trial.state.name for trial in Search(tmp_path, settings, "min", max_epochs=1).study.trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]  # the cut trial's end was lost: failed, not lost


def edited_journal(journal: Path, how: str) -> None:
    lines = journal.read_bytes().splitlines(keepends=True)
    if how == "unknown operation":
        lines.append(b'{"op_code": 99, "worker_id": "x"}\n')
    elif how == "out-of-range choice":
        entries = [json.loads(line) for line in lines]
        for entry in entries:
            if entry.get("param_name") == "model.hidden":
                entry["param_value_internal"] = 7
        lines = [json.dumps(entry).encode() + b"\n" for entry in entries]
    elif how == "not JSON":
        lines.insert(1, b"{nope\n")
    else:
        lines.insert(1, b"[" * 100_000 + b"]" * 100_000 + b"\n")
    journal.write_bytes(b"".join(lines))


@pytest.mark.parametrize(("how", "expected"), [
    ("unknown operation", "unknown operation 99"),
    ("out-of-range choice", "a value of model.hidden outside its range (7)"),
    ("not JSON", "line 2: not a journal entry"),
    ("deeply nested", "line 2: not a journal entry"),
])  # fmt: skip
def test_sweep_resume_names_a_journal_it_cannot_replay(tmp_path, how, expected) -> None:
    directory = tpe_sweep(tmp_path)
    edited_journal(directory / "study.journal", how)
    before = (directory / "sweep.yaml").read_bytes()
    code, output = cli("sweep", "--resume", directory, "--quiet")
    assert code == 2 and f"{directory / 'study.journal'}: " in output and expected in output, output
    assert (directory / "sweep.yaml").read_bytes() == before


def tpe_sweep(folder: Path) -> Path:
    sweep = folder / "sweep.yaml"
    (folder / "base.yaml").write_text(yaml.safe_dump(base_config(folder, epochs=1, checkpoint_every=None)))
    sweep.write_text(yaml.safe_dump({"base": "base.yaml", "method": "tpe", "n_trials": 2, "seed": 1, "parameters": {
        "optimizer.lr": {"min": 1e-3, "max": 0.1, "log": True}, "model.hidden": [[4], [8]]}}))  # fmt: skip
    return run_sweep([sweep], jobs=1).directory


def test_sweep_resume_recovers_a_journal_cut_mid_line_and_says_so(tmp_path) -> None:
    directory = tpe_sweep(tmp_path)
    journal = directory / "study.journal"
    content = journal.read_bytes()
    journal.write_bytes(content[:-20])
    (directory / "trial-001" / "summary.json").unlink()  # so that the resumed sweep asks the study again
    code, output = cli("sweep", "--resume", directory, "--quiet")
    kept = content.count(b"\n") - 1
    assert code == 0 and f"note: {journal}: its last line was cut mid-write and is dropped; the {kept} entries" in output
    assert all(line.endswith(b"}") for line in journal.read_bytes().splitlines())  # every entry whole again


DEEP = "[" * 100_000 + "]" * 100_000


def test_deeply_nested_summaries_are_named_and_the_rest_still_read(trained, tmp_path) -> None:
    hostile = fresh(trained, tmp_path)
    (hostile / "summary.json").write_text(DEEP)
    other = Path(shutil.copytree(trained, tmp_path / "runs" / "other"))
    named = f"{hostile / 'summary.json'}: "
    code, output = cli("runs", tmp_path / "runs")
    assert code == 0 and "other" in output and named in output, output
    for command in (["report", hostile], ["compare", hostile, other]):
        code, output = cli(*command)
        assert code == 0 and named in output, (command, output)
    assert any(note.startswith(named) for note in autobp.load_run(hostile).notes)
    code, output = cli("train", "--resume", hostile, "--quiet")  # ignored: the checkpoint says where the run is
    assert code == 0 and named in output, output


def test_a_deeply_nested_sweep_record_is_named(tmp_path) -> None:
    directory = small_sweep(tmp_path)
    (directory / "sweep.yaml").write_text(DEEP)
    for command in (["sweep", "--resume", directory], ["report", directory, "--html"]):
        code, output = cli(*command)
        assert code == 2 and f"{directory / 'sweep.yaml'}: " in output, (command, output)
    assert len(autobp.load_sweep(directory).trials) == 2  # its trials are ordinary runs, still read
    code, output = cli("runs", tmp_path / "runs")
    assert code == 0 and "sweep.yaml" in output, output


# --- resume reads everything before it writes --------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["nan_counts of another shape", "steps out of order", "layers as numbers"])
def test_an_inconsistent_histograms_file_is_dropped_with_a_note_and_resume_completes(trained, tmp_path, damage) -> None:
    run = fresh(trained, tmp_path)
    with np.load(run / "histograms.npz") as archive:
        arrays = dict(archive)
    if damage == "nan_counts of another shape":
        arrays["nan_counts"] = arrays["nan_counts"][:, :1]
    elif damage == "steps out of order":
        arrays["steps"] = arrays["steps"][::-1].copy()
    else:
        arrays["layers"] = np.arange(len(arrays["layers"]))
    np.savez(run / "histograms.npz", **arrays)
    code, output = cli("train", "--resume", run, "--set", "training.epochs=5", "--quiet")
    assert code == 0 and f"{run / 'histograms.npz'}: " in output and "its earlier snapshots are dropped" in output, output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 5
    assert autobp.load_run(run).notes == []  # the new histograms.npz reads back


def test_resume_refuses_a_damaged_checkpoint_before_writing_anything(trained, tmp_path) -> None:
    run = fresh(trained, tmp_path)
    with np.load(run / "checkpoint.npz") as archive:
        arrays = {key: value for key, value in archive.items() if not key.startswith("rng")}
    np.savez(run / "checkpoint.npz", **arrays)
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    code, output = cli("train", "--resume", run, "--set", "training.epochs=5", "--quiet")
    assert code == 2 and f"{run / 'checkpoint.npz'}: not an autobp checkpoint" in output, output
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before


def test_a_resume_that_cannot_write_its_logs_records_failed_with_the_reason(trained, tmp_path) -> None:
    run = fresh(trained, tmp_path)
    limit = (run / "summary.json").stat().st_size + 600  # summary.json fits, gradients.csv does not
    assert (run / "gradients.csv").stat().st_size > limit
    code, output = autobp_process("train", "--resume", run, "--set", "training.epochs=5", "--quiet",
                                  limit_file_size=limit)  # fmt: skip
    assert code == 1 and "gradients.csv: cannot write it (File too large)" in output, output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "gradients.csv: cannot write it (File too large)" in summary["error"]
    assert summary["epochs"] == 3  # what the run had trained, not 0
    code, output = cli("train", "--resume", run, "--set", "training.epochs=5", "--quiet")
    assert code == 0 and json.loads((run / "summary.json").read_text())["epochs"] == 5, output


# --- model.npz checked as a whole --------------------------------------------------------------------------------


@pytest.mark.parametrize(("damage", "expected"), [
    ("x_mean too short", "x_mean is float64 (1,), not 2 numbers"),
    ("x_std of 0", "x_std holds a scale ≤ 0"),
    ("x_mean not finite", "x_mean holds values that are not finite"),
    ("a surplus class name", "class_names has 3 names for the 2 outputs of the last layer"),
    ("no class names", "has no class_names, but the run's loss cross_entropy is classification"),
    ("feature names too many", "feature_names has 3 names for the 2 inputs of layer0"),
    ("layers that do not chain", "layer1.weight takes 5 inputs, the layer before gives 6"),
])  # fmt: skip
def test_a_damaged_model_file_is_named_before_predict_or_export_use_it(trained, tmp_path, damage, expected) -> None:
    run = fresh(trained, tmp_path)
    with np.load(run / "model.npz") as archive:
        arrays = dict(archive)
    if damage == "x_mean too short":
        arrays["x_mean"] = arrays["x_mean"][:1]
    elif damage == "x_std of 0":
        arrays["x_std"][0] = 0.0
    elif damage == "x_mean not finite":
        arrays["x_mean"][1] = np.nan
    elif damage == "a surplus class name":
        arrays["class_names"] = np.array([*arrays["class_names"], "extra"])
    elif damage == "no class names":
        del arrays["class_names"]
        arrays["target_names"] = np.array(["a", "b"])
    elif damage == "feature names too many":
        arrays["feature_names"] = np.array(["x0", "x1", "x2"])
    else:
        arrays["layer1.weight"] = arrays["layer1.weight"][:5]
    np.savez(run / "model.npz", **arrays)
    for command in (["predict", run, tmp_path / "examples.npz"], ["export", run, "--format", "onnx"]):
        code, output = cli(*command)
        assert code == 2 and f"{run / 'model.npz'}: " in output and expected in output, (command, output)
    assert not (run / "model.onnx").exists()
    config = tmp_path / "again.yaml"
    config.write_text(yaml.safe_dump({**base_config(tmp_path), "model": {"hidden": [6, 6], "activation": "tanh",
                                                                        "init_from": str(run)}}))  # fmt: skip
    if damage not in ("no class names",):  # init_from takes the weights only; names that fit them are not needed
        code, output = cli("train", config, "--quiet")
        assert code == 2 and f"{run / 'model.npz'}: " in output, output


# --- the cap, end to end -----------------------------------------------------------------------------------------


def test_a_sweep_at_the_trial_cap_writes_a_record_it_reads_back(tmp_path) -> None:
    """Plan only: 10 × 10 × 10 × 10 = 10,000 trials (the cap), recorded and read back as sweep --resume reads it."""
    from autobp.sweeps.plan import plan_sweep
    from autobp.sweeps.run import _record
    from autobp.sweeps.sweepfile import MAX_TRIALS
    from autobp.sweeps.record import read_record

    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"data": {"source": "xor", "n_samples": 20},
                                                        "model": {"hidden": [3]}, "loss": "cross_entropy"}))  # fmt: skip
    values = {"optimizer.lr": [round(0.001 * i, 3) for i in range(1, 11)], "seed": list(range(10)),
              "model.hidden": [[i] for i in range(1, 11)], "training.batch_size": list(range(1, 11))}  # fmt: skip
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "parameters": values}))
    sweep = plan_sweep([tmp_path / "sweep.yaml"])
    assert len(sweep.trials) == MAX_TRIALS
    text = _record(sweep)
    assert len(text) > 1_000_000  # larger than a config file may be
    (tmp_path / "sweep.yaml").write_text(text)
    record = read_record(tmp_path)
    assert len(record.trials) == MAX_TRIALS and record.trials[-1].values == sweep.trials[-1].values


# --- orphaned temporaries ----------------------------------------------------------------------------------------


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_orphaned_temporaries_are_removed_by_the_next_resume_sweep_or_export(trained, tmp_path) -> None:
    run = fresh(trained, tmp_path)
    alive = subprocess.Popen(["sleep", "60"])
    try:
        orphans = [".checkpoint.npz.a1b2c3d4.tmp", f".checkpoint.npz.{dead_pid()}-x9y8z7w6.tmp", f".model.npz.{dead_pid()}-q.tmp"]
        busy = f".checkpoint.npz.{alive.pid}-k3j4h5g6.tmp"  # another process still writing it
        for name in [*orphans, busy]:
            (run / name).write_bytes(b"\0" * 1000)
        code, output = cli("train", "--resume", run, "--set", "training.epochs=4", "--quiet")
        assert code == 0, output
        assert sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp")) == [busy]
        (run / f".tensorboard.{dead_pid()}.34.tmp").mkdir()  # how the export named its staging before
        (run / f".tensorboard.{dead_pid()}-1.tmp").mkdir()
        assert cli("export", run, "--format", "tensorboard")[0] == 0
        assert sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp")) == [busy]
    finally:
        alive.kill()
        alive.wait()
    (tmp_path / "sweep-folder").mkdir()
    sweep = small_sweep(tmp_path / "sweep-folder")
    (sweep / f".trials.csv.{dead_pid()}-abc.tmp").write_text("half")
    code, output = cli("sweep", "--resume", sweep, "--quiet")
    assert code == 0 and not [p for p in sweep.iterdir() if p.name.endswith(".tmp")], output


# --- a fuzz of every reader --------------------------------------------------------------------------------------

FUZZ = settings(max_examples=80, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
SIZES = st.integers(-3, 5) | st.sampled_from([2**31, 2**63, 2**70, 10**30, -(2**63)])
SHAPES = st.lists(SIZES, max_size=4).map(tuple)
DESCRS = st.sampled_from(["<f8", "<f4", "<i8", "|u1", "<U5", "|O", "|V4", "<c16", "bogus", "<f8'", "", "|b1"])
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=12)  # fmt: skip


def header_bytes(shape_text: str, descr: str, fortran: bool, body: bytes) -> bytes:
    header = f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape_text}, }}".encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + body


def damage_arrays(arrays: dict[str, np.ndarray], data: st.DataObject) -> None:
    """One to three damages to a file's arrays: one dropped, reshaped, reversed, cut, made text or JSON-like text,
    or given NaN, infinite, zero, negative or huge values."""
    for _ in range(data.draw(st.integers(1, 3))):
        if not arrays:
            return
        key = data.draw(st.sampled_from(sorted(arrays)))
        change = data.draw(st.sampled_from(["drop", "shape", "reverse", "cut", "text", "values"]))
        numeric, listed = arrays[key].dtype.kind in "iuf", arrays[key].ndim > 0
        if change == "drop":
            del arrays[key]
        elif change == "shape":
            arrays[key] = np.resize(arrays[key], data.draw(st.lists(st.integers(0, 4), max_size=3)))
        elif change == "reverse" and listed:
            arrays[key] = arrays[key][::-1].copy()
        elif change == "cut" and listed:
            arrays[key] = arrays[key][: data.draw(st.integers(0, 2))]
        elif change == "text":
            arrays[key] = data.draw(st.sampled_from([arrays[key].astype(str), np.array("{}"), np.array('{"shuffle": 1}')]))
        elif numeric:
            with np.errstate(invalid="ignore", over="ignore"):  # 0 × inf: NaN is what this damage wants
                factor = data.draw(st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e308]))
                arrays[key] = arrays[key].astype(np.float64) * factor


def damaged_run(trained: Path, folder: Path, name: str, data: st.DataObject) -> Path:
    """A copy of the trained run in `folder` whose file `name` (.npz) has damaged arrays."""
    run = Path(shutil.copytree(trained, folder / "run"))
    with np.load(run / name) as archive:
        arrays = dict(archive)
    damage_arrays(arrays, data)
    np.savez(run / name, **arrays)
    return run


@FUZZ
@given(shape=SHAPES | st.text(max_size=12), descr=DESCRS, fortran=st.booleans(), body=st.binary(max_size=64))
def test_fuzz_npy_headers(tmp_path_factory, shape, descr, fortran, body) -> None:
    from autobp.common.errors import AutobpError
    from autobp.model.mapped import MappedArray

    folder = tmp_path_factory.mktemp("npy")
    content = header_bytes(shape if isinstance(shape, str) else repr(shape), descr, fortran, body)
    (folder / "X.npy").write_bytes(content)
    with zipfile.ZipFile(folder / "X.npz", "w") as archive:
        archive.writestr("X.npy", content)
    for read in (lambda: files.load_npz(folder / "X.npz"), lambda: MappedArray(folder / "X.npy", "data.path")):
        try:
            read()
        except AutobpError:
            pass


@FUZZ
@given(text=st.one_of(JSON_VALUES.map(json.dumps), st.text(max_size=40), st.sampled_from([DEEP, "{" * 5000, "[1e999]"])))
def test_fuzz_summaries(tmp_path_factory, text) -> None:
    from autobp.common.errors import AutobpError
    from autobp.rundir.summary import read_summary

    path = tmp_path_factory.mktemp("summary") / "summary.json"
    path.write_text(text)
    try:
        read_summary(path)
    except AutobpError:
        pass


@FUZZ
@given(document=st.one_of(JSON_VALUES.map(lambda v: yaml.safe_dump(v)), st.text(max_size=60),
                          st.sampled_from(["- " * 3000 + "x", "&a [*a]", "!!python/object:os.system x", DEEP])))  # fmt: skip
def test_fuzz_sweep_records(tmp_path_factory, document) -> None:
    from autobp.common.errors import AutobpError
    from autobp.sweeps.record import read_record

    folder = tmp_path_factory.mktemp("sweep")
    (folder / "sweep.yaml").write_text(document)
    try:
        read_record(folder)
    except AutobpError:
        pass


@pytest.fixture(scope="module")
def journal_lines(tmp_path_factory) -> tuple[dict, list[bytes]]:
    folder = tmp_path_factory.mktemp("journal")
    parameters = journal_search(folder)["parameters"]
    return parameters, (folder / "study.journal").read_bytes().splitlines(keepends=True)


@FUZZ
@given(data=st.data())
def test_fuzz_journals(tmp_path_factory, journal_lines, data) -> None:
    from autobp.common.errors import AutobpError
    from autobp.sweeps.search import Search, check_journal

    parameters, lines = journal_lines
    entries = [json.loads(line) for line in lines]
    for _ in range(data.draw(st.integers(0, 3))):
        entry = entries[data.draw(st.integers(0, len(entries) - 1))]
        key = data.draw(st.sampled_from(sorted(entry)))
        entry[key] = data.draw(JSON_VALUES | st.integers(-5, 20))
    content = b"".join(json.dumps(entry).encode() + b"\n" for entry in entries)
    content = content[: data.draw(st.integers(0, len(content)))] if data.draw(st.booleans()) else content
    folder = tmp_path_factory.mktemp("journal")
    (folder / "study.journal").write_bytes(content + data.draw(st.binary(max_size=20)))
    try:
        check_journal(folder, parameters, [])
        study = Search(folder, {"method": "tpe", "seed": 0, "parameters": parameters}, "min", max_epochs=1)
        study.start("trial-009", 9)
    except AutobpError:
        pass


@FUZZ
@given(data=st.data())
def test_fuzz_model_files(trained, tmp_path_factory, data) -> None:
    from autobp.common.errors import AutobpError
    from autobp.tools.predict import load_model, predict_file

    run = damaged_run(trained, tmp_path_factory.mktemp("model"), "model.npz", data)
    try:
        model = load_model(run)
    except AutobpError:
        return
    with np.errstate(divide="raise"):  # no division by a scale of 0 (weights near 1e308 may still overflow: finite)
        predict_file(model, trained.parent.parent / "examples.npz")


@FUZZ
@given(data=st.data())
def test_fuzz_histograms(trained, tmp_path_factory, data) -> None:
    from autobp.common.errors import AutobpError
    from autobp.rundir.histograms import QUANTITIES, read

    folder = damaged_run(trained, tmp_path_factory.mktemp("histograms"), "histograms.npz", data)
    try:
        histograms = read(folder)
    except AutobpError:
        return
    for layer in range(len(histograms.layers)):
        for quantity in QUANTITIES:
            histograms.percentiles(layer, quantity, (0, 50, 100))
    events = tensorboard_export._Events(folder / "tb")  # what the TensorBoard export makes of them
    try:
        tensorboard_export._add_distributions(events, SimpleNamespace(path=folder))
    finally:
        events.close()


@settings(max_examples=40, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.data())
def test_fuzz_checkpoints_resume_or_refuse_before_writing(trained, tmp_path_factory, data) -> None:
    """A damaged checkpoint is refused (exit 2 in the CLI) with the run directory as it was, or resumes cleanly."""
    from autobp.common.errors import AutobpError
    from autobp.training.entry import resume

    run = damaged_run(trained, tmp_path_factory.mktemp("checkpoint"), "checkpoint.npz", data)
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    try:
        resume(run, ["training.epochs=4"])
    except AutobpError:
        assert {path.name: path.read_bytes() for path in run.iterdir()} == before
