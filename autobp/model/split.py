"""The seeded train/validation split (stratified per class) and standardization with the training split's statistics,
both in bounded chunks of rows so that no temporary is the size of the data."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autobp.common.errors import DataError
from autobp.model.csvtable import listing, quoted
from autobp.model.mapped import MappedRows

SPLIT_CHUNK_BYTES = 16 * 2**20  # rows per step when splitting and standardizing: bounds each temporary


def split_indices(
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
                f"{origin}: class {quoted(class_names[index])} has only 1 example — a stratified split needs 2 or "
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
    chunk = rows_per_chunk(X)
    for start in range(0, len(train), chunk):
        rows = train[start : start + chunk]
        X[start : start + len(rows)] = X[rows]  # rows only move forward (train[i] ≥ i): no unread row is overwritten
    return X[: len(train)], X_val


def rows_per_chunk(X: np.ndarray | MappedRows) -> int:
    """Rows of X in a chunk of about SPLIT_CHUNK_BYTES (at least one)."""
    return max(1, SPLIT_CHUNK_BYTES // max(1, X.itemsize * X.shape[1]))


def _column_mean(X: np.ndarray | MappedRows) -> np.ndarray:
    """Each column's mean, summed over chunks of rows: the same sums for an array and for mapped rows."""
    total = np.zeros(X.shape[1])
    step = rows_per_chunk(X)
    for start in range(0, len(X), step):
        total += X[start : start + step].sum(axis=0)
    return total / len(X)


def _column_std(X: np.ndarray | MappedRows, mean: np.ndarray) -> np.ndarray:
    """Each column's population std (as X.std(axis=0)), from chunks of rows: no temporary the size of X."""
    squares = np.zeros_like(mean)
    step = rows_per_chunk(X)
    for start in range(0, len(X), step):
        deviation = X[start : start + step] - mean
        squares += np.einsum("ij,ij->j", deviation, deviation)
    return np.sqrt(squares / len(X))


def standardized(
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
            f"{where}: column {listing(overflowed)} has values too large to standardize (beyond about 1e154); "
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
