"""Every data source's reader, registered under its name in `autobp.config.catalog.SOURCES` (which owns its keys and
defaults): CSV, npz and memory-mapped npy files, and the synthetic generators.

Synthetic sources are deterministic functions of the seed. `noise` is the std of Gaussian noise added to each
input coordinate (blobs: the cluster std; sine and linear: noise on the target).
 - xor: 2 features, 2 classes; points around the corners (±1, ±1), class 1 where the signs differ.
 - moons: 2 features, 2 classes; two interleaved half circles.
 - circles: 2 features, 2 classes; a circle of radius 1 (class 0) around one of radius 0.5 (class 1).
 - spirals: 2 features, n_classes arms, each making one full turn from radius 0.1 to 1.
 - blobs: n_features, n_classes Gaussian clusters with centers drawn uniformly in [-10, 10].
 - sine: 1 feature x uniform in [-pi, pi], 1 target sin(x) (regression).
 - linear: n_features standard normal inputs, n_outputs targets x W with W standard normal (regression).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autobp.common.errors import DataError
from autobp.common.files import load_npz
from autobp.config.catalog import SOURCES, SourceKind, Task
from autobp.config.models import DataConfig
from autobp.model.csvtable import existing, listing, quoted, read_table
from autobp.model.mapped import MappedArray, MappedRows, read_header
from autobp.model.split import rows_per_chunk


@dataclass
class Examples:
    """All examples of a source before encoding and splitting."""

    X: np.ndarray | MappedRows  # float64 (n, d)
    y: np.ndarray  # (n,) labels (numbers or text) or (n, k) numbers
    feature_names: list[str]
    target_names: list[str]
    origin: str  # names the data in messages, e.g. "data.source 'sine'"


Reader = Callable[[DataConfig, Task, str, np.random.Generator], Examples]  # (data, task, loss, rng)
Synthesizer = Callable[[DataConfig, np.random.Generator], tuple[np.ndarray, np.ndarray]]  # (data, rng) → (X, y)
READERS: dict[str, Reader] = {}


def read_examples(data: DataConfig, task: Task, loss: str, rng: np.random.Generator) -> Examples:
    """All examples of the config's source (a synthetic one drawn with `rng`), before encoding and splitting."""
    return READERS[data.source](data, task, loss, rng)


def reads(name: str) -> Callable[[Reader], Reader]:
    """Register the decorated function as the reader of the catalog's file source `name`."""

    def register(read: Reader) -> Reader:
        _register(name, "file", read)
        return read

    return register


def generates(name: str) -> Callable[[Synthesizer], Synthesizer]:
    """Register the decorated (data, rng) → (X, y) function as the catalog's synthetic source `name`."""

    def register(generate: Synthesizer) -> Synthesizer:
        _register(name, "synthetic", lambda data, task, loss, rng: _generated(name, *generate(data, rng)))
        return generate

    return register


def _register(name: str, kind: SourceKind, read: Reader) -> None:
    # A reader without its catalog entry would be unreachable: the config refuses every name not in the catalog.
    if name not in SOURCES or SOURCES[name].kind != kind:
        raise ValueError(f"no {kind} source {name!r} in autobp.config.catalog.SOURCES")
    if name in READERS:
        raise ValueError(f"data source {name!r} has a reader already")
    READERS[name] = read


def _generated(name: str, X: np.ndarray, y: np.ndarray) -> Examples:
    target_names = [f"y{index}" for index in range(y.shape[1])] if y.ndim == 2 and y.shape[1] > 1 else ["y"]
    features = [f"x{index}" for index in range(X.shape[1])]
    return Examples(X, y, features, target_names, f"data.source '{name}'")


# --- files ------------------------------------------------------------------------------------------------------


@reads("csv")
def _read_csv(data: DataConfig, task: Task, loss: str, *_: object) -> Examples:
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
    return Examples(X, y, features, targets, f"column {listing([quoted(name) for name in targets])} of {table.path}")


@reads("npz")
def _read_npz(data: DataConfig, *_: object) -> Examples:
    path = existing(Path(data.path))
    arrays = load_npz(path)
    missing = [name for name in ("X", "y") if name not in arrays]
    if missing:
        raise DataError(
            f"{path}: no array {' or '.join(map(repr, missing))} (found: {listing(list(arrays)) or 'none'})"
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
    return Examples(X.astype(np.float64, copy=False), y, feature_names, target_names, str(path))


@reads("npy")
def _read_npy(data: DataConfig, *_: object) -> Examples:
    """Features memory-mapped (never read whole, see autobp.model.mapped) and the targets read into memory."""
    path = existing(Path(data.path))
    target_path = existing(Path(data.target_path), "data.target_path")
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
    return Examples(X, y, [f"x{index}" for index in range(d)], target_names, str(target_path))


def check_finite_rows(X: MappedRows, where: str) -> None:
    """A DataError naming the first row with a NaN or infinity, found chunk by chunk (`where` starts the message)."""
    step = rows_per_chunk(X)
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


@generates("xor")
def _xor(data: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    corner = _labels(_class_sizes(data.n_samples, 4))
    return corners[corner] + data.noise * rng.standard_normal((data.n_samples, 2)), corner // 2


@generates("moons")
def _moons(data: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(_class_sizes(data.n_samples, 2))
    angle = rng.uniform(0.0, np.pi, data.n_samples)
    outer = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    inner = np.stack([1.0 - np.cos(angle), 0.5 - np.sin(angle)], axis=1)
    X = np.where(y[:, None] == 0, outer, inner)
    return X + data.noise * rng.standard_normal(X.shape), y


@generates("circles")
def _circles(data: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(_class_sizes(data.n_samples, 2))
    angle = rng.uniform(0.0, 2 * np.pi, data.n_samples)
    radius = np.where(y == 0, 1.0, 0.5)[:, None]
    X = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return X + data.noise * rng.standard_normal(X.shape), y


@generates("spirals")
def _spirals(data: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(_class_sizes(data.n_samples, data.n_classes))
    t = rng.uniform(0.0, 1.0, data.n_samples)
    # Starting at radius 0.1 keeps the arms apart at the centre, where they would otherwise overlap.
    radius = (0.1 + 0.9 * t)[:, None]
    angle = 2 * np.pi * (y / data.n_classes + t)
    X = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return X + data.noise * rng.standard_normal(X.shape), y


@generates("blobs")
def _blobs(data: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(_class_sizes(data.n_samples, data.n_classes))
    centers = rng.uniform(-10.0, 10.0, (data.n_classes, data.n_features))
    return centers[y] + data.noise * rng.standard_normal((data.n_samples, data.n_features)), y


@generates("sine")
def _sine(data: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-np.pi, np.pi, (data.n_samples, 1))
    return x, np.sin(x) + data.noise * rng.standard_normal(x.shape)


@generates("linear")
def _linear(data: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    X = rng.standard_normal((data.n_samples, data.n_features))
    weights = rng.standard_normal((data.n_features, data.n_outputs))
    return X, X @ weights + data.noise * rng.standard_normal((data.n_samples, data.n_outputs))
