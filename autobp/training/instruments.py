"""Training instruments: what the gradients say about the batch size, the learning rate and the curvature.

At instrumented steps, per layer and for the whole network (`total`): ‖g‖², Σ_n ‖g_n‖², the trace S of the
per-example gradient covariance, the gradient noise scale S/‖g‖² (McCandlish et al. 2018) raw and smoothed, Byrd et
al.'s norm test; on `total` also Bollapragada et al.'s inner-product and orthogonality tests, Cockpit's step quality
α and, at curvature steps, the Hessian's dominant eigenvalue λ_max by power iteration on Hessian-vector products.

Definitions follow Cockpit 1.0.2 (on BackPACK 1.7.1) for a mean-reduced loss L = (1/B) Σ_n ℓ_n, with g_n = ∇ℓ_n and
g = ∇L = mean of g_n. For a dense layer z = xW + b the backward pass already holds x_n and ∂L/∂z_n = δ_n / B with
δ_n = ∂ℓ_n/∂z_n, and the example's gradient is (x_nᵀδ_n, δ_n): ‖g_n‖² = (‖x_n‖² + 1)‖δ_n‖² and
⟨g_n, v⟩ = x_n V_W δ_nᵀ + δ_n·v_b for any direction v, so no per-example gradient is ever built.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from autobp.common.files import CsvLog
from autobp.engine.functional import hvp as hessian_vector_product
from autobp.model.network import Network, Trace, network_loss
from autobp.rundir.instruments import TOTAL
from autobp.config.models import InstrumentsConfig
from autobp.training.gradstats import log_interval

EMA_DECAY = 0.99  # per instrumented step, for the smoothed noise scale's averages of S and of |G|²
ZERO_VARIANCE = 1e-10  # Cockpit's stand-in for a zero variance in α's quadratic fit
POWER_TOLERANCE = 1e-12  # power iteration stops early once λ changes by less than this, relatively
Hvp = Callable[[list[np.ndarray]], list[np.ndarray]]  # v ↦ H v over the parameters (weight, bias per layer)


def example_sq_norms(x: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """‖g_n‖² of one dense layer's weights and bias for each example, from its inputs x and ∂L/∂z (= δ/B)."""
    scale = float(len(x)) ** 2
    return (np.einsum("ij,ij->i", x, x) + 1.0) * np.einsum("ij,ij->i", dz, dz) * scale


def example_projections(x: np.ndarray, dz: np.ndarray, v_weight: np.ndarray, v_bias: np.ndarray) -> np.ndarray:
    """⟨g_n, v⟩ over one dense layer's weights and bias for each example (v a direction in its parameters)."""
    return np.einsum("ij,ij->i", x @ v_weight + v_bias, dz) * float(len(x))


def batch_hvp(network: Network, xb: np.ndarray, yb: np.ndarray, loss: str) -> Hvp:
    """v ↦ H v for the Hessian of the batch loss at the network's current parameters (forward over reverse; the
    network without dropout)."""
    loss_of = network_loss(network, xb, yb, loss)
    params = [p.data for p in network.parameters()]
    return lambda v: hessian_vector_product(loss_of, params, v)


def largest_eigenvalue(hvp: Hvp, start: list[np.ndarray], iterations: int) -> tuple[float, list[np.ndarray]]:
    """The Hessian's largest eigenvalue and its unit eigenvector: power iteration from `start` finds the eigenvalue
    of largest magnitude; when that is negative, a second power iteration on H − λI finds the largest one."""
    value, vector = dominant_eigenvalue(hvp, start, iterations)
    if not value < 0:
        return value, vector

    def shifted(v: list[np.ndarray]) -> list[np.ndarray]:
        return [hv - value * x for hv, x in zip(hvp(v), v)]

    excess, vector = dominant_eigenvalue(shifted, start, iterations)
    return value + excess, vector


def dominant_eigenvalue(hvp: Hvp, start: list[np.ndarray], iterations: int) -> tuple[float, list[np.ndarray]]:
    """The eigenvalue of largest magnitude and its unit eigenvector, by power iteration from `start`."""
    v = _normalized(start)
    value = math.nan
    for _ in range(iterations):
        hv = hvp(v)
        previous, value = value, _dot(v, hv)  # the Rayleigh quotient of the unit vector v
        if not math.isfinite(value) or _dot(hv, hv) == 0.0:
            break
        v = _normalized(hv)
        if abs(value - previous) <= POWER_TOLERANCE * abs(value):
            break
    return value, v


def _dot(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    return float(sum(np.vdot(x, y) for x, y in zip(a, b)))


def _normalized(v: Sequence[np.ndarray]) -> list[np.ndarray]:
    length = math.sqrt(_dot(v, v))
    return [x / length for x in v]


def step_quality(t: float, f: tuple[float, float], df: tuple[float, float], var_f: tuple[float, float],
                 var_df: tuple[float, float]) -> float | None:  # fmt: skip
    """Cockpit's α: fit a quadratic along the step of length t to the losses f and slopes df at its two ends,
    weighted by their variances; −1 is no progress, 0 the step to the fit's minimum, 1 its other side."""
    if t == 0.0:
        return -1.0
    phi = np.array([[1.0, 0.0, 0.0], [1.0, t, t * t], [0.0, 1.0, 0.0], [0.0, 1.0, 2.0 * t]]).T
    weights = np.diag([1.0 / (v if v != 0.0 else ZERO_VARIANCE) for v in (*var_f, *var_df)])
    try:
        mu = np.linalg.solve(phi @ weights @ phi.T, phi @ weights @ np.array([*f, *df]))
    except np.linalg.LinAlgError:
        return None
    if mu[2] < 0.0:
        return -1.0  # concave: still going downhill where the step ended
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = 2.0 * t / (-mu[1] / mu[2]) - 1.0
    return float(alpha) if math.isfinite(alpha) else None


def _along(projections: np.ndarray, length: float) -> np.ndarray:
    """Directional derivatives ⟨g_n, d⟩/‖d‖ from the projections on d (their mean is the batch's, as Cockpit's
    optimized α takes it); a step of length 0 has slopes 0."""
    return projections / length if length > 0 else projections * 0.0


def _variance(values: np.ndarray) -> float | None:
    """The sample variance (divided by n − 1), as np.var(ddof=1) computes it at a fraction of its call cost."""
    n = len(values)
    if n < 2:
        return None
    centred = values - float(values.sum()) / n
    return float(centred @ centred) / (n - 1)


@dataclass
class _Start:
    """The start of a step whose α waits for the next batch: the step, its update d and what was seen there."""

    step: int
    direction: list[np.ndarray]
    length: float
    loss: float
    loss_var: float | None
    slope: float
    slope_var: float | None


@dataclass
class _Seen:
    """What a step's backward pass left for the instruments, kept until its update is known."""

    step: int
    layers: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # per layer: x, ∂L/∂z, raw ∂L/∂W, ∂L/∂b
    losses: np.ndarray
    loss: float
    rows: list[list] | None  # the step's rows, if it is instrumented
    ends: _Start | None  # the step whose α this batch completes


class Instruments:
    """Computes the instruments at their steps and appends them to instruments.csv."""

    def __init__(self, network: Network, config: InstrumentsConfig, log_every: int | str, total_steps: int,
                 loss: str) -> None:  # fmt: skip
        self.network = network
        self.config = config
        self.loss = loss
        self.log: CsvLog | None = None  # instruments.csv, opened when training starts
        self.interval = log_interval(log_every if config.every == "auto" else config.every, total_steps)
        self.blocks = [layer.name for layer in network.layers] + [TOTAL]
        self.ema = [[0.0, 0.0] for _ in self.blocks]  # per block: EMA of S and of the unbiased |G|² estimate
        self.pending: list[list] = []  # the last instrumented step's rows, until α is known
        self.start: _Start | None = None
        self.eigenvector: list[np.ndarray] | None = None
        self._rows: list[list] = []
        self._seen: _Seen | None = None

    def wants(self, step: int) -> bool:
        """Whether `step` is instrumented: step 1, every `interval`-th step, and every curvature step."""
        return step == 1 or step % self.interval == 0 or self.curvature_step(step)

    def curvature_step(self, step: int) -> bool:
        every = self.config.curvature_every
        return every is not None and step % every == 0

    def observes(self, step: int) -> bool:
        """Whether `step` needs the backward pass's ∂L/∂z: instrumented, or the end of a step whose α waits."""
        return self.wants(step) or (self.start is not None and self.start.step == step - 1)

    def before_update(self, step: int, epoch: int, xb: np.ndarray, yb: np.ndarray, trace: Trace, losses: np.ndarray,
                      loss: float, lr: float) -> None:  # fmt: skip
        """Take the step's gradients (raw: before clipping and weight decay) and, if it is instrumented, measure
        what needs no projection (`losses` are the per-example losses ℓ_n, `loss` their mean); the curvature too,
        at the parameters before the update."""
        inputs = [xb, *(f.data for f in trace.outputs[:-1])]
        layers = [(x, z.grad, layer.weight.grad, layer.bias.grad)
                  for x, z, layer in zip(inputs, trace.pre_activations, self.network.layers)]  # fmt: skip
        ends = self.start if self.start is not None and self.start.step == step - 1 else None
        rows = self._first_order(step, epoch, layers) if self.wants(step) else None
        if rows is not None and self.curvature_step(step):
            lambda_max = self._curvature(batch_hvp(self.network, xb, yb, self.loss))
            rows[-1][-2:] = [lambda_max, lr * lambda_max]
        self._seen = _Seen(step, layers, losses, loss, rows, ends)

    def _first_order(self, step: int, epoch: int, layers: list[tuple[np.ndarray, ...]]) -> list[list]:
        """Every block's row of this step (the tests of `total`, α and curvature still empty)."""
        batch = len(layers[0][0])
        rows = []
        sums = [0.0, 0.0]
        for index, (x, dz, gw, gb) in enumerate(layers):
            grad_sq = float(np.vdot(gw, gw)) + float(np.vdot(gb, gb))
            sum_sq = float(example_sq_norms(x, dz).sum())
            sums[0] += grad_sq
            sums[1] += sum_sq
            rows.append(self._row(step, epoch, index, batch, grad_sq, sum_sq))
        return [*rows, self._row(step, epoch, len(layers), batch, *sums)]

    def _row(self, step: int, epoch: int, block: int, batch: int, grad_sq: float, sum_sq: float) -> list:
        """A block's row with the columns every block has (the `total` ones empty)."""
        cov = noise = smoothed = norm_test = None
        if batch > 1:
            cov = (sum_sq - batch * grad_sq) / (batch - 1)
            noise = cov / grad_sq if grad_sq > 0 else None
            norm_test = math.sqrt(max(cov, 0.0) / (batch * grad_sq)) if grad_sq > 0 else None
            ema = self.ema[block]
            ema[0] = EMA_DECAY * ema[0] + (1.0 - EMA_DECAY) * cov
            ema[1] = EMA_DECAY * ema[1] + (1.0 - EMA_DECAY) * (grad_sq - cov / batch)
            # Both averages start at 0 with the same decay, so their ratio needs no bias correction.
            smoothed = ema[0] / ema[1] if ema[1] > 0 else None
        name = self.blocks[block]
        return [step, epoch, name, grad_sq, sum_sq, cov, noise, smoothed, norm_test, None, None, None, None, None]

    def after_update(self, step: int, updates: list[np.ndarray] | None) -> None:
        """With the update just applied (the actual one: clipped, decayed, with momentum), project every example's
        gradient, in one product per layer, on what this step needs: the batch gradient (the tests of `total`), the
        previous step's update (its α ends here) and this step's (its α starts here)."""
        seen, self._seen = self._seen, None
        if seen is None or seen.step != step:
            return
        gradient = [g for x, dz, gw, gb in seen.layers for g in (gw, gb)]
        direction = [u.copy() for u in updates] if seen.rows is not None and updates is not None else None
        wanted = [*([gradient] if seen.rows is not None else []), *([seen.ends.direction] if seen.ends else []),
                  *([direction] if direction is not None else [])]  # fmt: skip
        projections = iter(self._projections(seen.layers, wanted).T)
        if seen.rows is not None:
            on_gradient = next(projections)
            grad_sq, sum_sq = seen.rows[-1][3:5]
            seen.rows[-1][9:11] = _bollapragada(len(on_gradient), grad_sq, sum_sq, float(on_gradient @ on_gradient))
        if seen.ends is not None:
            self._finish_alpha(seen.ends, next(projections), seen.losses, seen.loss)
        if seen.rows is not None:
            self._rows += self.pending  # (rows whose α could not be completed, if any, go out without it)
            self.pending = seen.rows
        if direction is not None:
            length = math.sqrt(_dot(direction, direction))
            slopes = _along(next(projections), length)
            self.start = _Start(step, direction, length, seen.loss, _variance(seen.losses), float(slopes.mean()),
                                _variance(slopes))  # fmt: skip

    @staticmethod
    def _projections(layers: list[tuple[np.ndarray, ...]], directions: list[list[np.ndarray]]) -> np.ndarray:
        """(B, len(directions)): ⟨g_n, v⟩ for each example n and direction v (parameter-shaped arrays, W and b
        per layer), one matrix product per layer for all the directions."""
        total = np.zeros((len(layers[0][0]), len(directions)))
        for index, (x, dz, _, _) in enumerate(layers):
            weights = [v[2 * index] for v in directions]
            biases = [v[2 * index + 1] for v in directions]
            if len(directions) == 1:
                total[:, 0] += example_projections(x, dz, weights[0], biases[0])
                continue
            outputs = x @ np.concatenate(weights, axis=1) + np.concatenate(biases)
            total += np.einsum("nko,no->nk", outputs.reshape(len(x), len(directions), -1), dz) * float(len(x))
        return total

    def _finish_alpha(self, start: _Start, projections: np.ndarray, losses: np.ndarray, loss: float) -> None:
        """α of the step `start` describes, now that this batch gives the loss and slopes where its update ended."""
        self.start = None
        alpha = None
        if start.loss_var is not None and start.slope_var is not None and len(losses) > 1:
            slopes = _along(projections, start.length)
            alpha = step_quality(start.length, (start.loss, loss), (start.slope, float(slopes.mean())),
                                 (start.loss_var, _variance(losses)), (start.slope_var, _variance(slopes)))  # fmt: skip
        if self.pending and self.pending[-1][0] == start.step:
            self.pending[-1][11] = alpha
            self._rows += self.pending
            self.pending = []

    def _curvature(self, hvp: Hvp) -> float:
        start = self.eigenvector
        if start is None:
            rng = np.random.default_rng(0)  # a fixed start: the same run gives the same numbers
            start = [rng.standard_normal(p.data.shape) for p in self.network.parameters()]
        value, self.eigenvector = largest_eigenvalue(hvp, start, self.config.power_iterations)
        return value

    def flush(self) -> None:
        """Write the finished rows."""
        if self._rows:
            self.log.write(self._rows)
            self._rows = []
        self.log.flush()

    def finish(self) -> None:
        """Write every row, those still waiting for α with it empty (the run ends, or is cut short, here; they stay
        pending in the checkpoint so that a resumed run writes them again with α)."""
        self.log.write([*self._rows, *self.pending])
        self._rows = []
        self.log.flush()

    @property
    def resume_step(self) -> int | None:
        """The step whose rows the checkpoint holds as pending (a resumed run writes them again), or None."""
        return self.pending[0][0] if self.pending else None

    # --- checkpoint ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"instruments.ema": np.array(self.ema), "instruments.pending": np.array(json.dumps(self.pending))}
        if self.start is not None:
            s = self.start
            numbers = [s.step, s.length, s.loss, _nan(s.loss_var), s.slope, _nan(s.slope_var)]
            state["instruments.start"] = np.array(numbers, dtype=float)
            state |= {f"instruments.direction.{i}": d for i, d in enumerate(s.direction)}
        if self.eigenvector is not None:
            state |= {f"instruments.eigenvector.{i}": v for i, v in enumerate(self.eigenvector)}
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.ema = [[float(s), float(g)] for s, g in state["instruments.ema"]]
        self.pending = json.loads(str(state["instruments.pending"]))
        count = 2 * len(self.network.layers)
        if "instruments.start" in state:
            step, length, loss, loss_var, slope, slope_var = (float(v) for v in state["instruments.start"])
            direction = [state[f"instruments.direction.{i}"] for i in range(count)]
            self.start = _Start(int(step), direction, length, loss, _none(loss_var), slope, _none(slope_var))
        if "instruments.eigenvector.0" in state:
            self.eigenvector = [state[f"instruments.eigenvector.{i}"] for i in range(count)]


def _bollapragada(batch: int, grad_sq: float, sum_sq: float, projections_sq: float) -> list[float | None]:
    """[inner-product test, orthogonality test] from ‖g‖², Σ‖g_n‖² and Σ⟨g_n, g⟩², as Cockpit computes them."""
    if batch < 2 or grad_sq <= 0:
        return [None, None]
    inner_var = (projections_sq - batch * grad_sq * grad_sq) / (batch - 1)
    ortho_var = (sum_sq - projections_sq / grad_sq) / (batch - 1)
    return [math.sqrt(max(inner_var, 0.0) / (batch * grad_sq * grad_sq)),
            math.sqrt(max(ortho_var, 0.0) / (batch * grad_sq))]  # fmt: skip


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _none(value: float) -> float | None:
    return None if math.isnan(value) else value
