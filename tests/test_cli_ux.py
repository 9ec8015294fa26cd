"""A new user's first hour at the command line: --version, usage lines, shell completion, what `validate` found,
and progress while `train` and `gradcheck` work."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import CONFIGS, autobp_process
from typer.testing import CliRunner

import autobp
from autobp.cli import app
from autobp.training.entry import train

COMMANDS = ("train", "validate", "sweep", "schema", "predict", "gradcheck", "report", "compare", "runs", "export")


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert (result.exit_code, result.stdout) == (0, f"autobp {autobp.__version__}\n")


@pytest.mark.parametrize("command", COMMANDS)
def test_usage_lines_name_arguments_plainly(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], prog_name="autobp")
    assert result.exit_code == 0, result.output
    usage = result.stdout.splitlines()[0]
    assert usage.startswith(f"Usage: autobp {command} [OPTIONS]") and "{" not in usage
    expected = {"train": "[CONFIG]", "validate": "CONFIG", "predict": "RUN_DIR DATA", "compare": "RUN_OR_SWEEP...",
                "runs": "[DIR]", "sweep": "[SWEEP_OR_CONFIG...]", "schema": ""}  # fmt: skip
    if command in expected:
        assert usage == f"Usage: autobp {command} [OPTIONS] {expected[command]}".rstrip()


def test_shell_completion_script_and_answers() -> None:
    script = autobp_process("--show-completion", "bash")
    assert script.returncode == 0 and "_AUTOBP_COMPLETE=complete_bash" in script.stdout
    commands = autobp_process(env={"_AUTOBP_COMPLETE": "complete_bash", "COMP_WORDS": "autobp tr", "COMP_CWORD": "1"})
    assert commands.stdout.split() == ["train"]
    options = autobp_process(env={"_AUTOBP_COMPLETE": "complete_bash", "COMP_WORDS": "autobp compare --co",
                                  "COMP_CWORD": "2"})  # fmt: skip
    assert options.stdout.split() == ["--columns"]


def test_help_imports_neither_rich_nor_numpy() -> None:
    # What keeps `autobp --help` fast: the heavy modules load only in the commands that use them.
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "autobp", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--install-completion" in result.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "typer" in imported and not imported & {"rich", "numpy", "pydantic", "yaml", "tqdm"}


def findings(stdout: str) -> dict[str, str]:
    """The comment lines `validate` ends with, by their label."""
    lines = [line[2:] for line in stdout.splitlines() if line.startswith("# ")]
    assert lines[-1] == "ok"
    return dict(line.split(": ", 1) for line in lines[:-1])


def test_validate_ends_with_the_classes_split_and_parameters_it_found() -> None:
    result = CliRunner().invoke(app, ["validate", str(CONFIGS / "iris.yaml")])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["data"]["source"] == "csv"  # still a config file, the findings are comments
    with open(CONFIGS / "data" / "iris.csv", newline="") as handle:
        species = Counter(row["species"] for row in csv.DictReader(handle))
    found = findings(result.stdout)
    total = sum(species.values())
    validation = round(0.2 * total)
    assert found["rows"] == f"{total} ({total - validation} for training, {validation} for validation)"
    assert found["features"] == "4 (sepal_length, sepal_width, petal_length, petal_width)"
    assert found["classes"] == f"3 ({', '.join(f'{name}: {species[name]}' for name in sorted(species))})"
    assert found["network"] == f"4 → 16 → 3 (relu, identity), {(4 + 1) * 16 + (16 + 1) * 3} parameters"


def test_validate_of_a_regression_names_its_targets_in_the_data_units(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 3)), rng.uniform(-5, 50, (40, 2))
    np.savez(tmp_path / "data.npz", X=X, y=y)
    config = tmp_path / "config.yaml"
    config.write_text("data: {source: npz, path: data.npz, val_fraction: 0.25}\nmodel: {hidden: [8]}\nloss: mse\n")
    result = CliRunner().invoke(app, ["validate", str(config)])
    assert result.exit_code == 0, result.output
    found = findings(result.stdout)
    assert found["rows"] == "40 (30 for training, 10 for validation)"
    low, high = y.min(axis=0), y.max(axis=0)
    assert found["targets"] == f"2 (y0 {low[0]:.4g} to {high[0]:.4g}, y1 {low[1]:.4g} to {high[1]:.4g})"
    assert found["network"] == f"3 → 8 → 2 (tanh, identity), {(3 + 1) * 8 + (8 + 1) * 2} parameters"


def on_a_terminal(*args: str) -> tuple[int, str]:
    """Run `autobp ARGS` with standard error on a pseudo-terminal (120 columns); its exit code and what it drew."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "autobp", *args], stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    drawn = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 0.5)
        try:
            chunk = os.read(leader, 65536) if ready else b""
        except OSError:  # the terminal closed: the process has ended
            break
        if not chunk and process.poll() is not None:
            break
        drawn += chunk
    os.close(leader)
    return process.wait(timeout=120), drawn.decode(errors="replace")


def test_train_draws_a_bar_with_a_rate_on_a_terminal(tmp_path: Path) -> None:
    code, drawn = on_a_terminal("train", str(CONFIGS / "xor.yaml"), "--output-dir", str(tmp_path), "--set",
                                "training.epochs=2")  # fmt: skip
    assert code == 0, drawn
    assert re.search(r"xor: +\d+%\|.*\| \d+/\d+ \[\d\d:\d\d<", drawn) and "step/s" in drawn, drawn


class Terminal(io.StringIO):
    """Standard error as a terminal: the progress report draws its bar here."""

    def isatty(self) -> bool:
        return True


def test_train_bar_moves_by_every_step_within_an_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autobp.training import progress

    monkeypatch.setattr(progress, "BAR_SECONDS", 0.0)  # a frame per move, however fast the machine
    monkeypatch.setattr(sys, "stderr", Terminal())
    train(CONFIGS / "xor.yaml", ["training.epochs=2", "training.batch_size=16"], output=tmp_path, quiet=False)
    drawn = sys.stderr.getvalue()
    monkeypatch.undo()
    steps = int(re.search(r"\d+/(\d+) \[", drawn)[1])
    done = [int(n) for n in re.findall(rf"(\d+)/{steps} \[", drawn)]
    assert steps > 2 and done == sorted(done) and set(done) == set(range(steps + 1)), drawn  # every step, in order


def test_gradcheck_shows_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    from autobp.tools.gradcheck import DIRECTIONS
    from autobp.training import progress

    code, drawn = on_a_terminal("gradcheck", str(CONFIGS / "xor.yaml"), "--set", "model.hidden=[64, 64]")
    assert code == 0 and "gradcheck xor: central differences, layer" in drawn and "passes/s" in drawn
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)  # in a log: a plain line every LINE_SECONDS at most
    result = CliRunner().invoke(app, ["gradcheck", str(CONFIGS / "xor.yaml")])
    assert result.exit_code == 0 and result.stdout.startswith("gradcheck xor: 2 layers, 22 parameters")
    lines = result.stderr.splitlines()
    counts = [int(re.match(r"gradcheck xor: (\d+)/(\d+) passes, ", line)[1]) for line in lines]
    # 22 entries by central differences (2 evaluations each), 3 JVPs for each of 4 arrays, 22 timed passes
    total = 2 * 22 + DIRECTIONS * 4 + 22
    assert counts == sorted(counts) and counts[-1] == total and f"/{total} passes" in lines[-1]
    assert "timing forward mode against reverse mode" in lines[-1]
    quiet = CliRunner().invoke(app, ["gradcheck", str(CONFIGS / "xor.yaml"), "--quiet"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
