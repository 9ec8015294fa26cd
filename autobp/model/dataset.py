"""The data of a run: load the examples of the config's source, encode the targets, split and standardize."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from autobp.config.catalog import Task, task_of_loss
from autobp.config.models import Config
from autobp.model.mapped import MappedRows
from autobp.model.sources import read_examples
from autobp.model.split import split_indices, split_rows, standardized
from autobp.model.targets import class_ids, regression_targets


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


def load_dataset(config: Config) -> Dataset:
    """Load, encode, split and standardize the data the config describes (task `auto` follows the loss)."""
    data = config.data
    task: Task = task_of_loss(config.loss) if data.task == "auto" else data.task
    generate_rng, split_rng = (np.random.default_rng(seed) for seed in np.random.SeedSequence(config.seed).spawn(2))
    examples = read_examples(data, task, config.loss, generate_rng)
    if task == "classification":
        y, class_names = class_ids(examples, config.loss)
    else:
        y, class_names = regression_targets(examples, config.loss), None
    train, val = split_indices(y, data.val_fraction, split_rng, class_names, examples.origin)
    where = data.path or f"data.source '{data.source}'"
    X_train, X_val, x_mean, x_std = standardized(
        *split_rows(examples.X, train, val), data.standardize, examples.feature_names, where
    )
    y_mean = y_std = None
    y_train, y_val = y[train], y[val]
    if task == "regression":
        y_train, y_val, y_mean, y_std = standardized(y_train, y_val, data.standardize, examples.target_names, where)
    return Dataset(
        X_train, y_train, X_val, y_val, task, examples.feature_names, examples.target_names, class_names,
        x_mean, x_std, y_mean, y_std,
    )
