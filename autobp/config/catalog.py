"""The vocabulary of a config, one entry per name: every data source, loss, activation, initialisation, optimizer,
schedule and metric, with everything the rest of autobp asks about it.

The config's allowed values, the JSON Schema, the builder, the metrics, the optimizers, early stopping, sweeps,
reports, the ONNX export and the graph view all read these tables. Adding an activation is one entry here plus its
engine function; the entry's name is allowed in a config from then on (tests/test_catalog.py registers one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

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
    derivative: str
    """∂L/∂prediction as the graph view writes it on the edge into the loss."""


LOSSES: dict[str, Loss] = {
    "mse": Loss(mse, "regression", "values", "one_per_target", "2(ŷ − y) / n"),
    "mae": Loss(mae, "regression", "values", "one_per_target", "sign(ŷ − y) / n"),
    "huber": Loss(huber, "regression", "values", "one_per_target", "clip(ŷ − y, ±1) / n"),
    "cross_entropy": Loss(cross_entropy, "classification", "labels", "one_per_class", "(softmax − onehot(y))/n"),
    "bce": Loss(binary_cross_entropy, "classification", "column", "one", "(σ(z) − y) / n"),
}


@dataclass(frozen=True)
class OnnxOp:
    """An ONNX operator (opset 17) and its attributes: what the ONNX export writes for an activation."""

    kind: str
    attributes: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Activation:
    """An activation σ: its engine function (None for identity; any function of engine operations), its family,
    which decides what the gradient log watches (`relu` units die: pre-activation ≤ 0; `squashing` units saturate:
    |pre-activation| large), σ′ as the graph view writes it, and its ONNX operator (None: no node, or no export)."""

    engine: Callable[[Tensor], Tensor] | None
    family: Literal["relu", "squashing", "smooth", "linear"]
    derivative: str
    onnx: OnnxOp | None = None


# The constants (leaky_relu's slope, elu's α) belong to the engine's primitives; these entries only refer to them.
ACTIVATIONS: dict[str, Activation] = {
    "identity": Activation(None, "linear", "1"),
    "sigmoid": Activation(ops.sigmoid, "squashing", "σ′(z) = σ(1 − σ)", OnnxOp("Sigmoid")),
    "tanh": Activation(ops.tanh, "squashing", "1 − tanh²(z)", OnnxOp("Tanh")),
    "relu": Activation(ops.relu, "relu", "1[z > 0]", OnnxOp("Relu")),
    "leaky_relu": Activation(ops.leaky_relu, "relu", f"1 or {ops.LEAKY_SLOPE:g}",
                             OnnxOp("LeakyRelu", {"alpha": ops.LEAKY_SLOPE})),
    "elu": Activation(ops.elu, "relu", f"1 or {ops.ELU_ALPHA:g}·eᶻ", OnnxOp("Elu", {"alpha": ops.ELU_ALPHA})),
    "softplus": Activation(ops.softplus, "smooth", "σ(z)", OnnxOp("Softplus")),
    "sin": Activation(ops.sin, "smooth", "cos z", OnnxOp("Sin")),
}  # fmt: skip


@dataclass(frozen=True)
class Init:
    """A weight initialisation: the distribution drawn and its spread from the layer's fan_in, fan_out and
    model.init_scale: the half-width a of a uniform draw on ±a, the standard deviation of a normal one."""

    distribution: Literal["uniform", "normal"]
    spread: Callable[[int, int, float], float]

    def draw(self, fan_in: int, fan_out: int, scale: float, rng: np.random.Generator) -> np.ndarray:
        """A (fan_in, fan_out) weight matrix."""
        spread, shape = self.spread(fan_in, fan_out, scale), (fan_in, fan_out)
        if self.distribution == "uniform":
            return rng.uniform(-spread, spread, shape)
        return rng.standard_normal(shape) * spread

    def std(self, fan_in: int, fan_out: int, scale: float) -> float:
        """The standard deviation of the weights drawn (a/√3 for a uniform draw on ±a)."""
        spread = float(self.spread(fan_in, fan_out, scale))
        return spread / math.sqrt(3.0) if self.distribution == "uniform" else spread


INITS: dict[str, Init] = {
    "xavier": Init("uniform", lambda fan_in, fan_out, scale: np.sqrt(6.0 / (fan_in + fan_out))),  # Glorot
    "he": Init("normal", lambda fan_in, fan_out, scale: np.sqrt(2.0 / fan_in)),
    "lecun": Init("normal", lambda fan_in, fan_out, scale: np.sqrt(1.0 / fan_in)),
    "normal": Init("normal", lambda fan_in, fan_out, scale: scale),
    "uniform": Init("uniform", lambda fan_in, fan_out, scale: scale),
}


@dataclass(frozen=True)
class Optimizer:
    """An update rule and the `optimizer` keys it reads besides lr and weight_decay (autobp.training.optim runs it;
    the keys' defaults are the config model's, autobp.config.models.OptimizerConfig)."""

    reads: tuple[str, ...]


OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": Optimizer(()),
    "momentum": Optimizer(("momentum",)),
    "nesterov": Optimizer(("momentum",)),
    "rmsprop": Optimizer(("rho", "eps")),
    "adam": Optimizer(("beta1", "beta2", "eps")),
    "adamw": Optimizer(("beta1", "beta2", "eps")),
}


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule: the `optimizer.schedule` keys it reads besides `name` (their defaults are its config
    model's in autobp.config.models) and its rate, lr(optimizer.lr, 0-based epoch, training.epochs, **those keys)."""

    reads: tuple[str, ...]
    rate: Callable[..., float]


def _constant(lr: float, epoch: int, epochs: int) -> float:
    return lr


def _step(lr: float, epoch: int, epochs: int, step_size: int, gamma: float) -> float:
    return lr * gamma ** (epoch // step_size)


def _exponential(lr: float, epoch: int, epochs: int, gamma: float) -> float:
    return lr * gamma**epoch


def _cosine(lr: float, epoch: int, epochs: int, min_lr: float, t_max: int | None) -> float:
    t_max = t_max if t_max is not None else epochs
    progress = min(epoch, t_max) / t_max
    return min_lr + (lr - min_lr) * (1.0 + math.cos(math.pi * progress)) / 2.0


SCHEDULES: dict[str, Schedule] = {
    "constant": Schedule((), _constant),
    "step": Schedule(("step_size", "gamma"), _step),
    "exponential": Schedule(("gamma",), _exponential),
    "cosine": Schedule(("min_lr", "t_max"), _cosine),
}


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

