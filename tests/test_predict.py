"""`autobp predict`: predicting a run's own validation rows reproduces its validation metrics; bad input is a
clear error."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, read_csv
from typer.testing import CliRunner

from autobp.cli import app
from autobp.common.errors import DataError
from autobp.model.dataset import Dataset
from autobp.model.prepare import prepare
from autobp.tools.predict import load_model, predict_file
from autobp.training.entry import train


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Without early stopping the saved model is the last epoch's, the one metrics.csv's last row measured.
    overrides = ["training.epochs=5", "training.early_stopping=null"]
    return train(CONFIGS / "iris.yaml", overrides, output=tmp_path_factory.mktemp("runs")).run_dir


@pytest.fixture(scope="module")
def sine_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(CONFIGS / "sine.yaml", ["training.epochs=5"], output=tmp_path_factory.mktemp("runs")).run_dir


def validation_split(run_dir: Path) -> tuple[Dataset, np.ndarray]:
    """The run's validation split again (same config, same seed), with its features back in the data's units."""
    _, dataset = prepare(run_dir / "config.yaml")
    return dataset, dataset.X_val * dataset.x_std + dataset.x_mean


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([[repr(v) if isinstance(v, float) else v for v in row] for row in rows])
    return path


def final_metrics(run_dir: Path) -> dict[str, float]:
    return {key: float(value) for key, value in read_csv(run_dir / "metrics.csv")[-1].items()}


def iris_validation_csv(run_dir: Path, path: Path) -> tuple[Path, np.ndarray]:
    """The validation rows with an extra leading `id` column and the species, and the true species."""
    dataset, X = validation_split(run_dir)
    labels = np.array(dataset.class_names)[dataset.y_val]
    rows = [[index, *x, label] for index, (x, label) in enumerate(zip(X.tolist(), labels))]
    return write_csv(path, ["id", *dataset.feature_names, "species"], rows), labels


def test_predicting_the_validation_rows_reproduces_the_validation_accuracy(iris_run: Path, tmp_path: Path) -> None:
    data, labels = iris_validation_csv(iris_run, tmp_path / "val.csv")
    out = tmp_path / "predictions.csv"
    result = CliRunner().invoke(app, ["predict", str(iris_run), str(data), "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert list(rows[0]) == ["prediction", "p_setosa", "p_versicolor", "p_virginica"]
    predicted = np.array([row["prediction"] for row in rows])
    final = final_metrics(iris_run)
    assert np.mean(predicted == labels) == final["val_accuracy"]
    classes = np.array(["setosa", "versicolor", "virginica"])
    probabilities = np.array([[float(row[f"p_{name}"]) for name in classes] for row in rows])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)
    assert np.array_equal(classes[probabilities.argmax(axis=1)], predicted)
    assert f"wrote {len(labels)} predictions to {out}" in result.stdout
    assert f"loss {final['val_loss']:.4g}, accuracy {final['val_accuracy']:.4g}" in result.stdout
    metrics = predict_file(load_model(iris_run), data).metrics
    assert metrics == {"loss": pytest.approx(final["val_loss"], rel=1e-12), "accuracy": final["val_accuracy"]}


def test_regression_predictions_reproduce_the_validation_loss_in_the_data_units(sine_run: Path, tmp_path: Path) -> None:
    dataset, X = validation_split(sine_run)
    y = (dataset.y_val * dataset.y_std + dataset.y_mean)[:, 0]
    data = write_csv(tmp_path / "val.csv", ["x0", "y"], np.stack([X[:, 0], y], axis=1).tolist())
    out = tmp_path / "predictions.csv"
    result = CliRunner().invoke(app, ["predict", str(sine_run), str(data), "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert list(rows[0]) == ["y"]
    predicted = np.array([float(row["y"]) for row in rows])
    final = final_metrics(sine_run)
    assert np.mean((predicted - y) ** 2) == pytest.approx(final["val_loss"], rel=1e-9)
    metrics = predict_file(load_model(sine_run), data).metrics
    assert metrics["loss"] == pytest.approx(final["val_loss"], rel=1e-9)
    assert metrics["r2"] == pytest.approx(final["val_r2"], rel=1e-9)


def test_an_npz_file_gives_the_same_predictions_as_the_csv(sine_run: Path, tmp_path: Path) -> None:
    dataset, X = validation_split(sine_run)
    y = dataset.y_val * dataset.y_std + dataset.y_mean
    model = load_model(sine_run)
    from_csv = predict_file(model, write_csv(tmp_path / "val.csv", ["x0", "y"], np.hstack([X, y]).tolist()))
    np.savez(tmp_path / "val.npz", X=X, y=y[:, 0])
    from_npz = predict_file(model, tmp_path / "val.npz")
    assert from_npz.csv == from_csv.csv
    assert from_npz.metrics == from_csv.metrics
    np.savez(tmp_path / "features.npz", X=X)
    assert predict_file(model, tmp_path / "features.npz").metrics is None


def test_without_out_predictions_go_to_stdout_and_metrics_to_stderr(iris_run: Path, tmp_path: Path) -> None:
    data, labels = iris_validation_csv(iris_run, tmp_path / "val.csv")
    result = CliRunner().invoke(app, ["predict", str(iris_run), str(data)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert len(rows) == len(labels) and "prediction" in rows[0]
    assert result.stderr.startswith(f"metrics on {len(labels)} rows: loss ")
    unlabeled = write_csv(tmp_path / "features.csv", ["sepal_length", "sepal_width", "petal_length", "petal_width"],
                          [[5.1, 3.5, 1.4, 0.2]])  # fmt: skip
    result = CliRunner().invoke(app, ["predict", str(iris_run), str(unlabeled)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("prediction,p_setosa") and len(result.stdout.splitlines()) == 2
    assert result.stderr == ""


def test_missing_feature_columns_are_an_error_naming_them(iris_run: Path, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "partial.csv", ["sepal_length", "sepal_width"], [[5.1, 3.5]])
    result = CliRunner().invoke(app, ["predict", str(iris_run), str(data)])
    assert result.exit_code == 2
    assert "no column 'petal_length', 'petal_width'" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.output


def test_an_unknown_class_label_is_an_error_with_its_line(iris_run: Path, tmp_path: Path) -> None:
    header = ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
    data = write_csv(tmp_path / "odd.csv", header, [[5.1, 3.5, 1.4, 0.2, "setosa"], [5.0, 3.0, 1.5, 0.2, "daisy"]])
    with pytest.raises(DataError, match=r"odd\.csv:3: column 'species': class 'daisy' is not one the model"):
        predict_file(load_model(iris_run), data)


def test_a_corrupted_model_file_is_a_clear_error(iris_run: Path, tmp_path: Path) -> None:
    broken = tmp_path / "run"
    broken.mkdir()
    (broken / "config.yaml").write_bytes((iris_run / "config.yaml").read_bytes())
    (broken / "model.npz").write_bytes((iris_run / "model.npz").read_bytes()[:100])
    result = CliRunner().invoke(app, ["predict", str(broken), str(CONFIGS / "data" / "iris.csv")])
    assert result.exit_code == 2
    assert "model.npz: not a readable .npz file" in result.stderr and "Traceback" not in result.output
