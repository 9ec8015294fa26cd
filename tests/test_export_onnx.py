"""`autobp export RUN --format onnx`: the exported model, run in onnxruntime, predicts what `autobp predict` does —
for every activation, every loss, float32 and float64 runs — to float32 rounding; its names and metadata are
documented; bad input and a missing extra are clear errors."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from conftest import CONFIGS
from typer.testing import CliRunner

from autobp.cli import app
from autobp.model.prepare import prepare
from autobp.config.catalog import ACTIVATIONS
from autobp.tools.onnx_export import OPSET
from autobp.training.entry import train

DATA = {
    "cross_entropy": {"source": "blobs", "n_samples": 60, "n_classes": 3, "n_features": 3, "noise": 3.0},
    "bce": {"source": "moons", "n_samples": 60, "noise": 0.2},
    "mse": {"source": "sine", "n_samples": 60, "noise": 0.1},
    "mae": {"source": "linear", "n_samples": 60, "n_features": 3, "n_outputs": 2, "noise": 0.1},
    "huber": {"source": "linear", "n_samples": 60, "n_features": 2, "n_outputs": 1, "noise": 0.1},
}
LOSSES = list(DATA)
# Every activation once, each with a loss (every loss at least once); `sin` also runs without standardization.
CASES = [(activation, LOSSES[index % len(LOSSES)]) for index, activation in enumerate(ACTIVATIONS)]
FLOAT32_RTOL = 1e-5  # float32 carries ~7 digits; a few layers of rounding stay well inside 1e-5


def tiny_run(tmp_path: Path, activation: str, loss: str, dtype: str, standardize: bool = True) -> Path:
    """Two epochs on 60 examples; the activation on every layer, the output layer included."""
    config = {
        "name": f"{activation}-{loss}-{dtype}",
        "seed": 3,
        "data": {**DATA[loss], "standardize": standardize},
        "model": {"layers": [{"units": 8, "activation": activation}, {"units": 8, "activation": activation},
                             {"activation": activation}], "init": "he"},
        "loss": loss,
        "optimizer": {"name": "adam", "lr": 0.05},
        "training": {"epochs": 2, "batch_size": 16, "dtype": dtype, "checkpoint_every": None},
    }  # fmt: skip
    return train(config, output=tmp_path / "runs").run_dir


def all_examples(run_dir: Path, path: Path) -> tuple[Path, np.ndarray]:
    """The run's training and validation features again, in the data's units, as an .npz for `autobp predict`."""
    _, dataset = prepare(run_dir / "config.yaml")
    X = np.concatenate([dataset.X_train, dataset.X_val])
    if dataset.x_mean is not None:
        X = X * dataset.x_std + dataset.x_mean
    np.savez(path, X=X)
    return path, X


def cli_predictions(run_dir: Path, data: Path) -> tuple[list[str], np.ndarray]:
    """`autobp predict`'s CSV: its header and its rows."""
    result = CliRunner().invoke(app, ["predict", str(run_dir), str(data)])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    return rows[0], np.array(rows[1:], dtype=object)


def exported(run_dir: Path, out: Path) -> onnxruntime.InferenceSession:
    result = CliRunner().invoke(app, ["export", str(run_dir), "--format", "onnx", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {out}\n"
    return onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def clear_margin(probabilities: np.ndarray) -> np.ndarray:
    """Rows whose top two class probabilities differ by more than float32 rounding (ties may go either way)."""
    top = np.sort(probabilities, axis=1)
    return top[:, -1] - top[:, -2] > 1e-5


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("activation", "loss"), CASES)
def test_onnxruntime_predicts_what_autobp_predict_does(tmp_path: Path, activation: str, loss: str, dtype: str) -> None:
    run_dir = tiny_run(tmp_path, activation, loss, dtype, standardize=activation != "sin")
    data, X = all_examples(run_dir, tmp_path / "examples.npz")
    header, rows = cli_predictions(run_dir, data)
    session = exported(run_dir, tmp_path / "model.onnx")
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"features": X.astype(np.float32)})))
    if loss in ("cross_entropy", "bce"):
        expected = rows[:, 1:].astype(np.float64)  # p_<class> columns
        probabilities = outputs["probabilities"] if loss == "cross_entropy" else outputs["probability"]
        if loss == "bce":
            assert probabilities.shape == (len(X), 1)
            probabilities = np.concatenate([1.0 - probabilities, probabilities], axis=1)
        np.testing.assert_allclose(probabilities, expected, rtol=FLOAT32_RTOL, atol=1e-6)
        class_names = [name.removeprefix("p_") for name in header[1:]]
        predicted = np.array(class_names)[outputs["class_id"]]
        clear = clear_margin(expected)
        assert clear.mean() > 0.5
        assert np.array_equal(predicted[clear], rows[clear, 0])
    else:
        expected = rows.astype(np.float64)
        assert set(outputs) == {"targets"}
        scale = np.abs(expected).max()
        np.testing.assert_allclose(outputs["targets"], expected, rtol=FLOAT32_RTOL, atol=FLOAT32_RTOL * scale)


def test_the_model_has_documented_names_opset_and_metadata(tmp_path: Path) -> None:
    run_dir = train(CONFIGS / "iris.yaml", ["training.epochs=2"], output=tmp_path / "runs").run_dir
    session = exported(run_dir, tmp_path / "iris.onnx")
    model = onnx.load(tmp_path / "iris.onnx")
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)]
    assert [i.name for i in session.get_inputs()] == ["features"]
    assert session.get_inputs()[0].shape == ["batch", 4]
    assert [o.name for o in session.get_outputs()] == ["probabilities", "class_id"]
    meta = session.get_modelmeta().custom_metadata_map
    saved = np.load(run_dir / "model.npz", allow_pickle=False)
    assert json.loads(meta["feature_names"]) == saved["feature_names"].tolist()
    assert json.loads(meta["class_names"]) == ["setosa", "versicolor", "virginica"]
    assert json.loads(meta["target_names"]) == ["species"]
    assert (meta["loss"], meta["task"], meta["run"]) == ("cross_entropy", "classification", run_dir.name)


def test_default_output_is_model_onnx_in_the_run_directory(tmp_path: Path) -> None:
    run_dir = tiny_run(tmp_path, "tanh", "mse", "float64")
    result = CliRunner().invoke(app, ["export", str(run_dir), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {run_dir / 'model.onnx'}\n"
    onnx.checker.check_model(onnx.load(run_dir / "model.onnx"))


def test_every_activation_but_identity_names_an_onnx_operator() -> None:
    assert {name for name, entry in ACTIVATIONS.items() if entry.onnx is None} == {"identity"}


def test_bad_input_and_missing_extra_exit_2_with_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(tmp_path), "--format", "onnx"])
    assert result.exit_code == 2
    assert result.stderr == (f"error: {tmp_path / 'config.yaml'}: file not found — is {tmp_path} a run directory "
                             "made by `autobp train`?\n")  # fmt: skip
    run_dir = tiny_run(tmp_path, "relu", "bce", "float32")
    result = runner.invoke(app, ["export", str(run_dir), "--format", "onnx", "-o", str(tmp_path / "no" / "m.onnx")])
    assert result.exit_code == 2
    assert result.stderr == f"error: -o {tmp_path / 'no' / 'm.onnx'}: the folder {tmp_path / 'no'} does not exist\n"
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the extra were not installed
    result = runner.invoke(app, ["export", str(run_dir), "--format", "onnx"])
    assert result.exit_code == 2
    assert result.stderr == "error: --format onnx needs the onnx package: pip install 'autobp[export]'\n"
    assert not (run_dir / "model.onnx").exists()
