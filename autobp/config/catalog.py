"""The vocabulary of a config, one entry per name: every loss, activation, optimizer, schedule and metric, with
everything the rest of autobp asks about it.

The config's allowed values, the JSON Schema, the builder, the metrics, the optimizers, early stopping, sweeps and
reports all read these tables. Adding an activation or a loss is one entry here plus its engine rule (and tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Literal

from autobp.engine import Primitive, Tensor, binary_cross_entropy, cross_entropy, huber, mae, mse, ops

Task = Literal["classification", "regression"]


# --- data sources -----------------------------------------------------------------------------------------------
# Adding a source is one entry here plus its reader, registered under the same name in autobp.model.sources (which
# refuses a name missing here, and a test checks that every entry has a reader).


SourceKind = Literal["synthetic", "file"]


@dataclass(frozen=True)
class Source:
    """Where examples come from: generated from the seed or read from a file; the `data` keys it takes (those of no
    other source are refused), the defaults it fills in for omitted ones, and those it requires with what they are."""

    kind: SourceKind
    keys: tuple[str, ...]
    defaults: Mapping[str, int | float] = field(default_factory=dict)
    required: Mapping[str, str] = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        return self.kind == "synthetic"


def _synthetic(**defaults: int | float) -> Source:
    """A generated source: it takes exactly the keys it has defaults for."""
    return Source("synthetic", tuple(defaults), defaults)


SOURCES: dict[str, Source] = {
    "xor": _synthetic(n_samples=200, noise=0.1),
    "moons": _synthetic(n_samples=200, noise=0.1),
    "circles": _synthetic(n_samples=200, noise=0.05),
    "spirals": _synthetic(n_samples=1000, noise=0.05, n_classes=2),
    "blobs": _synthetic(n_samples=300, noise=1.0, n_classes=3, n_features=2),
    "sine": _synthetic(n_samples=200, noise=0.1),
    "linear": _synthetic(n_samples=200, noise=0.1, n_features=3, n_outputs=1),
    "csv": Source("file", ("path", "target", "features"), required={"path": "the CSV file"}),
    "npz": Source("file", ("path",), required={"path": "the npz file"}),
    "npy": Source(
        "file", ("path", "target_path"), required={"path": "the features file", "target_path": "the targets file"}
    ),
}
# Every source-specific `data` key, in the order problems with them are reported.
SOURCE_KEYS = tuple(dict.fromkeys(key for source in SOURCES.values() for key in source.keys))


@dataclass(frozen=True)
class Loss:
    """A loss: its fused engine primitive, the task it implies, and the form of its targets and outputs."""

    engine: Primitive
    task: Task
    targets: Literal["labels", "column", "values"]
    """labels: integer class ids; column: a (n, 1) float column of 0/1; values: float targets as given."""
    outputs: Literal["one_per_class", "one", "one_per_target"]
    """cross_entropy: one logit per class; bce: a single logit (positive class); regression: one per target."""


LOSSES: dict[str, Loss] = {
    "mse": Loss(mse, "regression", "values", "one_per_target"),
    "mae": Loss(mae, "regression", "values", "one_per_target"),
    "huber": Loss(huber, "regression", "values", "one_per_target"),
    "cross_entropy": Loss(cross_entropy, "classification", "labels", "one_per_class"),
    "bce": Loss(binary_cross_entropy, "classification", "column", "one"),
}


@dataclass(frozen=True)
class Activation:
    """An activation σ: its engine function (None for identity) and its family, which decides what the gradient log
    watches: `relu` units die (pre-activation ≤ 0), `squashing` units saturate (|pre-activation| large)."""

    engine: Callable[[Tensor], Tensor] | None
    family: Literal["relu", "squashing", "smooth", "linear"]


ACTIVATIONS: dict[str, Activation] = {
    "identity": Activation(None, "linear"),
    "sigmoid": Activation(ops.sigmoid, "squashing"),
    "tanh": Activation(ops.tanh, "squashing"),
    "relu": Activation(ops.relu, "relu"),
    "leaky_relu": Activation(ops.leaky_relu, "relu"),
    "elu": Activation(ops.elu, "relu"),
    "softplus": Activation(ops.softplus, "smooth"),
    "sin": Activation(ops.sin, "smooth"),
}


@dataclass(frozen=True)
class Optimizer:
    """An update rule and the `optimizer` keys it reads besides lr and weight_decay (autobp.training.optim runs it)."""

    reads: tuple[str, ...]


OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": Optimizer(()),
    "momentum": Optimizer(("momentum",)),
    "nesterov": Optimizer(("momentum",)),
    "rmsprop": Optimizer(("rho", "eps")),
    "adam": Optimizer(("beta1", "beta2", "eps")),
    "adamw": Optimizer(("beta1", "beta2", "eps")),
}

SCHEDULES = ("constant", "step", "exponential", "cosine")
INITS = ("xavier", "he", "lecun", "normal", "uniform")


@dataclass(frozen=True)
class Metric:
    """A per-epoch quantity of metrics.csv: which task reports it and which direction is better."""

    task: Task | None  # None: every task
    lower_is_better: bool


METRICS: dict[str, Metric] = {
    "loss": Metric(None, lower_is_better=True),
    "accuracy": Metric("classification", lower_is_better=False),
    "r2": Metric("regression", lower_is_better=False),
}
# Every column a run can be judged by: early stopping and sweeps monitor one of these.
MONITORS = tuple(f"{split}_{metric}" for metric in METRICS for split in ("val", "train"))
MONITOR_PREFIXES = ("best_", "train_", "val_")


def task_of_loss(loss: str) -> Task:
    """The task a loss implies: cross_entropy and bce classify, the others regress."""
    return LOSSES[loss].task


def task_metric(task: str) -> str:
    """The metric reported beside the loss: accuracy for classification, R² for regression."""
    return next(name for name, metric in METRICS.items() if metric.task == task)


def metric_of(column: str) -> str:
    """The metric a column such as `val_accuracy` or `best_train_loss` measures: `accuracy`, `loss`."""
    for prefix in MONITOR_PREFIXES:
        column = column.removeprefix(prefix)
    return column


def lower_is_better(column: str) -> bool:
    """The one rule of direction: losses are minimised, accuracy and R² maximised (unknown columns: minimised)."""
    metric = METRICS.get(metric_of(column))
    return True if metric is None else metric.lower_is_better


def monitor_task(monitor: str) -> Task | None:
    """The task a monitored column needs (None: any task)."""
    return METRICS[metric_of(monitor)].task

