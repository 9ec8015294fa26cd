"""Target encoding: class labels (numbers or text) to class ids in sorted label order, or regression targets to a
float64 (n, k) array, with the loss named when the targets do not fit it."""

from __future__ import annotations

import numpy as np

from autobp.common.errors import ConfigError, DataError
from autobp.common.text import shorten
from autobp.model.csvtable import quoted
from autobp.model.sources import Examples


def class_ids(examples: Examples, loss: str) -> tuple[np.ndarray, list[str]]:
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
            f"{examples.origin}: every example has the class {quoted(names[0])} — classification needs 2 or more"
        )
    return ids.astype(np.int64), names


def _as_numbers(cells: np.ndarray) -> np.ndarray | None:
    try:
        return cells.astype(np.float64)
    except ValueError:
        return None


def regression_targets(examples: Examples, loss: str) -> np.ndarray:
    """The targets as float64 (n, k); text targets are a ConfigError naming the loss."""
    y = examples.y
    if y.dtype.kind not in "biuf":
        raise ConfigError(
            f"loss: '{loss}' needs numeric targets, but {examples.origin} has text values such as {quoted(y.flat[0])}"
        )
    return y.astype(np.float64).reshape(len(y), -1)
