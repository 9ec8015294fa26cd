"""`autobp export RUN_OR_SWEEP --format tensorboard`: TensorBoard's own event reader finds the numbers of
metrics.csv and gradients.csv, the config as hyperparameters, and a sweep's trials as runs with the swept keys."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import read_csv
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from typer.testing import CliRunner

from autobp.cli import app
from autobp.common.text import flatten
from autobp.rundir.histograms import QUANTITIES, bin_edges
from autobp.rundir.histograms import read as read_histograms
from autobp.config.configfile import load_config
from autobp.sweeps.run import run_sweep
from autobp.training.entry import train

BASE = {
    "name": "tb",
    "seed": 2,
    "data": {"source": "moons", "n_samples": 60, "noise": 0.2},
    "model": {"hidden": [6, 6], "activation": "relu"},
    "loss": "cross_entropy",
    "optimizer": {"name": "adam", "lr": 0.05},
    "training": {"epochs": 3, "batch_size": 16, "checkpoint_every": None},
}


def accumulator(directory: Path) -> event_accumulator.EventAccumulator:
    events = event_accumulator.EventAccumulator(
        str(directory), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0})
    events.Reload()
    return events


def scalars(events: event_accumulator.EventAccumulator) -> dict[tuple[str, int], float]:
    return {(tag, e.step): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}


def hparams(events: event_accumulator.EventAccumulator) -> tuple[dict, list[str]]:
    """The session's hyperparameters as Python values, and the experiment's metric tags."""
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    values = {key: getattr(value, value.WhichOneof("kind")) for key, value in start.hparams.items()}
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    return values, [metric.name.tag for metric in experiment.metric_infos]


def as_float32(text: str) -> float:
    """A logged number as TensorBoard keeps it: in float32, so beyond ~3.4e38 it is infinite."""
    with np.errstate(over="ignore"):
        return float(np.float32(float(text)))


def export(source: Path, *options: str) -> str:
    result = CliRunner().invoke(app, ["export", str(source), "--format", "tensorboard", *options])
    assert result.exit_code == 0, result.output
    return result.stdout


def expected_scalars(run_dir: Path) -> dict[tuple[str, int], float]:
    """Every number of metrics.csv and gradients.csv, as TensorBoard stores it (float32), by (tag, step)."""
    expected = {}
    for row in read_csv(run_dir / "metrics.csv"):
        for column, text in row.items():
            if column != "step" and text != "":
                expected[(f"metrics/{column}", int(row["step"]))] = as_float32(text)
    for row in read_csv(run_dir / "gradients.csv"):
        for column, text in row.items():
            if column not in ("step", "epoch", "layer") and text != "":
                expected[(f"{row['layer']}/{column}", int(row["step"]))] = as_float32(text)
    if (run_dir / "instruments.csv").exists():
        for row in read_csv(run_dir / "instruments.csv"):
            for column, text in row.items():
                if column not in ("step", "epoch", "block") and text != "":
                    expected[(f"instruments/{row['block']}/{column}", int(row["step"]))] = as_float32(text)
    return expected


def test_a_run_reads_back_with_the_numbers_of_its_csv_files(tmp_path: Path) -> None:
    run_dir = train(BASE, output=tmp_path / "runs").run_dir
    expected = expected_scalars(run_dir)
    out = export(run_dir)
    directory = run_dir / "tensorboard"
    assert out == (f"wrote 1 run, {len(expected):,} scalars to {directory}; "
                   f"view them with: tensorboard --logdir {directory}\n")  # fmt: skip
    events = accumulator(directory)
    assert scalars(events) == expected
    assert {"layer0/out_grad_norm", "layer2/update_ratio", "layer1/dead_fraction"} <= set(events.Tags()["scalars"])
    values, metrics = hparams(events)
    config = {key: value for key, value in flatten(load_config(run_dir / "config.yaml").model_dump(mode="json")).items()
              if value is not None}  # fmt: skip
    assert values == {key: float(value) if type(value) is int else value for key, value in config.items()}
    assert metrics == ["metrics/train_loss", "metrics/val_loss", "metrics/train_accuracy", "metrics/val_accuracy"]


def test_the_instruments_read_back_with_the_numbers_of_instruments_csv(tmp_path: Path) -> None:
    settings = BASE | {"training": BASE["training"] | {"instruments": {"every": 1, "curvature_every": 2}}}
    run_dir = train(settings, output=tmp_path / "runs").run_dir
    expected = expected_scalars(run_dir)
    export(run_dir)
    found = scalars(accumulator(run_dir / "tensorboard"))
    assert found == expected
    assert {("instruments/total/alpha", 1), ("instruments/layer2/noise_scale", 3), ("instruments/total/lambda_max", 2)} <= set(found)


def test_the_distributions_of_histograms_npz_read_back_bin_for_bin(tmp_path: Path) -> None:
    run_dir = train(BASE, output=tmp_path / "runs").run_dir
    export(run_dir)
    events = accumulator(run_dir / "tensorboard")
    saved = read_histograms(run_dir)
    tags = events.Tags()["histograms"]
    assert {f"{layer}/distribution/{q}" for layer in saved.layers for q in QUANTITIES} == set(tags)
    edges = bin_edges()
    for l, layer in enumerate(saved.layers):
        for q, quantity in enumerate(QUANTITIES):
            read_back = events.Histograms(f"{layer}/distribution/{quantity}")
            assert [event.step for event in read_back] == saved.steps.tolist()
            for event, counts in zip(read_back, saved.counts[:, l, q]):
                used = np.flatnonzero(counts)
                value = event.histogram_value
                assert value.num == counts.sum()
                assert value.bucket == counts[used[0] : used[-1] + 1].tolist()
                assert value.bucket_limit[:-1] == edges[used[0] + 1 : used[-1] + 1].tolist()


def test_a_sweep_exports_each_trial_with_its_swept_values(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**BASE, "output": {"dir": str(tmp_path / "runs")}}))
    sweep_file = tmp_path / "sweep.yaml"
    parameters = {"optimizer.lr": [0.05, 0.01], "optimizer.name": ["adam"]}
    sweep_file.write_text(yaml.safe_dump({"base": "base.yaml", "parameters": parameters}))
    directory = run_sweep([sweep_file], jobs=1).directory
    out = tmp_path / "tb"
    assert export(directory, "-o", str(out)).startswith("wrote 2 runs, ")
    assert sorted(p.name for p in out.iterdir()) == ["trial-000", "trial-001"]
    for trial in read_csv(directory / "trials.csv"):
        events = accumulator(out / trial["trial"])
        assert scalars(events) == expected_scalars(directory / trial["trial"])
        values, metrics = hparams(events)
        assert values == {"optimizer.lr": float(trial["optimizer.lr"])}  # the key all trials share is left out
        # The HParams view shows each metric's last value: the trial's final metrics, as trials.csv has them.
        for tag in metrics:
            assert events.Scalars(tag)[-1].value == as_float32(trial[tag.removeprefix("metrics/")])


def test_non_finite_gradients_of_a_diverged_run_are_kept(tmp_path: Path) -> None:
    config = {**BASE, "model": {"hidden": [8], "activation": "identity"}, "data": {"source": "linear", "n_samples": 60},
              "loss": "mse", "optimizer": {"name": "sgd", "lr": 1e6}}  # fmt: skip
    result = train(config, output=tmp_path / "runs")
    assert result.status == "diverged"
    export(result.run_dir)
    found = scalars(accumulator(result.run_dir / "tensorboard"))
    expected = expected_scalars(result.run_dir)
    assert found.keys() == expected.keys()
    assert any(not math.isfinite(value) for value in expected.values())
    assert all(found[key] == value or (math.isnan(found[key]) and math.isnan(value)) for key, value in expected.items())


def test_exporting_again_replaces_the_export_and_never_other_files(tmp_path: Path) -> None:
    run_dir = train(BASE, output=tmp_path / "runs").run_dir
    export(run_dir)
    export(run_dir)
    assert len(list((run_dir / "tensorboard").iterdir())) == 1
    result = CliRunner().invoke(app, ["export", str(run_dir), "--format", "tensorboard", "-o", str(run_dir)])
    assert result.exit_code == 2
    assert result.stderr == (f"error: -o {run_dir}: exists and holds other files than TensorBoard events; "
                             "choose another folder\n")  # fmt: skip
    assert (run_dir / "metrics.csv").is_file()
    assert not [p for p in run_dir.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_bad_input_and_missing_extra_exit_2_with_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(tmp_path), "--format", "tensorboard"])
    assert result.exit_code == 2
    assert result.stderr == (f"error: {tmp_path}: neither a run directory nor a sweep directory; "
                             "`autobp runs` lists them\n")  # fmt: skip
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if the extra were not installed
    result = runner.invoke(app, ["export", str(tmp_path), "--format", "tensorboard"])
    assert result.exit_code == 2
    assert result.stderr == "error: --format tensorboard needs tensorboardX: pip install 'autobp[export]'\n"
