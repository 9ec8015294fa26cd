"""Per-layer gradient statistics: what the backpropagated signal and the parameter gradients do over training.

For layer i at a logged step: the norms of ∂L/∂W_i and ∂L/∂b_i (raw gradients of the mean batch loss, before
clipping and weight decay), ‖W_i‖ after the update, the update ratio ‖ΔW_i‖/‖W_i‖ (W before the update), the
signal ‖∂L/∂f_i‖ reaching the layer's output, the mean and standard deviation of ∂L/∂W_i, and the fraction of
units that are dead (ReLU family: pre-activation ≤ 0 for the whole batch) or saturated (tanh and sigmoid:
|pre-activation| > 3 for the whole batch).
"""

from __future__ import annotations

import math

import numpy as np

from autobp.common.files import CsvLog
from autobp.health.thresholds import SATURATION
from autobp.model.network import Network, Trace
from autobp.config.catalog import ACTIVATIONS

TARGET_LOGGED_STEPS = 2_000
KEPT_ROWS = 50_000  # rows kept as values (≈ 18 MB) for the end-of-run judgement; a longer log is read back


def log_interval(log_every: int | str, total_steps: int) -> int:
    """Every how many steps to log: `auto` logs every step up to 2,000 steps, else about 2,000 spaced steps."""
    if log_every != "auto":
        return int(log_every)
    return max(1, math.ceil(total_steps / TARGET_LOGGED_STEPS))


def norm(a: np.ndarray) -> float:
    """Frobenius norm of any array."""
    return math.sqrt(float(np.vdot(a, a)))  # one BLAS dot product: the cheapest full pass over an array of any shape


_ONES: dict[tuple[int, np.dtype], np.ndarray] = {}


def total(a: np.ndarray) -> float:
    """Sum of all entries as one BLAS dot product with a cached vector of ones: about twice as fast as np.sum's
    pairwise summation, and the trainer sums every gradient at every step (its finiteness check)."""
    key = (a.size, a.dtype)
    ones = _ONES.get(key)
    if ones is None:
        ones = _ONES[key] = np.ones(a.size, dtype=a.dtype)
    return float(np.dot(a.reshape(-1), ones))


def mean_and_std(entry_sum: float, squares: float, n: int, values: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of `values` from their sum and sum of squares (already computed for the norm).

    E[g²] − E[g]² loses precision only when the mean dwarfs the spread; then the two-pass formula is used.
    """
    mean = entry_sum / n
    variance = squares / n - mean * mean
    if variance <= 1e-8 * mean * mean:
        return mean, float(np.std(values))
    return mean, math.sqrt(variance)


def inactive_fraction(activation: str, z: np.ndarray) -> tuple[float | None, float | None]:
    """(dead fraction, saturated fraction) of a layer's units over a batch of pre-activations z; None where n/a."""
    return _inactive(ACTIVATIONS[activation].family, z)


def _inactive(family: str, z: np.ndarray) -> tuple[float | None, float | None]:
    # Columns whose every entry passes the test, by np.logical_and.reduce over the batch (np.all(…, axis=0) without
    # its Python layers): a NaN passes neither test, so a unit with one is neither dead nor saturated.
    if family == "relu":
        return np.count_nonzero(np.logical_and.reduce(z <= 0.0, 0)) / z.shape[1], None
    if family == "squashing":
        return None, np.count_nonzero(np.logical_and.reduce(np.abs(z) > SATURATION, 0)) / z.shape[1]
    return None, None


class GradientLog:
    """Collects per-layer statistics at logged steps and appends them to gradients.csv (rows in the order of
    `rundir.logs.GRADIENT_COLUMNS`)."""

    def __init__(self, network: Network, log: CsvLog, interval: int, keep: bool = False) -> None:
        self.network = network
        self.log = log
        self.interval = interval
        self._pending: list[list] = []
        # With `keep`, every row written, as values, so that the end of the run need not read the file back.
        self.written: list[list] | None = [] if keep else None
        # (step, ‖W_i‖ after its update): the weights the next step starts from, if that step is logged too.
        self._weight_norms: tuple[int, list[float]] = (-1, [])
        self._families = [ACTIVATIONS[layer.activation].family for layer in network.layers]

    def wants(self, step: int, last: bool) -> bool:
        """Log step 1, every `interval`-th step, and any step that may be the run's last."""
        return step == 1 or step % self.interval == 0 or last

    def before_update(self, step: int, trace: Trace, weight_grad_sums: list[float]) -> list[list]:
        """Statistics that need the gradients and the weights as they were before the optimizer step (the sums of
        each ∂L/∂W_i's entries come from the trainer's finiteness check)."""
        rows = []
        layers = self.network.layers
        logged, after = self._weight_norms
        weight_norms = after if logged == step - 1 else [norm(layer.weight.data) for layer in layers]
        for layer, z, f, weight_norm, grad_sum, family in zip(layers, trace.pre_activations, trace.outputs, weight_norms,
                                                              weight_grad_sums, self._families):  # fmt: skip
            gw, gb, gf = layer.weight.grad, layer.bias.grad, f.grad
            squares = float(np.vdot(gw, gw))  # ‖∂L/∂W‖², which the standard deviation needs too
            mean, std = mean_and_std(grad_sum, squares, gw.size, gw)
            out_grad = None if gf is None else norm(gf)  # None: output not retained (an unplanned log)
            dead, saturated = _inactive(family, z.data)
            rows.append([layer.name, math.sqrt(squares), norm(gb), weight_norm, out_grad, mean, std, dead, saturated])
        return rows

    def after_update(self, step: int, epoch: int, before: list[list], updates: list[np.ndarray] | None) -> None:
        """Complete the rows with the update ratio (empty without `updates`) and the new weight norm; buffer them."""
        new_norms = [norm(layer.weight.data) for layer in self.network.layers]
        self._weight_norms = (step, new_norms)
        deltas = [None] * len(before) if updates is None else updates[0::2]
        pending = self._pending
        for row, new_norm, delta in zip(before, new_norms, deltas):
            name, grad_w, grad_b, old_norm, out_grad, mean, std, dead, saturated = row
            ratio = None if delta is None else _ratio(norm(delta), old_norm)
            pending.append([step, epoch, name, grad_w, grad_b, new_norm, ratio, out_grad, mean, std, dead, saturated])

    def flush(self) -> None:
        """Write the buffered rows and flush the file."""
        if self._pending:
            self.log.write(self._pending)
            if self.written is not None:
                self.written += self._pending
                if len(self.written) > KEPT_ROWS:
                    self.written = None
            self._pending = []
        self.log.flush()


def _ratio(update: float, weight: float) -> float:
    return update / weight if weight > 0 else math.inf
