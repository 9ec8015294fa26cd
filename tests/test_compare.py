"""`autobp compare` and `autobp runs`: runs side by side with what differs, sweeps standing for their trials,
listings newest first, and unreadable folders skipped with a note."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS
from typer.testing import CliRunner

from autobp.cli import app
from autobp.tools.report import report_run
from autobp.sweeps.run import run_sweep
from autobp.tools.compare import compare_runs, flatten, fold_layers, list_runs
from autobp.training.entry import train

XOR = CONFIGS / "xor.yaml"
LEARNING_RATES = (0.05, 0.005, 1e-4)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/ with three xor runs (one per learning rate, renamed to known dates) and sweeps/<sweep>/trial-00N."""
    root = tmp_path_factory.mktemp("runs")
    for day, lr in enumerate(LEARNING_RATES, start=1):
        made = train(XOR, ["training.epochs=3", f"optimizer.lr={lr}"], output=root / "tmp").run_dir
        made.rename(root / f"xor-2026010{day}-120000")
    (root / "tmp").rmdir()
    sweep_file = root.parent / "xor-sweep.yaml"
    # One tanh unit cannot separate xor; ranked by val_loss, as `runs` must rank it too.
    sweep_file.write_text(f"base: {XOR}\nmonitor: val_loss\nparameters:\n  model.hidden: [[1], [8]]\n")
    made = run_sweep([sweep_file], ["training.epochs=2"], name="xor-sweep", output=root, jobs=1).directory
    made.rename(root / "sweeps" / "xor-sweep-20260105-090000")
    return root


def final(run_dir: Path, column: str) -> float:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return float(list(csv.DictReader(handle))[-1][column])


def test_compare_shows_the_differing_key_and_sorts_by_validation_loss(folder: Path) -> None:
    paths = sorted(folder.glob("xor-*"))
    comparison = compare_runs(paths)
    assert comparison.sort == "val_loss" and comparison.differing == ["optimizer.lr"]
    assert [run.config["optimizer.lr"] for run in comparison.runs] == [0.05, 0.005, 1e-4]
    losses = [run.metrics["val_loss"] for run in comparison.runs]
    assert losses == sorted(losses) == sorted(final(path, "val_loss") for path in paths)
    by_accuracy = compare_runs(paths, sort="val_accuracy")
    accuracies = [run.metrics["val_accuracy"] for run in by_accuracy.runs]
    assert accuracies == sorted(accuracies, reverse=True)


def test_signal_ratio_is_first_over_output_layer_median_signal(folder: Path) -> None:
    path = folder / "xor-20260101-120000"
    with open(path / "gradients.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    signal = {
        name: np.median([float(r["out_grad_norm"]) for r in rows if r["layer"] == name]) for name in ("layer0", "layer1")
    }
    (compared,) = compare_runs([path]).runs
    assert compared.signal_ratio == pytest.approx(signal["layer0"] / signal["layer1"], rel=1e-12)


def test_a_sweep_directory_stands_for_its_trials(folder: Path) -> None:
    sweep = folder / "sweeps" / "xor-sweep-20260105-090000"
    comparison = compare_runs([sweep], sort="model.hidden")
    assert [run.label for run in comparison.runs] == [f"{sweep.name}/trial-000", f"{sweep.name}/trial-001"]
    assert comparison.differing == ["model.hidden"]
    assert [run.config["model.hidden"] for run in comparison.runs] == [[1], [8]]
    assert [run.epochs for run in comparison.runs] == [2, 2]


def test_cli_compare_text_and_json(folder: Path) -> None:
    runner = CliRunner()
    text = runner.invoke(app, ["compare", *map(str, sorted(folder.glob("xor-*"))), "--sort", "best_val_loss"])
    assert text.exit_code == 0, text.output
    header, *rows = text.stdout.splitlines()[:4]
    # status and epochs are the same in every run: named once, below the table
    assert header.split() == ["run", "optimizer.lr", "val_loss", "val_accuracy", "best_val_loss", "signal_ratio",
                              "diagnoses"]  # fmt: skip
    assert rows[0].startswith("xor-20260101-120000")
    assert text.stdout.rstrip().endswith("sorted by best_val_loss; every run: status completed, epochs 3")
    one = folder / "xor-20260102-120000"
    as_json = json.loads(runner.invoke(app, ["compare", str(one), "--format", "json"]).stdout)
    (entry,) = as_json["runs"]
    assert entry["metrics"]["val_loss"] == final(one, "val_loss")
    # three epochs of xor leave the loss still falling: compare shows the report's own judgement
    assert as_json["differing_keys"] == [] and entry["diagnoses"] == [d.kind for d in report_run(one).diagnoses]
    assert entry["diagnoses"] == ["not_converged"]


def test_cli_compare_errors(folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    unknown = runner.invoke(app, ["compare", str(folder / "xor-20260101-120000"), "--sort", "speed"])
    assert unknown.exit_code == 2
    assert "error: --sort speed: not a column of this comparison; choose one of train_loss" in unknown.output
    neither = runner.invoke(app, ["compare", str(tmp_path)])
    assert neither.exit_code == 2 and "neither a run directory nor a sweep directory" in neither.output


def test_flatten_uses_dotted_keys_with_list_indices() -> None:
    assert flatten({"a": {"b": 1, "c": [{"d": 2}, 3]}, "e": None}) == {"a.b": 1, "a.c.0.d": 2, "a.c.1": 3, "e": None}


def test_runs_lists_runs_and_sweeps_newest_first(folder: Path) -> None:
    listed, notes = list_runs(folder)
    assert notes == []
    assert [(e.name, e.kind, e.status) for e in listed] == [
        ("sweeps/xor-sweep-20260105-090000", "sweep, 2 trials", "2 completed"),
        ("xor-20260103-120000", "run", "completed"),
        ("xor-20260102-120000", "run", "completed"),
        ("xor-20260101-120000", "run", "completed"),
    ]
    assert [e.epochs for e in listed] == [None, 3, 3, 3]
    best = json.loads((folder / "xor-20260101-120000" / "summary.json").read_text())["best"]["val_accuracy"]["value"]
    assert listed[-1].best == f"val_accuracy {best:.4g}"
    trials = {row["trial"]: float(row["val_loss"]) for row in csv.DictReader(
        open(folder / "sweeps" / "xor-sweep-20260105-090000" / "trials.csv", newline=""))}  # fmt: skip
    winner = min(trials, key=trials.get)
    assert listed[0].best == f"val_loss {trials[winner]:.4g} ({winner})"  # the monitor the sweep ranked by


def test_runs_skips_an_unreadable_run_with_a_note(folder: Path, tmp_path: Path) -> None:
    shutil.copytree(folder / "xor-20260101-120000", tmp_path / "good-20260101-120000")
    broken = tmp_path / "broken-20260102-120000"
    shutil.copytree(folder / "xor-20260101-120000", broken)
    (broken / "summary.json").write_text("{not json")
    (tmp_path / "notes").mkdir()  # neither a run nor a sweep: ignored
    result = CliRunner().invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[1].split()[:6] == ["good-20260101-120000", "run", "completed", "2026-01-01", "12:00", "3"]
    assert result.stderr.startswith(f"note: skipped {broken}: {broken / 'summary.json'}: not readable JSON")


def test_cli_runs_json_and_missing_folder(folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    listed = json.loads(runner.invoke(app, ["runs", str(folder), "--format", "json"]).stdout)
    assert [entry["date"] for entry in listed][:2] == ["2026-01-05T09:00:00", "2026-01-03T12:00:00"]
    missing = runner.invoke(app, ["runs", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no such directory" in missing.output


def test_layers_fold_back_to_hidden_activation_and_init() -> None:
    layer = lambda units, activation, init="xavier", dropout=0.0: {  # noqa: E731
        "units": units, "activation": activation, "dropout": dropout, "init": init}  # fmt: skip
    config = lambda *layers: flatten({"model": {"layers": list(layers), "activation": "tanh", "init": "xavier"}})  # noqa: E731
    agreeing = fold_layers(config(layer(32, "relu", "he"), layer(32, "relu", "he"), layer(2, "identity", "he")))
    assert agreeing == {"model.hidden": [32, 32], "model.activation": "relu", "model.init": "he"}
    mixed = fold_layers(config(layer(8, "relu", dropout=0.5), layer(4, "tanh"), layer(1, "sigmoid")))
    assert mixed == {
        "model.hidden": [8, 4], "model.activation": "tanh", "model.init": "xavier",  # tanh: the config's default
        "model.layers.0.activation": "relu", "model.layers.0.dropout": 0.5, "model.layers.2.activation": "sigmoid",
    }  # fmt: skip


def test_cli_compare_of_two_example_configs_fits_120_columns(tmp_path: Path) -> None:
    made = [train(CONFIGS / name, ["training.epochs=2"], output=tmp_path).run_dir for name in ("xor.yaml", "quickstart.yaml")]
    runner = CliRunner()
    result = runner.invoke(app, ["compare", *map(str, made)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 120
    blocks = "\n".join(lines[:-2]).split("\n\n")  # the columns past 120 continue in blocks below, each led by run
    assert len(blocks) > 1 and all(block.startswith("run ") and block.count("\n") == 2 for block in blocks)
    headers = [header for block in blocks for header in block.splitlines()[0].split()[1:]]
    assert headers[-4:] == ["val_loss", "val_accuracy", "signal_ratio", "diagnoses"]
    assert "status" not in headers and lines[-1] == "sorted by val_loss; every run: status completed, epochs 2"
    assert "model.hidden" in headers and not any(h.startswith("model.layers") for h in headers)
    quickstart = " ".join(line for line in lines if line.startswith(made[1].name)).split()
    assert {"spirals", "[32,", "32]", f"{final(made[1], 'val_loss'):.4g}"} <= set(quickstart)
    chosen = runner.invoke(app, ["compare", *map(str, made), "--columns", "optimizer.name,best_val_loss,signal_ratio",
                                 "--sort", "signal_ratio"])  # fmt: skip
    assert chosen.exit_code == 0, chosen.output
    header, *rows = chosen.stdout.splitlines()[:3]
    assert header.split() == ["run", "optimizer.name", "best_val_loss", "signal_ratio"]
    ratios = [float(row.split()[-1]) for row in rows]
    assert ratios == sorted(ratios) and chosen.stdout.rstrip().endswith("sorted by signal_ratio")
    unknown = runner.invoke(app, ["compare", *map(str, made), "--columns", "val_loss,speed"])
    assert unknown.exit_code == 2 and "error: --columns speed: not a column of these runs" in unknown.stderr


def test_a_sweep_of_per_layer_keys_and_epochs_shows_what_was_swept(tmp_path: Path) -> None:
    """Swept per-layer keys are columns with every trial's real value (a tanh layer agreeing with the defaults is
    still `tanh`, not `-`), `--columns` takes them, and `epochs` is not repeated beside `training.epochs`."""
    base = {"data": {"source": "xor", "n_samples": 40}, "loss": "cross_entropy",
            "model": {"layers": [{"units": 4}, {"units": 4}, {}], "activation": "tanh"}}  # fmt: skip
    (tmp_path / "base.yaml").write_text(json.dumps(base))
    sweep_file = tmp_path / "layers.yaml"
    sweep_file.write_text("base: base.yaml\nparameters:\n  model.layers.0.activation: [tanh, relu]\n"
                          "  model.layers.0.units: [4, 6]\n  training.epochs: [1, 2]\n")  # fmt: skip
    directory = run_sweep([sweep_file], name="layers", output=tmp_path, jobs=1).directory
    comparison = compare_runs([directory])
    assert "epochs" not in comparison.columns and "training.epochs" in comparison.columns
    activations = [run.value("model.layers.0.activation") for run in comparison.runs]
    assert sorted(activations) == ["relu"] * 4 + ["tanh"] * 4
    text = CliRunner().invoke(app, ["compare", str(directory)]).stdout
    assert text.count(" tanh ") == 4 and " - " not in text.split("\n\n")[0]
    result = CliRunner().invoke(app, ["compare", str(directory), "--columns",
                                      "model.layers.0.units,model.layers.0.activation,training.epochs,val_loss"])
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.split("\n\n")[0].splitlines()
    assert header.split() == ["run", "model.layers.0.units", "model.layers.0.activation", "training.epochs",
                              "val_loss"]  # fmt: skip
    trials = {row.split()[0].split("/")[1]: row.split()[1:4] for row in rows}
    assert trials["trial-000"] == ["4", "tanh", "1"] and trials["trial-007"] == ["6", "relu", "2"]
    by_units = compare_runs([directory], sort="model.layers.0.units")
    assert [run.value("model.layers.0.units") for run in by_units.runs] == [4] * 4 + [6] * 4
