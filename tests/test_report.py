"""`autobp report`: each diagnosis on a run built to show it, none on a healthy run, the same numbers in every
format, runs that diverged or were killed, and the gradient-flow plot."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import CONFIGS, read_csv, require
from autobp.cli import app
from autobp.common.errors import ConfigError
from autobp.common.text import format_number
from autobp.health.thresholds import INIT_SCALE_HIGH
from autobp.rundir.reader import read_run
from autobp.config.overrides import override_value
from autobp.tools.plot import plot_run
from autobp.tools.report import Report, render, report_run, sparkline
from autobp.training.entry import train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEEP_RELU_HUGE_INIT = [
    "training.epochs=2", "model.hidden=[16, 16, 16, 16, 16, 16]", "model.activation=relu", "model.init=normal",
    "model.init_scale=1.5", "optimizer.lr=1e-4",
]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


def trained(runs: Path, config: str, overrides: list[str]) -> Path:
    return train(CONFIGS / config, overrides, output=runs).run_dir


@pytest.fixture(scope="module")
def deep_sigmoid(runs: Path) -> Path:
    return trained(runs, "deep_sigmoid.yaml", ["training.epochs=2"])


def kinds(report: Report) -> list[tuple[str, str | None]]:
    return [(diagnosis.kind, diagnosis.layer) for diagnosis in report.diagnoses]


def logged_median(run_dir: Path, layer: str, column: str) -> float:
    return float(np.median([float(r[column]) for r in read_csv(run_dir / "gradients.csv") if r["layer"] == layer]))


def test_healthy_run_has_no_diagnoses(runs: Path) -> None:
    report = report_run(trained(runs, "quickstart.yaml", ["training.epochs=40"]))
    assert report.status == "completed" and report.diagnoses == []
    assert "None: every check passed." in render(report, "text")
    assert [layer.activation for layer in report.layers] == ["tanh", "tanh", "identity"]
    assert [layer.shape for layer in report.layers] == [(2, 32), (32, 32), (32, 2)]


def test_deep_sigmoid_example_shows_vanishing_gradients(deep_sigmoid: Path) -> None:
    report = report_run(deep_sigmoid)
    assert kinds(report) == [("vanishing_gradients", "layer0")]
    evidence = report.diagnoses[0].evidence
    first = logged_median(deep_sigmoid, "layer0", "out_grad_norm")
    last = logged_median(deep_sigmoid, "layer8", "out_grad_norm")
    assert evidence["signal"] == pytest.approx(first, rel=1e-12)
    assert evidence["signal_output_layer"] == pytest.approx(last, rel=1e-12)
    assert evidence["ratio"] == pytest.approx(last / first) and evidence["ratio"] > 1000
    # config.yaml spells out every layer's activation, so the fix names the hidden layers' own keys.
    fix = report.diagnoses[0].fix
    assert fix == {**{f"model.layers.{i}.activation": "relu" for i in range(8)},
                   **{f"model.layers.{i}.init": "he" for i in range(8)}}
    assert report.diagnoses[0].suggestion.startswith("set `model.layers.0–7.activation: relu`, `model.layers.0–7.init: he`")


def test_huge_init_shows_exploding_gradients(runs: Path) -> None:
    report = report_run(trained(runs, "deep_sigmoid.yaml", DEEP_RELU_HUGE_INIT))
    # The initialisation is named, not the dead units or vanishing signal that follow from it.
    diagnosis = report.diagnoses[0]
    assert [d.kind for d in report.diagnoses] == ["exploding_gradients"] and "initial weights" in diagnosis.message
    assert all(scale > INIT_SCALE_HIGH for scale in diagnosis.evidence["scales"].values())
    assert diagnosis.fix == {f"model.layers.{i}.init": "he" for i in range(6)} | {"model.layers.6.init": "xavier"}
    assert {"optimizer.clip_grad_norm": 1.0} in diagnosis.alternatives


def test_huge_learning_rate_diverges_and_the_report_names_the_first_non_finite_step(runs: Path) -> None:
    run_dir = trained(runs, "sine.yaml", ["model.activation=identity", "optimizer.name=sgd", "optimizer.lr=100"])
    summary = json.loads((run_dir / "summary.json").read_text())
    report = report_run(run_dir)
    assert report.status == "diverged"
    assert report.ending == f"diverged after 0 of 200 epochs: {summary['diverged']['reason']}"
    # A finite first step, then a blow-up: the steps' doing, named as the learning rate.
    blow_up = report.diagnoses[0]
    assert blow_up.kind == "learning_rate_high" and "step" in blow_up.evidence
    first_bad = next(r for r in read_csv(run_dir / "gradients.csv") if r["grad_norm_w"] in ("inf", "nan"))
    assert blow_up.evidence["step"] == int(first_bad["step"]) == summary["diverged"]["step"]
    assert blow_up.layer == first_bad["layer"]
    text = render(report, "text")
    assert "No epoch was completed." in text and f"non-finite values from step {blow_up.evidence['step']}" in text
    json.loads(render(report, "json"), parse_constant=pytest.fail)  # strict JSON: no NaN or Infinity


def test_relu_layer_driven_dead_by_negative_biases(runs: Path, tmp_path: Path) -> None:
    relu = ["training.epochs=1", "model.hidden=[8, 8]", "model.activation=relu", "model.init=he"]
    with np.load(trained(runs, "xor.yaml", relu) / "model.npz") as saved:
        weights = {key: saved[key] for key in saved.files if key.startswith("layer")}
    weights["layer1.bias"] = np.full(8, -50.0)
    np.savez(tmp_path / "dead.npz", **weights)
    report = report_run(trained(runs, "xor.yaml", [*relu, f"model.init_from={tmp_path / 'dead.npz'}"]))
    dead = [d for d in report.diagnoses if d.kind == "dead_units"]
    assert [(d.layer, d.evidence["fractions"]) for d in dead] == [("layer1", {"layer1": 1.0})]
    # No signal gets past a dead layer, so layer0 receives none at all.
    assert ("vanishing_gradients", "layer0") in kinds(report)
    assert report.layers[0].out_grad_norm_median == 0.0


def test_huge_init_saturates_tanh_units(runs: Path) -> None:
    overrides = ["training.epochs=1", "model.hidden=[32, 32]", "model.init=normal", "model.init_scale=20",
                 "optimizer.name=sgd", "optimizer.lr=0.01"]  # fmt: skip
    report = report_run(trained(runs, "xor.yaml", overrides))
    diagnosis = report.diagnoses[0]  # the initialisation, named once for every layer it concerns
    assert diagnosis.kind == "saturated_units" and "initial weights" in diagnosis.message
    assert diagnosis.layers == list(diagnosis.evidence["scales"]) and {"layer0", "layer1"} <= set(diagnosis.layers)
    assert all(layer.saturated_fraction > 0.5 for layer in report.layers[:2])
    assert diagnosis.fix == {f"model.layers.{i}.init": "xavier" for i in range(3)}


@pytest.mark.parametrize(
    ("overrides", "kind", "lr"),
    [
        (["model.hidden=[8, 8]", "optimizer.name=sgd", "optimizer.lr=2.0"], "learning_rate_high", 2.0),
        (["optimizer.lr=1e-7"], "learning_rate_low", 1e-7),
    ],
)
def test_learning_rate_off(runs: Path, overrides: list[str], kind: str, lr: float) -> None:
    report = report_run(trained(runs, "xor.yaml", ["training.epochs=2", *overrides]))
    (diagnosis,) = [d for d in report.diagnoses if d.kind.startswith("learning_rate")]
    change = diagnosis.fix["optimizer.lr"] / lr  # at least tenfold, in the direction the evidence says
    assert diagnosis.kind == kind and (change <= 0.1 if kind == "learning_rate_high" else change >= 10)
    assert diagnosis.suggestion.startswith(f"set `optimizer.lr: {override_value(diagnosis.fix['optimizer.lr'])}`")
    fastest = max(report.layers, key=lambda layer: layer.update_ratio_median)
    assert diagnosis.layer == fastest.name
    assert diagnosis.evidence["update_ratio_median"] == fastest.update_ratio_median


def write_run(run_dir: Path, train_loss: list[float], val_loss: list[float | str]) -> Path:
    """A hand-made run directory with only a metrics.csv, as a run killed before its summary leaves it; a
    string is written as it is (e.g. "" for an empty cell)."""
    run_dir.mkdir()
    cell = lambda value: value if isinstance(value, str) else repr(float(value))  # noqa: E731
    lines = ["epoch,step,train_loss,val_loss,lr,seconds"]
    for epoch, (on_train, on_val) in enumerate(zip(train_loss, val_loss), start=1):
        lines.append(f"{epoch},{10 * epoch},{cell(on_train)},{cell(on_val)},0.01,0.1")
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run_dir


def test_overfitting_on_a_hand_made_run(tmp_path: Path) -> None:
    epochs = np.arange(30)
    train_loss = list(1.0 / (1 + epochs))
    val_loss = list(0.5 + 0.01 * (epochs - 10) ** 2 / 10)  # best at epoch 11, then rising
    report = report_run(write_run(tmp_path / "over", train_loss, val_loss))
    (diagnosis,) = report.diagnoses
    assert diagnosis.kind == "overfitting" and diagnosis.layer is None
    assert diagnosis.evidence["best_epoch"] == 11 and diagnosis.evidence["best_val_loss"] == 0.5
    assert diagnosis.evidence["last_val_loss"] == val_loss[-1] and diagnosis.evidence["val_loss_rise"] > 0.2
    assert diagnosis.evidence["last_train_loss"] < diagnosis.evidence["train_loss_at_best"]
    # Without a config.yaml no change can be checked against it: the diagnosis says so instead of guessing.
    assert diagnosis.fix == {} and diagnosis.suggestion.startswith("no config change can be proposed")
    assert report.status == "unfinished"
    assert report.ending == ("summary.json is missing: the run is still going, or its process was killed; "
                             "showing the 30 logged epochs")


def test_both_losses_falling_is_not_overfitting(tmp_path: Path) -> None:
    epochs = np.arange(30)
    report = report_run(write_run(tmp_path / "fine", list(1.0 / (1 + epochs)), list(1.2 / (1 + epochs))))
    assert report.diagnoses == []


def test_killed_run_with_non_finite_values_and_a_truncated_last_line(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "killed", [1.0, 0.8, 0.7, 0.6], ["0.9", "nan", "0.6", ""])
    header = ("step,epoch,layer,grad_norm_w,grad_norm_b,weight_norm,update_ratio,out_grad_norm,grad_mean,grad_std,"
              "dead_fraction,saturated_fraction")
    rows = [
        "1,1,layer0,0.5,0.1,1.0,0.001,0.2,0.0,0.1,0.0,", "1,1,layer1,0.4,0.1,1.0,0.001,0.3,0.0,0.1,,",
        "2,1,layer0,0.6,0.1,1.0,0.001,0.2,0.0,0.1,0.0,", "2,1,layer1,inf,0.1,1.0,,nan,0.0,0.1,,",
        "3,1,layer0,0.7,0.1", "3,1,layer1,0.5,1.5e-",
    ]  # fmt: skip
    (run_dir / "gradients.csv").write_text("\n".join([header, *rows]))
    report = report_run(run_dir)
    # Finite at step 1, non-finite at step 2: the steps' doing.
    assert [(d.kind, d.layer, d.evidence["step"]) for d in report.diagnoses] == [("learning_rate_high", "layer1", 2)]
    assert report.layers[0].grad_norm_w_last == 0.7 and report.layers[0].logged_steps == 3
    assert report.layers[1].grad_norm_w_median == 0.4  # medians skip non-finite values
    assert report.sparkline == "█×▁×"  # × marks an epoch without a finite value
    series = {s.name: s for s in report.series}
    assert (series["val_loss"].best, series["val_loss"].best_epoch, series["val_loss"].final) == (0.6, 3, 0.6)


def test_sparkline_scales_between_the_lowest_and_highest_value() -> None:
    assert sparkline([4.0, 3.0, 2.0, 1.0]) == "█▆▃▁"
    assert sparkline([1.0, 1.0]) == "▄▄"
    assert sparkline([1.0, float("inf"), 0.0]) == "█×▁"
    assert len(sparkline(list(np.linspace(1, 0, 500)))) == 60


def test_json_has_the_numbers_the_text_shows(deep_sigmoid: Path) -> None:
    report = report_run(deep_sigmoid)
    payload = json.loads(render(report, "json"))
    text = render(report, "text").splitlines()
    assert set(payload) == {"run_dir", "name", "status", "ending", "task", "epochs", "steps", "series", "curve",
                            "sparkline", "layers", "verdicts", "diagnoses", "notes", "instruments", "doctor"}  # fmt: skip
    assert payload["doctor"] is None  # no `autobp doctor` yet
    for layer in payload["layers"]:
        row = next(line.split() for line in text if line.startswith(layer["name"] + " "))
        numbers = [layer[key] for key in ("grad_norm_w_first", "grad_norm_w_median", "grad_norm_w_last",
                                          "out_grad_norm_median", "update_ratio_median")]  # fmt: skip
        assert row[3:8] == [format_number(value) for value in numbers]
    for series in payload["series"]:
        row = next(line.split() for line in text if line.startswith(series["name"] + " "))
        assert row[1:] == [format_number(series["first"]), format_number(series["best"]), f"({series['best_epoch']})",
                           format_number(series["final"])]  # fmt: skip
    (diagnosis,) = payload["diagnoses"]
    assert set(diagnosis) == {"kind", "layer", "layers", "evidence", "message", "suggestion", "fix", "alternatives"}
    line = f"- {diagnosis['kind']} ({diagnosis['layer']}): {diagnosis['message']}."
    assert line in text
    assert f"{payload['curve']} by epoch: {payload['sparkline']}" in text


def test_cli_report_formats(deep_sigmoid: Path) -> None:
    runner = CliRunner()
    markdown = runner.invoke(app, ["report", str(deep_sigmoid), "--format", "markdown"])
    assert markdown.exit_code == 0, markdown.output
    assert "### Diagnoses" in markdown.output and "| layer0 | 2×16 | sigmoid |" in markdown.output
    as_json = runner.invoke(app, ["report", str(deep_sigmoid), "--format", "json"])
    assert json.loads(as_json.stdout)["diagnoses"][0]["kind"] == "vanishing_gradients"
    wrong = runner.invoke(app, ["report", str(deep_sigmoid), "--format", "yaml"])
    assert wrong.exit_code == 2 and "'yaml' is not one of 'text', 'markdown', 'json', 'html'" in wrong.output


def test_cli_report_on_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {tmp_path}: not a run directory")


def test_damaged_files_are_notes_not_failures(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "damaged", [1.0, 0.5], ["1.0", "0.5"])
    (run_dir / "summary.json").write_text('{"status": "compl')
    (run_dir / "gradients.csv").write_text("step,layer,grad_norm_w\n1,layer0,0.5\n2,layer0,big\n3,layer0,0.4\n")
    report = report_run(run_dir)
    assert report.status == "unfinished" and report.ending.startswith("summary.json is unreadable")
    assert "not readable JSON" in report.notes[0]
    assert report.notes[1] == f"{run_dir / 'gradients.csv'}:3: column grad_norm_w: 'big' is not a number"
    assert report.layers == [] and report.series[0].final == 0.5  # the rest of the run is still reported
    text = render(report, "text")
    assert all(f"Note: {note}" in text for note in report.notes) and "No gradient log." in text


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_writes_a_png(deep_sigmoid: Path, tmp_path: Path) -> None:
    require("matplotlib", "plot")
    figure = tmp_path / "flow.png"
    result = CliRunner().invoke(app, ["report", str(deep_sigmoid), "--plot", str(figure)])
    assert result.exit_code == 0, result.output
    assert png_size(figure) == (1650, 528)  # 15 × 4.8 inches at 110 dpi
    assert figure.stat().st_size > 20_000  # nine layers' curves, not a blank canvas


def test_plot_without_matplotlib_says_how_to_install_it(
    deep_sigmoid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result = CliRunner().invoke(app, ["report", str(deep_sigmoid), "--plot", str(tmp_path / "flow.png")])
    assert result.exit_code == 2  # a missing extra, found before anything runs: nothing was written
    assert result.stdout == ""
    assert result.stderr.strip() == "error: the gradient-flow plot needs matplotlib: pip install 'autobp[plot]'"
    assert not (tmp_path / "flow.png").exists()


def test_plot_with_an_unknown_extension_is_refused_before_the_report(deep_sigmoid: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(deep_sigmoid), "--plot", str(tmp_path / "flow.jpg")])
    assert result.exit_code == 2 and result.stdout == ""
    assert "use a file name ending in .png, .svg, .pdf" in result.stderr


def test_plot_rejects_an_unknown_format(deep_sigmoid: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--plot .*flow.jpg: use a file name ending in \.png, \.svg, \.pdf"):
        plot_run(read_run(deep_sigmoid), tmp_path / "flow.jpg")
