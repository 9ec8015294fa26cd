"""One gradient-health judgement: the end of `train`, summary.json and `autobp report` agree on every layer's verdict
and on every diagnosis, in the same order — on vanishing, threshold, low-learning-rate and diverged runs."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import CONFIGS
from typer.testing import CliRunner

from autobp.cli import app
from autobp.config.configfile import load_config
from autobp.health import judge
from autobp.model.prepare import prepare
from autobp.rundir.reader import read_run
from autobp.rundir.summary import read_summary
from autobp.training.entry import train
from autobp.config.overrides import override_value
from autobp.training.ending import RunResult, conclude, format_summary

VERDICT_LINE = re.compile(r"^  (layer\d+) \((\w+)\): ([\w ]+) \(median")
DIAGNOSIS_LINE = re.compile(r"^  (\w+)(?: \((layer\d+)\))?: ")


def train_cli(tmp_path: Path, config: str, *overrides: str) -> tuple[str, Path]:
    """`autobp train` as a user runs it: its printed output and the run directory."""
    args = ["train", str(CONFIGS / config), "--quiet", "--output-dir", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, *(item for o in overrides for item in ("--set", o))])
    assert result.exit_code in (0, 3), result.output
    return result.output, Path(result.output.strip().splitlines()[-1].removeprefix("run directory: "))


def printed(output: str) -> tuple[list[tuple[str, str]], list[tuple[str, str | None]]]:
    """(layer, verdict) and (kind, layer) pairs as `train` printed them."""
    lines = output.splitlines()
    verdicts = [(m[1], m[3]) for m in map(VERDICT_LINE.match, lines) if m]
    start = lines.index("diagnoses (most likely cause first):") + 1 if "diagnoses (most likely cause first):" in lines else len(lines)
    diagnoses = [(m[1], m[2]) for m in map(DIAGNOSIS_LINE.match, lines[start:]) if m and m[1] != "details"]
    return verdicts, diagnoses


def reported(run_dir: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str | None]]]:
    payload = json.loads(CliRunner().invoke(app, ["report", str(run_dir), "--format", "json"]).output)
    return ([(v["layer"], v["verdict"]) for v in payload["verdicts"]],
            [(d["kind"], d["layer"]) for d in payload["diagnoses"]])  # fmt: skip


def stored(run_dir: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str | None]]]:
    health = read_summary(run_dir / "summary.json").health
    return [(v.layer, v.verdict) for v in health.layers], [(d.kind, d.layer) for d in health.diagnoses]


def assert_agree(output: str, run_dir: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str | None]]]:
    judgement = printed(output)
    assert judgement == stored(run_dir) == reported(run_dir)
    return judgement


@pytest.mark.parametrize("config", ["deep_sigmoid.yaml", "iris.yaml", "sine.yaml"])
def test_the_trainers_own_judgement_is_the_files_to_the_last_digit(tmp_path: Path, config: str) -> None:
    """The trainer judges from what it holds (its config, the gradient rows it wrote): exactly the judgement that
    reading every file back gives, numbers included."""
    result = train(CONFIGS / config, ["training.epochs=3"], output=tmp_path)
    resolved, _ = prepare(CONFIGS / config, ["training.epochs=3", f"output.dir={tmp_path}"])
    assert load_config(result.run_dir / "config.yaml") == resolved  # the config the trainer judges with
    assert read_summary(result.run_dir / "summary.json").health == judge(read_run(result.run_dir)) == result.summary.health


def test_deep_sigmoid_every_output_names_the_same_vanishing_layers(tmp_path: Path) -> None:
    output, run_dir = train_cli(tmp_path, "deep_sigmoid.yaml", "training.epochs=5")
    verdicts, diagnoses = assert_agree(output, run_dir)
    vanishing = [layer for layer, verdict in verdicts if verdict == "vanishing"]
    assert vanishing[0] == "layer0" and len(vanishing) >= 2
    assert diagnoses[0] == ("vanishing_gradients", "layer0")
    (diagnosis,) = [d for d in read_summary(run_dir / "summary.json").health.diagnoses if d.kind == "vanishing_gradients"]
    assert diagnosis.layers == vanishing  # the diagnosis names every vanishing layer, not only the first
    assert f"details: autobp report {run_dir}" in output


def test_sgd_at_a_tiny_learning_rate_is_called_out_by_train_too(tmp_path: Path) -> None:
    output, run_dir = train_cli(tmp_path, "quickstart.yaml", "optimizer.name=sgd", "optimizer.lr=1e-5",
                                "training.epochs=3")  # fmt: skip
    _, diagnoses = assert_agree(output, run_dir)
    assert "learning_rate_low" in [kind for kind, _ in diagnoses]
    low = next(d for d in read_summary(run_dir / "summary.json").health.diagnoses if d.kind == "learning_rate_low")
    assert low.fix["optimizer.lr"] >= 1e-4  # raised at least tenfold, and printed as the fix
    assert f"set `optimizer.lr: {override_value(low.fix['optimizer.lr'])}`" in output


def test_a_run_that_blows_up_after_a_finite_start_leads_with_the_learning_rate(tmp_path: Path) -> None:
    output, run_dir = train_cli(tmp_path, "sine.yaml", "optimizer.name=sgd", "optimizer.lr=1e6", "training.epochs=2")
    assert "sine: diverged" in output
    verdicts, diagnoses = assert_agree(output, run_dir)
    assert diagnoses[0][0] == "learning_rate_high" and "exploding_gradients" not in [kind for kind, _ in diagnoses]
    high = read_summary(run_dir / "summary.json").health.diagnoses[0]
    assert "non-finite values from step" in high.message and high.fix["optimizer.lr"] <= 1e6 / 1e3
    assert "nan" not in "".join(line for line in output.splitlines() if VERDICT_LINE.match(line))
    health = read_summary(run_dir / "summary.json").health
    assert all(v.signal is not None for v in health.layers)  # medians over the finite logged values


@pytest.mark.parametrize("first, verdict", [("0.01", "vanishing"), ("0.0100001", "healthy")],
                         ids=["exactly 100 times smaller", "just above"])  # fmt: skip
def test_a_signal_exactly_100_times_smaller_is_vanishing_everywhere(tmp_path: Path, first: str, verdict: str) -> None:
    """The threshold is inclusive: layer0 at exactly 1/100 of the output layer's signal vanishes, a hair above does not."""
    _, source = train_cli(tmp_path, "quickstart.yaml", "training.epochs=2")
    run_dir = tmp_path / "exact"
    shutil.copytree(source, run_dir)
    with open(run_dir / "gradients.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    output_layer = rows[-1]["layer"]
    for row in rows:  # the output layer's signal 1.0 at every step, layer0's exactly 1/100 of it
        row["out_grad_norm"] = {"layer0": first, output_layer: "1.0"}.get(row["layer"], "0.5")
    with open(run_dir / "gradients.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = read_summary(run_dir / "summary.json")
    conclude(run_dir, summary)  # what the trainer does at the end of a run
    output = format_summary(RunResult(run_dir, summary.status, summary))
    verdicts, diagnoses = assert_agree(output, run_dir)
    assert verdicts[0] == ("layer0", verdict)
    assert (("vanishing_gradients", "layer0") in diagnoses) == (verdict == "vanishing")


@pytest.mark.parametrize("missing", ["model.init_from=no-such-model.npz"])
def test_a_sweep_with_a_missing_init_from_stops_before_any_trial_naming_it(tmp_path: Path, missing: str) -> None:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"base: {CONFIGS / 'xor.yaml'}\nparameters:\n  seed: [0, 1]\n")
    result = CliRunner().invoke(app, ["sweep", str(sweep), "--set", missing, "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "trial-000 (seed=0)" in result.output and "no-such-model.npz" in result.output
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_a_learning_rate_far_too_high_leads_even_without_a_blow_up(tmp_path: Path) -> None:
    """With sgd at lr 1e6 the tanh layers saturate instead of overflowing: the rate is the cause, listed first."""
    output, run_dir = train_cli(tmp_path, "quickstart.yaml", "optimizer.name=sgd", "optimizer.lr=1e6",
                                "training.epochs=2")  # fmt: skip
    _, diagnoses = assert_agree(output, run_dir)
    assert diagnoses[0][0] == "learning_rate_high" and len(diagnoses) > 1
