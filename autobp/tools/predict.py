"""Using a trained run: load its network, predict on new examples, and score them when their targets are known.

    model = load_model(Path("runs/iris-20240101-120000"))
    prediction = predict_file(model, Path("new_flowers.csv"))
    prediction.csv, prediction.metrics

The new examples go through the same steps as the training data: columns picked by the saved feature names,
standardized with the training split's statistics; regression outputs are mapped back to the targets' units.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from autobp.common import files
from autobp.common.errors import DataError
from autobp.common.files import load_npz
from autobp.model.csvtable import read_table
from autobp.model.dataset import Dataset
from autobp.model.mapped import MappedArray, MappedRows
from autobp.model.network import MODEL_FILE, Network, build_network, load_model_file
from autobp.model.sources import check_finite_rows
from autobp.rundir import layout as rundir
from autobp.config.catalog import task_of_loss
from autobp.config.models import Config
from autobp.config.configfile import load_config
from autobp.training.metrics import Meter, class_probabilities, loss_targets, predicted_classes, to_original_units
from autobp.training.metrics import evaluate as evaluate_network

REQUIRED_ARRAYS = ("feature_names", "target_names")


@dataclass
class TrainedModel:
    """A run's network, its config, and what maps data into and out of it."""

    config: Config
    network: Network
    # An example-free Dataset: the names and standardization statistics of the training data are all that
    # predicting needs, and in this form the metrics module reads them exactly as it does during training.
    data: Dataset


@dataclass
class Prediction:
    """Predictions as CSV text, and the loss and accuracy or R² when the file had targets (else None)."""

    csv: str
    rows: int
    metrics: dict[str, float | None] | None

    def format_metrics(self) -> str:
        """One line, e.g. `metrics on 30 rows: loss 0.0615, accuracy 0.9667`; empty without targets."""
        if self.metrics is None:
            return ""
        values = ", ".join(f"{key} {'-' if value is None else f'{value:.4g}'}" for key, value in self.metrics.items())
        return f"metrics on {self.rows:,} rows: {values}"


def load_model(run_dir: Path) -> TrainedModel:
    """The network a run directory describes (config.yaml), with its trained parameters (model.npz)."""
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: not a run directory (expected a folder made by `autobp train`)")
    config_path = run_dir / rundir.CONFIG_FILE
    if not config_path.is_file():
        raise DataError(f"{config_path}: file not found — is {run_dir} a run directory made by `autobp train`?")
    # The trained parameters replace any starting point, so a moved or deleted init_from file must not matter.
    config = load_config(config_path)
    config = config.model_copy(update={"model": config.model.model_copy(update={"init_from": None})})
    model_path = run_dir / MODEL_FILE
    arrays = load_model_file(model_path)
    missing = [key for key in REQUIRED_ARRAYS if key not in arrays]
    if missing:
        names = ", ".join(map(repr, missing))
        raise DataError(f"{model_path}: no array {names} — it was not written by `autobp train`")
    if (task_of_loss(config.loss) == "classification") != ("class_names" in arrays):
        has = "has" if "class_names" in arrays else "has no"
        raise DataError(f"{model_path}: {has} class_names, but the run's loss {config.loss} is "
                        f"{task_of_loss(config.loss)} — the file is damaged or belongs to another run")  # fmt: skip
    data = _training_data(config, arrays)
    network = build_network(config, data.n_features, np.random.default_rng(config.seed))
    network.load_state_dict(arrays, str(model_path))
    return TrainedModel(config, network, data)


def _training_data(config: Config, arrays: dict[str, np.ndarray]) -> Dataset:
    features = [str(name) for name in arrays["feature_names"]]
    targets = [str(name) for name in arrays["target_names"]]
    classes = [str(name) for name in arrays["class_names"]] if "class_names" in arrays else None
    no_rows = np.empty((0, len(features)))
    return Dataset(
        X_train=no_rows, y_train=np.empty(0), X_val=no_rows, y_val=np.empty(0), task=task_of_loss(config.loss),
        feature_names=features, target_names=targets, class_names=classes,
        x_mean=arrays.get("x_mean"), x_std=arrays.get("x_std"), y_mean=arrays.get("y_mean"), y_std=arrays.get("y_std"),
    )  # fmt: skip


def predict_file(model: TrainedModel, path: Path) -> Prediction:
    """Predict every example of a CSV, .npz or .npy file, scoring the predictions if the file has the targets."""
    X, y = read_examples(model, path)
    outputs, metrics = evaluate(model, X, y)
    return Prediction(prediction_csv(model, outputs), len(X), metrics)


def read_examples(model: TrainedModel, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The file's features, in the model's input form, and its targets in the loss's form (None if absent)."""
    files.check_regular_file(path)
    if path.suffix.lower() == ".npy":
        return _mapped_inputs(model, path), None
    X, y = _read_npz(model, path) if path.suffix.lower() == ".npz" else _read_csv(model, path)
    data = model.data
    if y is not None and data.y_mean is not None:
        y = (y - data.y_mean) / data.y_std  # the metrics map targets back to their units, as in training
    dtype = np.dtype(model.config.training.dtype)
    return network_inputs(model, X), None if y is None else loss_targets(y, model.config.loss, dtype)


def network_inputs(model: TrainedModel, X: np.ndarray) -> np.ndarray:
    """Features in the data's units as the network takes them: standardized as in training, in the run's dtype."""
    data = model.data
    if data.x_mean is not None:
        X = (X - data.x_mean) / data.x_std
    return X.astype(np.dtype(model.config.training.dtype))


def _mapped_inputs(model: TrainedModel, path: Path) -> MappedRows:
    """An .npy of features, memory-mapped: each chunk is read, standardized and cast as it is evaluated, with the
    arithmetic of `network_inputs`."""
    array = MappedArray(path, "DATA")
    d = model.data.n_features
    if array.shape[1] != d:
        raise DataError(f"{path}: the model takes {d} features per row, the array has {array.shape[1]}")
    rows = MappedRows(array, np.arange(array.shape[0]))
    check_finite_rows(rows, str(path))
    data = model.data
    if data.x_mean is not None:
        rows = rows.scaled(data.x_mean, data.x_std)
    return rows.astype(model.config.training.dtype)


def _read_csv(model: TrainedModel, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    data = model.data
    table = read_table(path)
    table.require(data.feature_names, "features the model was trained on")
    X = table.numeric(data.feature_names)
    if not all(name in table.columns for name in data.target_names):
        return X, None
    if data.class_names is None:
        return X, table.numeric(data.target_names)
    target = data.target_names[0]
    labels = table.text(target)
    return X, _class_ids(labels, data.class_names, lambda row: f"{path}:{table.lines[row]}: column '{target}'")


def _read_npz(model: TrainedModel, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    data = model.data
    arrays = load_npz(path)
    if "X" not in arrays:
        found = ", ".join(arrays) or "none"
        raise DataError(f"{path}: no array 'X' (found: {found}) — expected X (n, d) and optionally y")
    X = arrays["X"]
    d = data.n_features
    if X.ndim != 2 or len(X) == 0 or X.shape[1] != d or X.dtype.kind not in "biuf" or not np.isfinite(X).all():
        raise DataError(f"{path}: X must be a finite numeric array of shape (n, {d}), n ≥ 1; got {X.dtype} {X.shape}")
    X = X.astype(np.float64)
    if "y" not in arrays:
        return X, None
    y = arrays["y"]
    if data.class_names is not None:
        if y.shape != (len(X),):
            raise DataError(f"{path}: y must hold one class label per row, shape ({len(X)},), got {y.shape}")
        return X, _class_ids(y, data.class_names, lambda row: f"{path}: y[{row}]")
    k = len(data.target_names)
    if y.dtype.kind not in "biuf" or y.reshape(len(y), -1).shape != (len(X), k):
        raise DataError(f"{path}: y must be numeric with {len(X)} rows of {k} targets, got {y.dtype} {y.shape}")
    return X, y.astype(np.float64).reshape(len(X), k)


def _class_ids(labels: np.ndarray, class_names: list[str], where: Callable[[int], str]) -> np.ndarray:
    """Labels as the training data's class ids; an unknown label is a DataError placed by `where(row)`."""
    ids = {name: index for index, name in enumerate(class_names)}
    names = _label_names(labels)
    unknown = [row for row, name in enumerate(names) if name not in ids]
    if unknown:
        row = unknown[0]
        raise DataError(
            f"{where(row)}: class '{labels[row]}' is not one the model was trained on ({', '.join(class_names)})"
        )
    return np.array([ids[name] for name in names], dtype=np.int64)


def _label_names(labels: np.ndarray) -> list[str]:
    """Labels spelled as training spelled class names: whole numbers as integers ('1.0' and 1 are class '1')."""
    try:
        numbers = labels.astype(np.float64)
    except ValueError:
        return [str(label) for label in labels]
    if np.isfinite(numbers).all() and (numbers == np.round(numbers)).all():
        return [str(number) for number in numbers.astype(np.int64)]
    return [str(label) for label in labels]


def evaluate(
    model: TrainedModel, X: np.ndarray, y: np.ndarray | None
) -> tuple[np.ndarray, dict[str, float | None] | None]:
    """Network outputs for X and, with targets y, the metrics — measured exactly as training measures them."""
    meter = Meter(model.data.task, model.config.loss, model.data)
    with np.errstate(over="ignore", invalid="ignore"):  # weights near overflow predict inf or NaN, shown as such
        outputs = evaluate_network(model.network, meter, X, y)
    return outputs, None if y is None else meter.result()


def write_predictions(path: Path, text: str) -> None:
    """Write the predictions file by the output rule of `files.write_output`."""
    files.write_output(path, text, "-o")


def prediction_csv(model: TrainedModel, outputs: np.ndarray) -> str:
    """Classification: `prediction` (class name) and `p_<class>` per class; regression: one column per target."""
    header, rows = prediction_table(model, outputs)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)  # the csv module quotes what needs quoting, once
    return buffer.getvalue()


def prediction_table(model: TrainedModel, outputs: np.ndarray) -> tuple[list[str], list[list]]:
    """The columns and rows of `prediction_csv`, as Python values."""
    data = model.data
    if data.class_names is None:
        header = list(data.target_names)
        rows = to_original_units(outputs.astype(np.float64), data).tolist()
    else:
        header = ["prediction", *(f"p_{name}" for name in data.class_names)]
        names = np.array(data.class_names)[predicted_classes(outputs, model.config.loss)]
        probabilities = class_probabilities(outputs.astype(np.float64), model.config.loss).tolist()
        rows = [[name, *p] for name, p in zip(names.tolist(), probabilities)]
    return header, rows
