"""Losses by name, targets in the form each loss takes, and the metrics reported for each task.

Regression runs train on standardized targets but report losses and R² in the data's original units: the meter
keeps its sums in training units and scales them back (or, for mae and huber, evaluates in original units).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from autobp.engine import no_grad
from autobp.engine.ops import logistic
from autobp.model.dataset import Dataset
from autobp.model.network import Network
from autobp.config.catalog import LOSSES, task_metric

EVAL_CHUNK = 4096  # evaluation batch size: bounds memory on large sets

def loss_targets(y: np.ndarray, loss: str, dtype: np.dtype) -> np.ndarray:
    """Targets as the loss takes them: integer labels (cross_entropy), a (n, 1) float column (bce), floats."""
    form = LOSSES[loss].targets
    if form == "labels":
        return y.astype(np.int64)
    if form == "column":
        return y.astype(dtype).reshape(-1, 1)
    return y.astype(dtype)


def predicted_classes(output: np.ndarray, loss: str) -> np.ndarray:
    """Class ids from network outputs: the arg-max logit, or logit > 0 for bce's single output."""
    if LOSSES[loss].outputs == "one":
        return (output[:, 0] > 0).astype(np.int64)
    return np.argmax(output, axis=1)


def class_probabilities(output: np.ndarray, loss: str) -> np.ndarray:
    """Per-class probabilities: softmax of the logits, or (1 − p, p) for bce."""
    if LOSSES[loss].outputs == "one":
        p = logistic(output[:, 0])
        return np.stack([1.0 - p, p], axis=1)
    shifted = np.exp(output - output.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def to_original_units(values: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Undo target standardization (identity when targets were not standardized)."""
    if dataset.y_mean is None:
        return values
    return values * dataset.y_std + dataset.y_mean


_SUMS = ("_loss_sum", "_count", "_correct", "_sse", "_y_sum", "_y_sq")


@dataclass
class Meter:
    """Accumulates one epoch's (or one evaluation's) loss and task metric over batches, weighted by batch size.

    Regression sums are kept in the units the network trains in and scaled to original units at the end:
    with targets standardized as y = (t − μ)/σ, a residual r in training units is rσ in original units.
    Batches are counted a few thousand rows at a time (correct predictions, regression sums: the same numbers either
    way, with a few numpy calls per chunk rather than per batch), so `add` keeps the arrays it is given until then:
    do not modify them.
    """

    task: str
    loss: str
    dataset: Dataset
    _loss_sum: float = 0.0
    _count: int = 0
    _correct: int = 0
    _sse: np.ndarray | float = 0.0
    _y_sum: np.ndarray | float = 0.0
    _y_sq: np.ndarray | float = 0.0
    _uncounted: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (outputs, targets) of batches
    _uncounted_rows: int = 0

    def add(self, output: np.ndarray, targets: np.ndarray, loss_value: float) -> None:
        """Count one batch: network outputs, the loss's targets, and the loss the network trained on."""
        n = len(output)
        self._count += n
        self._uncounted.append((output, targets))
        self._uncounted_rows += n
        if self._uncounted_rows >= EVAL_CHUNK:
            self._count_uncounted()
        if self.loss != "mse" and self.task != "classification" and self.dataset.y_std is not None:
            # mae and huber do not scale with σ like squares do: evaluate them in original units directly.
            loss_value = float(LOSSES[self.loss].engine.forward(to_original_units(output, self.dataset),
                                                         to_original_units(targets, self.dataset)))  # fmt: skip
        self._loss_sum += loss_value * n

    def _count_uncounted(self) -> None:
        """Count the batches added since the last count: correct predictions, or the regression sums."""
        if not self._uncounted:
            return
        if self.task == "classification":
            outputs = np.concatenate([output for output, _ in self._uncounted])
            labels = np.concatenate([targets.reshape(-1) for _, targets in self._uncounted])
            self._correct += int(np.count_nonzero(predicted_classes(outputs, self.loss) == labels))
        else:
            for outputs, targets in _stacked_runs(self._uncounted):
                self._add_sums(outputs, targets)
        self._uncounted, self._uncounted_rows = [], 0

    def _add_sums(self, outputs: np.ndarray, targets: np.ndarray) -> None:
        """Add batches of one shape, stacked as (batch, row, column): each batch's column sums of squared residuals,
        targets and squared targets, added to the totals one batch after the other. The stacked reductions give each
        batch's sums bit for bit as one reduction per batch would (tests/test_metrics.py holds numpy to it), and
        np.add.accumulate adds in order: the totals are those of adding batch by batch, at a few calls per chunk."""
        residual = outputs - targets
        self._sse = _added_in_order(self._sse, np.einsum("bij,bij->bj", residual, residual))
        self._y_sum = _added_in_order(self._y_sum, np.add.reduce(targets, 1))
        self._y_sq = _added_in_order(self._y_sq, np.einsum("bij,bij->bj", targets, targets))

    def state_dict(self) -> dict[str, np.ndarray]:
        """The sums so far, so that an epoch interrupted midway continues to the same metrics."""
        self._count_uncounted()
        return {name.lstrip("_"): np.asarray(getattr(self, name)) for name in _SUMS}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self._uncounted, self._uncounted_rows = [], 0
        for name in _SUMS:
            value = state[name.lstrip("_")]
            setattr(self, name, value.item() if value.ndim == 0 else value)

    def result(self) -> dict[str, float | None]:
        """{'loss': …, 'accuracy' or 'r2': …}; None when nothing was counted."""
        key = task_metric(self.task)
        if self._count == 0:
            return {"loss": None, key: None}
        self._count_uncounted()
        if self.task == "classification":
            return {"loss": self._loss_sum / self._count, key: self._correct / self._count}
        scale = 1.0 if self.dataset.y_std is None else self.dataset.y_std**2
        sse = self._sse * scale
        loss = float(np.sum(sse)) / (self._count * np.size(sse)) if self.loss == "mse" else self._loss_sum / self._count
        return {"loss": loss, key: self._r2(sse, scale)}

    def _r2(self, sse: np.ndarray, scale: np.ndarray | float) -> float | None:
        # R² per output, 1 − SSE/SST in original units, averaged over outputs (undefined for a constant target).
        sst = (self._y_sq - self._y_sum**2 / self._count) * scale
        if np.any(sst <= 0):
            return None
        return float(np.mean(1.0 - sse / sst))


def _stacked_runs(batches: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive (outputs, targets) batches of one shape, each run stacked into (batch, row, column) arrays."""
    runs, start = [], 0
    for end in range(1, len(batches) + 1):
        if end == len(batches) or batches[end][0].shape != batches[start][0].shape:
            outputs, targets = zip(*batches[start:end])
            runs.append((_stacked(outputs), _stacked(targets)))
            start = end
    return runs


def _stacked(arrays: tuple[np.ndarray, ...]) -> np.ndarray:
    """np.stack of arrays of one shape, without its Python work per array."""
    return np.concatenate(arrays).reshape(len(arrays), *arrays[0].shape)


def _added_in_order(total: np.ndarray | float, rows: np.ndarray) -> np.ndarray:
    """total + rows[0] + rows[1] + …, added left to right (np.add.accumulate along axis 0 adds in order)."""
    stacked = np.empty((len(rows) + 1, *rows.shape[1:]), np.result_type(total, rows))  # the dtype total + row has
    stacked[0] = total
    stacked[1:] = rows
    return np.add.accumulate(stacked, axis=0)[-1]


def evaluate(network: Network, meter: Meter, X: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Network outputs for X, in chunks and without recording a graph; with targets y, each chunk counts in `meter`."""
    outputs = []
    loss = LOSSES[meter.loss].engine
    with no_grad():
        for start in range(0, len(X), EVAL_CHUNK):
            output = network(X[start : start + EVAL_CHUNK]).data
            outputs.append(output)
            if y is not None:
                yb = y[start : start + EVAL_CHUNK]
                meter.add(output, yb, float(loss.forward(output, yb)))
    return np.concatenate(outputs) if outputs else np.empty((0, network.layers[-1].shape[1]))
