"""The CLI's options in click's idiom: choices from their owners (so the shell completes them), and one meaning of
-o/--output across commands, with train's and sweep's former --output refused rather than silently reread."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONFIGS, autobp_process
from typer.testing import CliRunner

from autobp.cli import app
from autobp.sweeps import EXECUTORS
from autobp.tools import formats


@pytest.mark.parametrize("words, choices", [
    ("report RUN --format", formats.REPORT),
    ("compare RUN --format", formats.DOCUMENT),
    ("runs --format", formats.DOCUMENT),
    ("graph RUN --format", formats.GRAPH),
    ("export RUN --format", formats.EXPORT),
    ("sweep --executor", EXECUTORS),
    ("doctor RUN --executor", EXECUTORS),
], ids=lambda value: value if isinstance(value, str) else None)  # fmt: skip
def test_the_shell_completes_each_choice_from_its_owner(words: str, choices: tuple[str, ...]) -> None:
    typed = f"autobp {words} "
    answer = autobp_process(env={"_AUTOBP_COMPLETE": "complete_bash", "COMP_WORDS": typed,
                                 "COMP_CWORD": str(len(typed.split()))})  # fmt: skip
    assert answer.stdout.split() == list(choices)


@pytest.mark.parametrize("words", [["report", "RUN"], ["graph", "RUN"], ["export", "RUN"], ["runs"], ["sweep"]])
def test_a_value_outside_the_choices_is_a_usage_error(words: list[str]) -> None:
    option = "--executor" if words == ["sweep"] else "--format"
    result = CliRunner().invoke(app, [*words, option, "nope"])
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output
    assert "'nope' is not one of" in result.output


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_the_former_output_of_train_and_sweep_names_output_dir_and_writes_nothing(tmp_path: Path, command: str) -> None:
    target = tmp_path / "runs"
    result = CliRunner().invoke(app, [command, str(CONFIGS / "xor.yaml"), "--output", str(target), "--quiet"])
    assert result.exit_code == 2
    assert result.output == f"error: --output is now --output-dir (the folder receiving the directories it writes): " \
                            f"--output-dir {target}\n"
    assert not target.exists()


def test_output_dir_receives_the_run_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", str(CONFIGS / "xor.yaml"), "--output-dir", str(tmp_path), "--quiet",
                                      "--set", "training.epochs=1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    assert result.output.splitlines()[-1] == f"run directory: {run_dir}"


@pytest.mark.parametrize("spelling", ["-o", "--output", "--out"])
def test_every_spelling_of_o_is_the_file_predict_writes(tmp_path: Path, spelling: str) -> None:
    trained = CliRunner().invoke(app, ["train", str(CONFIGS / "iris.yaml"), "--output-dir", str(tmp_path), "--quiet",
                                       "--set", "training.epochs=2"])  # fmt: skip
    run_dir = Path(trained.output.splitlines()[-1].removeprefix("run directory: "))
    streamed = CliRunner().invoke(app, ["predict", str(run_dir), str(CONFIGS / "data" / "iris.csv")])
    target = tmp_path / "p.csv"
    written = CliRunner().invoke(app, ["predict", str(run_dir), str(CONFIGS / "data" / "iris.csv"), spelling, str(target)])
    assert written.exit_code == 0 and written.stdout.startswith(f"wrote 150 predictions to {target}"), written.output
    assert target.read_text() == streamed.stdout
