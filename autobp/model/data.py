"""Examples for training: synthetic sources, CSV, npz and memory-mapped npy files, a seeded (stratified) split and
standardization.

Synthetic sources are deterministic functions of the seed. `noise` is the std of Gaussian noise added to each
input coordinate (blobs: the cluster std; sine and linear: noise on the target). Defaults are in
`autobp.config.models.SYNTHETIC_DEFAULTS`.
 - xor: 2 features, 2 classes; points around the corners (±1, ±1), class 1 where the signs differ.
 - moons: 2 features, 2 classes; two interleaved half circles.
 - circles: 2 features, 2 classes; a circle of radius 1 (class 0) around one of radius 0.5 (class 1).
 - spirals: 2 features, n_classes arms, each making one full turn from radius 0.1 to 1.
 - blobs: n_features, n_classes Gaussian clusters with centers drawn uniformly in [-10, 10].
 - sine: 1 feature x uniform in [-pi, pi], 1 target sin(x) (regression).
 - linear: n_features standard normal inputs, n_outputs targets x W with W standard normal (regression).
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from autobp.common.errors import ConfigError, DataError
from autobp.common.files import check_csv_size, load_npz
from autobp.common.text import plural, shorten
from autobp.model.mapped import MappedArray, MappedRows, read_header
from autobp.config.catalog import LOSSES, Task, task_of_loss
from autobp.config.models import MAX_PARAMETERS, Config, DataConfig

SPLIT_CHUNK_BYTES = 16 * 2**20  # rows per step when splitting and standardizing: bounds each temporary


@dataclass
class Dataset:
    """Training and validation arrays, ready for the network, with what is needed to map predictions back."""

    X_train: np.ndarray | MappedRows  # float64 (n, d), standardized if data.standardize; npy: read on demand
    y_train: np.ndarray  # classification: int64 (n,) class ids; regression: float64 (n, k), standardized likewise
    X_val: np.ndarray | MappedRows  # possibly 0 rows (val_fraction 0)
    y_val: np.ndarray
    task: Literal["classification", "regression"]
    feature_names: list[str]
    target_names: list[str]
    class_names: list[str] | None  # classification: label of each class id
    x_mean: np.ndarray | None  # training-split statistics; None when not standardized
    x_std: np.ndarray | None
    y_mean: np.ndarray | None  # regression targets only
    y_std: np.ndarray | None

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_classes(self) -> int | None:
        return len(self.class_names) if self.class_names is not None else None

    @property
    def n_outputs(self) -> int:
        """Output units the data needs: one per class (classification) or per target (regression)."""
        return self.n_classes if self.n_classes is not None else self.y_train.shape[1]


@dataclass
class _Examples:
    """All examples of a source before encoding and splitting."""

    X: np.ndarray | MappedRows  # float64 (n, d)
    y: np.ndarray  # (n,) labels (numbers or text) or (n, k) numbers
    feature_names: list[str]
    target_names: list[str]
    origin: str  # names the data in messages, e.g. "data.source 'sine'"


def load_dataset(config: Config) -> Dataset:
    """Load, encode, split and standardize the data the config describes (task `auto` follows the loss)."""
    data = config.data
    task: Task = task_of_loss(config.loss) if data.task == "auto" else data.task
    generate_rng, split_rng = (np.random.default_rng(seed) for seed in np.random.SeedSequence(config.seed).spawn(2))
    examples = _read_examples(data, task, config.loss, generate_rng)
    if task == "classification":
        y, class_names = _class_ids(examples, config.loss)
    else:
        y, class_names = _regression_targets(examples, config.loss), None
    train, val = _split(y, data.val_fraction, split_rng, class_names, examples.origin)
    where = data.path or f"data.source '{data.source}'"
    X_train, X_val, x_mean, x_std = _standardized(
        *split_rows(examples.X, train, val), data.standardize, examples.feature_names, where
    )
    y_mean = y_std = None
    y_train, y_val = y[train], y[val]
    if task == "regression":
        y_train, y_val, y_mean, y_std = _standardized(y_train, y_val, data.standardize, examples.target_names, where)
    return Dataset(
        X_train, y_train, X_val, y_val, task, examples.feature_names, examples.target_names, class_names,
        x_mean, x_std, y_mean, y_std,
    )


def resolve_config(config: Config, dataset: Dataset) -> Config:
    """A copy of the config with data.task and the output layer's units filled in from the data."""
    last_index = len(config.model.layers) - 1
    last = config.model.layers[last_index]
    single_output = LOSSES[config.loss].outputs == "one"
    if single_output and dataset.n_classes != 2:
        raise ConfigError(
            f"loss: '{config.loss}' needs exactly 2 classes, but the data has {dataset.n_classes} — use cross_entropy"
        )
    units = 1 if single_output else dataset.n_outputs
    if last.units not in (None, units):
        what = plural(units, "class", "classes") if dataset.task == "classification" else plural(units, "target")
        raise ConfigError(
            f"model.layers.{last_index}.units: {last.units} output units, but the data has {what} (loss {config.loss})"
        )
    layers = [*config.model.layers[:-1], last.model_copy(update={"units": units})]
    widths = [dataset.n_features] + [layer.units for layer in layers]
    parameters = sum((fan_in + 1) * fan_out for fan_in, fan_out in itertools.pairwise(widths))
    if parameters > MAX_PARAMETERS:
        raise ConfigError(
            f"model: {parameters:,} parameters for {plural(dataset.n_features, 'input feature')}, more than the "
            f"limit of {MAX_PARAMETERS:,} — use fewer or narrower layers"
        )
    return config.model_copy(update={
        "data": config.data.model_copy(update={"task": dataset.task}),
        "model": config.model.model_copy(update={"layers": layers}),
    })


# --- CSV --------------------------------------------------------------------------------------------------------


@dataclass
class Table:
    """A CSV file's header and text cells, with each row's line in the file for error messages."""

    path: Path
    columns: list[str]
    rows: list[list[str]]
    lines: list[int]  # 1-based, the header being line 1
    # Column positions by name: searching the list of columns for each name is quadratic in wide files.
    positions: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.positions = {name: index for index, name in enumerate(self.columns)}

    def require(self, names: Sequence[str], key: str) -> None:
        """Raise a DataError naming `key` if a column is missing, listing the columns there are."""
        missing = [_quoted(name) for name in names if name not in self.positions]
        if missing:
            raise DataError(f"{key}: no column {_listing(missing)} in {self.path} (columns: {_listing(self.columns)})")

    def numeric(self, names: Sequence[str], hint: str = "") -> np.ndarray:
        """The named columns as float64 (rows, len(names)); a missing, non-numeric or non-finite cell is a
        DataError with its line and column (`hint` is appended to the message)."""
        self.require(names, "column")
        cells = self._cells(names)
        try:
            values = np.array(cells, dtype=np.float64).reshape(len(cells), len(names))
        except ValueError:
            values = np.full((len(cells), len(names)), np.nan)
        if not np.isfinite(values).all():
            raise DataError(self._bad_cell_message(names, cells) + hint)
        return values

    def text(self, name: str) -> np.ndarray:
        """The named column's cells as text; an empty cell is a DataError with its line."""
        self.require([name], "column")
        cells = np.array([row[0].strip() for row in self._cells([name])])
        empty = np.flatnonzero(cells == "")
        if empty.size:
            raise DataError(f"{self.path}:{self.lines[empty[0]]}: column {_quoted(name)}: missing value")
        return cells

    def _cells(self, names: Sequence[str]) -> list[list[str]]:
        indices = [self.positions[name] for name in names]
        return [[row[index] for index in indices] for row in self.rows]

    def _bad_cell_message(self, names: Sequence[str], cells: list[list[str]]) -> str:
        for column, name in enumerate(names):
            for line, row in zip(self.lines, cells):
                problem = _cell_problem(row[column].strip())
                if problem:
                    return f"{self.path}:{line}: column {_quoted(name)}: {problem}"
        raise AssertionError("a non-finite column has a bad cell")


def _cell_problem(cell: str) -> str | None:
    if not cell:
        return "missing value"
    try:
        value = float(cell)
    except ValueError:
        return f"{_quoted(cell)} is not a number"
    return None if np.isfinite(value) else f"{_quoted(cell)} is not a finite number"


def _quoted(text: str) -> str:
    """A value from a data file, quoted and shortened for a message."""
    return shorten(f"'{text}'")


def _listing(names: Sequence[str], limit: int = 10) -> str:
    """The first `limit` names, comma-separated and each shortened, and how many more there are."""
    shown = ", ".join(shorten(name) for name in names[:limit])
    return shown if len(names) <= limit else f"{shown}, … ({len(names) - limit:,} more)"


def read_table(path: Path) -> Table:
    """Read a CSV file with a header row; raise DataError for a missing, empty, header-only or ragged file."""
    text_rows = _csv_rows(_existing(path))
    if not text_rows:
        raise DataError(f"{path}: the file is empty — expected a header row, then one row per example")
    (_, header), body = text_rows[0], text_rows[1:]
    columns = [name.strip() for name in header]
    separator = next((char for char in ";\t|" if len(columns) == 1 and char in columns[0]), None)
    if separator:
        raise DataError(
            f"{path}:1: the header is one column {_quoted(columns[0])}; autobp reads comma-separated files, "
            f"and this one seems to be separated by {separator!r}"
        )
    if "" in columns or len(set(columns)) < len(columns):
        raise DataError(f"{path}:1: the header needs a distinct, non-empty name for every column")
    if not body:
        raise DataError(f"{path}: only a header row — no examples")
    for line, row in body:
        if len(row) != len(columns):
            raise DataError(f"{path}:{line}: {len(row)} values, but the header has {len(columns)} columns")
    return Table(path, columns, [row for _, row in body], [line for line, _ in body])


def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank rows with the file line each ends on."""
    check_csv_size(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            return [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({err.strerror})") from None


def _existing(path: Path, key: str = "data.path") -> Path:
    try:
        if path.is_file():
            return path
        problem = "not a file" if path.exists() else "file not found"
    except OSError as err:  # such as a file name too long for the file system
        problem = f"cannot read it ({err.strerror})"
    raise DataError(f"{key}: {problem}: {path}")


def _read_csv(data: DataConfig, task: Task, loss: str) -> _Examples:
    table = read_table(Path(data.path))
    targets = [data.target] if isinstance(data.target, str) else data.target or [table.columns[-1]]
    table.require(targets, "data.target")
    features = data.features or [name for name in table.columns if name not in targets]
    table.require(features, "data.features")
    if not features:
        raise DataError(f"data.features: {table.path} has no columns besides the target")
    X = table.numeric(features)
    if task == "regression":
        y = table.numeric(targets, hint=f" — loss '{loss}' needs numeric targets")
    else:
        y = table.text(targets[0])
    return _Examples(X, y, features, targets, f"column {_listing([_quoted(name) for name in targets])} of {table.path}")


# --- npz --------------------------------------------------------------------------------------------------------


def _read_npz(data: DataConfig) -> _Examples:
    path = _existing(Path(data.path))
    arrays = load_npz(path)
    missing = [name for name in ("X", "y") if name not in arrays]
    if missing:
        raise DataError(
            f"{path}: no array {' or '.join(map(repr, missing))} (found: {_listing(list(arrays)) or 'none'})"
            " — an npz needs X (n, d) and y (n,) or (n, k)"
        )
    X, y = arrays["X"], arrays["y"]
    if X.ndim != 2 or 0 in X.shape or X.dtype.kind not in "biuf" or not np.isfinite(X).all():
        raise DataError(
            f"{path}: X must be a finite numeric array of shape (n, d) with n, d ≥ 1, got {X.dtype} {X.shape}"
        )
    if y.ndim not in (1, 2) or y.shape[0] != len(X) or 0 in y.shape:
        raise DataError(f"{path}: y must have shape ({len(X)},) or ({len(X)}, k), got {y.shape}")
    if y.dtype.kind not in "biufU" or (y.dtype.kind == "f" and not np.isfinite(y).all()):
        raise DataError(f"{path}: y must hold finite numbers or text labels, got {y.dtype}")
    target_names = ["y"] if y.ndim == 1 or y.shape[1] == 1 else [f"y{index}" for index in range(y.shape[1])]
    feature_names = [f"x{index}" for index in range(X.shape[1])]
    return _Examples(X.astype(np.float64, copy=False), y, feature_names, target_names, str(path))


# --- npy, memory-mapped ----------------------------------------------------------------------------------------


def _read_npy(data: DataConfig) -> _Examples:
    """Features memory-mapped (never read whole, see autobp.model.mapped) and the targets read into memory."""
    path = _existing(Path(data.path))
    target_path = _existing(Path(data.target_path), "data.target_path")
    features = MappedArray(path, "data.path")
    n, d = features.shape
    shape, dtype, _, _ = read_header(target_path, "data.target_path")
    if len(shape) not in (1, 2) or shape[0] != n or 0 in shape or dtype.kind not in "biufU":
        raise DataError(
            f"data.target_path: {target_path}: targets must be numbers or text labels of shape ({n},) or ({n}, k), "
            f"one row per row of {path.name}; got {dtype} {shape}"
        )
    y = np.array(np.load(target_path, mmap_mode="r", allow_pickle=False))
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"data.target_path: {target_path}: row {_first_non_finite(y)} is not a finite number")
    X = MappedRows(features, np.arange(n))
    check_finite_rows(X, f"data.path: {path}")
    target_names = ["y"] if y.ndim == 1 or y.shape[1] == 1 else [f"y{index}" for index in range(y.shape[1])]
    return _Examples(X, y, [f"x{index}" for index in range(d)], target_names, str(target_path))


def check_finite_rows(X: MappedRows, where: str) -> None:
    """A DataError naming the first row with a NaN or infinity, found chunk by chunk (`where` starts the message)."""
    step = _rows_per_chunk(X)
    for start in range(0, len(X), step):
        chunk = X[start : start + step]
        if not np.isfinite(chunk).all():
            raise DataError(f"{where}: row {start + _first_non_finite(chunk)} has a value that is not a finite number")


def _first_non_finite(values: np.ndarray) -> int:
    return int(np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))[0])


# --- synthetic sources ------------------------------------------------------------------------------------------


def _class_sizes(n: int, classes: int) -> list[int]:
    return [n // classes + (index < n % classes) for index in range(classes)]


def _labels(sizes: Sequence[int]) -> np.ndarray:
    return np.repeat(np.arange(len(sizes)), sizes)


def _xor(data: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    corner = _labels(_class_sizes(data.n_samples, 4))
    return corners[corner] + data.noise * rng.standard_normal((data.n_samples, 2)), corner // 2


def _moons(data: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(_class_sizes(data.n_samples, 2))
    angle = rng.uniform(0.0, np.pi, data.n_samples)
    outer = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    inner = np.stack([1.0 - np.cos(angle), 0.5 - np.sin(angle)], axis=1)
    X = np.where(y[:, None] == 0, outer, inner)
    return X + data.noise * rng.standard_normal(X.shape), y


def _circles(data: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(_class_sizes(data.n_samples, 2))
    angle = rng.uniform(0.0, 2 * np.pi, data.n_samples)
    radius = np.where(y == 0, 1.0, 0.5)[:, None]
    X = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return X + data.noise * rng.standard_normal(X.shape), y


def _spirals(data: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(_class_sizes(data.n_samples, data.n_classes))
    t = rng.uniform(0.0, 1.0, data.n_samples)
    # Starting at radius 0.1 keeps the arms apart at the centre, where they would otherwise overlap.
    radius = (0.1 + 0.9 * t)[:, None]
    angle = 2 * np.pi * (y / data.n_classes + t)
    X = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return X + data.noise * rng.standard_normal(X.shape), y


def _blobs(data: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(_class_sizes(data.n_samples, data.n_classes))
    centers = rng.uniform(-10.0, 10.0, (data.n_classes, data.n_features))
    return centers[y] + data.noise * rng.standard_normal((data.n_samples, data.n_features)), y


def _sine(data: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-np.pi, np.pi, (data.n_samples, 1))
    return x, np.sin(x) + data.noise * rng.standard_normal(x.shape)


def _linear(data: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    X = rng.standard_normal((data.n_samples, data.n_features))
    weights = rng.standard_normal((data.n_features, data.n_outputs))
    return X, X @ weights + data.noise * rng.standard_normal((data.n_samples, data.n_outputs))


_SYNTHETIC: dict[str, Callable[[DataConfig, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "xor": _xor, "moons": _moons, "circles": _circles, "spirals": _spirals, "blobs": _blobs,
    "sine": _sine, "linear": _linear,
}


def _read_examples(data: DataConfig, task: Task, loss: str, rng: np.random.Generator) -> _Examples:
    if data.source == "csv":
        return _read_csv(data, task, loss)
    if data.source == "npz":
        return _read_npz(data)
    if data.source == "npy":
        return _read_npy(data)
    X, y = _SYNTHETIC[data.source](data, rng)
    target_names = [f"y{index}" for index in range(y.shape[1])] if y.ndim == 2 and y.shape[1] > 1 else ["y"]
    features = [f"x{index}" for index in range(X.shape[1])]
    return _Examples(X, y, features, target_names, f"data.source '{data.source}'")


# --- targets, split, standardization ----------------------------------------------------------------------------


def _class_ids(examples: _Examples, loss: str) -> tuple[np.ndarray, list[str]]:
    """Class ids in the sorted order of the label values (numeric order for numbers), and the labels as text."""
    labels = examples.y
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise ConfigError(
            f"loss: '{loss}' needs one target of class labels, but {examples.origin} has {labels.shape[1]}"
        )
    written = labels.reshape(-1)
    numbers = _as_numbers(written) if written.dtype.kind in "US" else written
    labels = written if numbers is None else numbers
    if labels.dtype.kind == "f":
        odd = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
        if odd.size:
            raise ConfigError(
                f"loss: '{loss}' needs class labels, but {examples.origin} has non-integer values such as "
                f"{shorten(str(written[odd[0]]))} — use mse, mae or huber for a regression target"
            )
    values, ids = np.unique(labels, return_inverse=True)
    # Python ints name whole-number labels exactly at any size, where a cast to int64 would overflow.
    names = [str(int(value)) if labels.dtype.kind in "biuf" else str(value) for value in values]
    if len(names) < 2:
        raise DataError(
            f"{examples.origin}: every example has the class {_quoted(names[0])} — classification needs 2 or more"
        )
    return ids.astype(np.int64), names


def _as_numbers(cells: np.ndarray) -> np.ndarray | None:
    try:
        return cells.astype(np.float64)
    except ValueError:
        return None


def _regression_targets(examples: _Examples, loss: str) -> np.ndarray:
    y = examples.y
    if y.dtype.kind not in "biuf":
        raise ConfigError(
            f"loss: '{loss}' needs numeric targets, but {examples.origin} has text values such as {_quoted(y.flat[0])}"
        )
    return y.astype(np.float64).reshape(len(y), -1)


def _split(
    y: np.ndarray, val_fraction: float, rng: np.random.Generator, class_names: list[str] | None, origin: str
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation indices (each in data order); stratified per class for class ids `y`."""
    if class_names is None:
        groups = [np.arange(len(y))]
    else:
        # One stable sort rather than a scan per class, which is quadratic when nearly every label is distinct.
        sizes = np.bincount(y, minlength=len(class_names))
        groups = np.split(np.argsort(y, kind="stable"), np.cumsum(sizes)[:-1])
    train, val = [], []
    for index, group in enumerate(groups):
        if class_names is not None and val_fraction > 0 and len(group) < 2:
            raise DataError(
                f"{origin}: class {_quoted(class_names[index])} has only 1 example — a stratified split needs 2 or "
                "more per class (or set data.val_fraction: 0)"
            )
        shuffled = rng.permutation(group)
        n_val = 0 if val_fraction == 0 else min(len(group) - 1, max(1, round(val_fraction * len(group))))
        val.append(shuffled[:n_val])
        train.append(shuffled[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def split_rows(X: np.ndarray, train: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X[train], X[val]) for sorted, disjoint row indices, reusing X's memory: the training rows move to the front
    of X in place (X is overwritten), so only the validation rows are copied. Mapped rows are only selected."""
    if isinstance(X, MappedRows):
        return X.take(train), X.take(val)
    X_val = X[val]
    chunk = _rows_per_chunk(X)
    for start in range(0, len(train), chunk):
        rows = train[start : start + chunk]
        X[start : start + len(rows)] = X[rows]  # rows only move forward (train[i] ≥ i): no unread row is overwritten
    return X[: len(train)], X_val


def _rows_per_chunk(X: np.ndarray) -> int:
    return max(1, SPLIT_CHUNK_BYTES // max(1, X.itemsize * X.shape[1]))


def _column_mean(X: np.ndarray | MappedRows) -> np.ndarray:
    """Each column's mean, summed over chunks of rows: the same sums for an array and for mapped rows."""
    total = np.zeros(X.shape[1])
    step = _rows_per_chunk(X)
    for start in range(0, len(X), step):
        total += X[start : start + step].sum(axis=0)
    return total / len(X)


def _column_std(X: np.ndarray | MappedRows, mean: np.ndarray) -> np.ndarray:
    """Each column's population std (as X.std(axis=0)), from chunks of rows: no temporary the size of X."""
    squares = np.zeros_like(mean)
    step = _rows_per_chunk(X)
    for start in range(0, len(X), step):
        deviation = X[start : start + step] - mean
        squares += np.einsum("ij,ij->j", deviation, deviation)
    return np.sqrt(squares / len(X))


def _standardized(
    train: np.ndarray, val: np.ndarray, enabled: bool, names: Sequence[str], where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Both splits scaled with the training split's mean and std (std 0 counts as 1), and those statistics."""
    if not enabled:
        return train, val, None, None
    with np.errstate(over="ignore", invalid="ignore"):
        mean = _column_mean(train)
        std = _column_std(train, mean)
    overflowed = [name for name, m, s in zip(names, mean, std) if not (np.isfinite(m) and np.isfinite(s))]
    if overflowed:
        # Squares of values beyond ~1e154 overflow float64: silently they would all standardize to 0.
        raise DataError(
            f"{where}: column {_listing(overflowed)} has values too large to standardize (beyond about 1e154); "
            "rescale the data, or set data.standardize: false"
        )
    std[std == 0] = 1.0
    if isinstance(train, MappedRows):
        return train.scaled(mean, std), val.scaled(mean, std), mean, std  # each batch is scaled as it is read
    # In place, the same arithmetic as (train - mean) / std: no second copy of the data.
    for split in (train, val):
        split -= mean
        split /= std
    return train, val, mean, std
