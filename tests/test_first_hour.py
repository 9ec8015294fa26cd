"""A new user's first hour (issue 12): outputs that say the truth, paths and keys that behave as people expect."""

from __future__ import annotations

import csv
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import CONFIGS
from typer.testing import CliRunner

from autobp.cli import app
from autobp.health import diagnose, summarize_layers
from autobp.rundir.reader import read_run
from autobp.config.configfile import load_config
from autobp.config.overrides import override_arguments
from autobp.training.entry import train


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    return result.exit_code, result.output


def xor(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load((CONFIGS / "xor.yaml").read_text())
    raw["output"] = {"dir": str(tmp_path / "runs")}
    raw.setdefault("training", {}).update(epochs=2)
    for key, value in changes.items():
        raw[key] = {**raw.get(key, {}), **value}
    path = tmp_path / "xor.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_every_file_a_run_writes_is_readable_as_the_umask_allows(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        run_dir = train(xor(tmp_path)).run_dir
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run_dir.iterdir()}
    assert modes and all(mode == 0o644 for mode in modes.values()), modes


def test_a_yaml_bracket_never_closed_is_named_where_it_opened(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndata:\n  source: xor\nmodel: {hidden: [4]\nloss: cross_entropy\n")
    code, output = cli("validate", path)
    assert code == 2
    assert "the flow mapping opened at line 4, column 8 is never closed" in output


def test_an_output_folder_that_cannot_be_created_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, output = cli("train", xor(tmp_path), "--output-dir", blocker / "runs", "--quiet")
    assert code == 2 and f"output directory {blocker / 'runs'}: cannot create it" in output
    assert "MB free" not in output


def test_after_early_stopping_the_result_lines_describe_the_restored_model(tmp_path: Path) -> None:
    config = xor(tmp_path, training={"epochs": 60, "early_stopping": {"monitor": "val_accuracy", "patience": 2}})
    code, output = cli("train", config, "--quiet")
    run_dir = Path(output.strip().splitlines()[-1].removeprefix("run directory: "))
    summary = yaml.safe_load((run_dir / "summary.json").read_text())
    epoch = summary["early_stopping"]["best_epoch"]
    assert code == 0 and summary["status"] == "stopped_early" and epoch < summary["epochs"]
    assert f"model.npz holds epoch {epoch}, the best by val_accuracy (early stopping restored its weights)" in output
    with open(run_dir / "metrics.csv", newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if int(r["epoch"]) == epoch)
    assert summary["saved"]["val_loss"] == float(row["val_loss"])
    assert f"val_loss         epoch {epoch} {float(row['val_loss']):.4g}" in output


def test_a_diverged_run_says_where_and_one_epoch_is_singular(tmp_path: Path) -> None:
    overrides = ["optimizer.name=sgd", "optimizer.lr=1e30", "training.epochs=1", "model.activation=identity"]
    code, output = cli("train", CONFIGS / "sine.yaml", "--quiet", "--output-dir", tmp_path,
                       *(part for o in overrides for part in ("--set", o)))  # fmt: skip
    assert code == 3
    assert "after 0 epochs and 2 batches, 2 steps" in output and "1 epochs" not in output  # the 3rd step diverged
    assert "  diverged at step 3 (epoch 1): " in output


def test_paths_given_with_set_are_relative_to_the_current_folder(tmp_path: Path, monkeypatch) -> None:
    first = train(xor(tmp_path)).run_dir
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(first, tmp_path)  # relative to the current folder, not to the config's
    config = load_config(elsewhere.parent / "xor.yaml", [f"model.init_from={relative}"])
    assert config.model.init_from == str(first)


def test_init_from_accepts_a_run_directory(tmp_path: Path) -> None:
    first = train(xor(tmp_path)).run_dir
    second = train(xor(tmp_path, model={"init_from": str(first)}, training={"epochs": 1})).run_dir
    assert second != first
    code, output = cli("train", xor(tmp_path), "--set", f"model.init_from={tmp_path}", "--quiet")
    assert code == 2 and "model.npz" in output  # a folder without model.npz is named in the error


def test_model_dropout_sets_the_hidden_layers_only(tmp_path: Path) -> None:
    config = load_config(xor(tmp_path, model={"hidden": [4, 4], "dropout": 0.3}))
    assert [layer.dropout for layer in config.model.layers] == [0.3, 0.3, 0.0]
    explicit = load_config(xor(tmp_path, model={"hidden": None, "dropout": 0.3,
                                                "layers": [{"units": 4, "dropout": 0.1}, {"units": 4}, {}]}))
    assert [layer.dropout for layer in explicit.model.layers] == [0.1, 0.3, 0.0]


@pytest.mark.parametrize(("source", "more_data"), [("synthetic", True), ("csv", False)])
def test_overfitting_suggests_only_keys_the_config_can_take(tmp_path: Path, source: str, more_data: bool) -> None:
    run_dir = train(xor(tmp_path)).run_dir
    log = read_run(run_dir)
    if source == "csv":
        log.config.data.source = "csv"
    # A validation loss that climbs while the training loss falls, over 12 epochs.
    log.metrics = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 0.5 + 0.05 * e} for e in range(1, 13)]
    (overfitting,) = [d for d in diagnose(log, summarize_layers(log), []) if d.kind == "overfitting"]
    assert overfitting.fix == {"training.early_stopping": {"monitor": "val_loss", "patience": 10}}
    # model.dropout would not reach layers whose dropout config.yaml spells out: the layers' own keys are named.
    assert {"model.layers.0.dropout": 0.2} in overfitting.alternatives
    assert any("data.n_samples" in change for change in overfitting.alternatives) is more_data
    for change in [overfitting.fix, *overfitting.alternatives]:
        changed = load_config(run_dir / "config.yaml", override_arguments(change))
        assert changed != load_config(run_dir / "config.yaml")


def test_predictions_quote_a_class_name_with_a_comma_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [(x, y, "red, dark" if x + y > 0 else "blue") for x, y in rng.standard_normal((40, 2))]
    data = tmp_path / "colours.csv"
    with open(data, "w", newline="") as handle:
        csv.writer(handle).writerows([("x", "y", "colour"), *rows])
    config = {"data": {"source": "csv", "path": str(data), "target": "colour"}, "model": {"hidden": [4]},
              "loss": "cross_entropy", "training": {"epochs": 2}, "output": {"dir": str(tmp_path / "runs")}}  # fmt: skip
    run_dir = train(config).run_dir
    code, _ = cli("predict", run_dir, data, "-o", tmp_path / "out.csv")
    assert code == 0
    with open(tmp_path / "out.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert {row["prediction"] for row in table} <= {"red, dark", "blue"}
    assert "p_red, dark" in table[0]
