"""Checking backpropagation on the user's own network, and showing why it runs in reverse mode.

The loss on a batch is written as a function of the parameters L(W0, b0, W1, b1, …). Its reverse-mode gradient
(one backward pass) is compared, array by array, with

 - central differences (L(θ + εeⱼ) − L(θ − εeⱼ)) / 2ε, which use nothing but forward evaluations, and
 - forward mode: for random directions v, the directional derivative J·v from one JVP pass against ⟨∇L, v⟩.

Forward and reverse mode apply the same local derivative of each primitive (tanh' = 1 − tanh², …), so their
agreement checks how the chain rule is wired; only central differences also check the local derivatives.
Forward mode needs one pass per parameter for the whole gradient, reverse mode one pass: both are timed.

At the second order (`--order 2`), Hessian-vector products H·v by forward over reverse (`hvp`: the VJPs run as
engine operations that carry v's tangents) are compared, array by array, with central differences of gradients
(∇L(θ + εv) − ∇L(θ − εv)) / 2ε along random directions v; the cost of one H·v is timed against those two gradients.
"""

from __future__ import annotations

import math
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from autobp.engine import Tensor, grad, hvp, jvp, numerical_gradient, relative_error
from autobp.model.network import Layer, LossOfParameters, build_network, network_loss
from autobp.model.prepare import prepare
from autobp.training.metrics import loss_targets
from autobp.training.progress import WorkProgress
from autobp.training.state import INIT_STREAM

TOLERANCE = 1e-6
# Errors are relative to the gradient's size, but never to less than this: a gradient that is exactly zero is
# compared with central differences holding rounding noise (≈ 1e-16·|L|/ε), which would otherwise be a 100% error.
# So differences below TOLERANCE × SCALE_FLOOR = 1e-11 always pass.
SCALE_FLOOR = 1e-5
BATCH_ROWS = 16
DIRECTIONS = 3
# Central differences err by O(ε²) from curvature and by O(ulp(L)/ε) from rounding. ε = 1e-6 suits most arrays;
# a vanishing gradient (deep sigmoid stacks) drowns in rounding there and needs a larger ε, a ReLU kink within ε
# of a pre-activation a smaller one. The steps are tried in order until one agrees within the tolerance.
FD_STEPS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-7)
FD_MAX_ENTRIES = 2_000  # per parameter array; larger arrays are checked on a seeded sample of entries
FORWARD_MAX_PASSES = 20_000  # beyond this many parameters, forward mode's whole gradient is timed on a sample
FORWARD_SAMPLE = 2_000
REVERSE_REPEATS = 5
TIMING_CHUNK = 100  # forward-mode passes timed between two progress updates (kept out of the timed span)
# Central differences of gradients err by O(ε²) and O(ulp(∇L)/ε): best near ε = 1e-5; the others are retries.
HVP_STEPS = (1e-5, 1e-4, 1e-6, 1e-3)

@dataclass
class ArrayCheck:
    """One parameter array: reverse mode against central differences and against forward mode."""

    name: str  # e.g. layer0.weight
    size: int
    checked: int  # entries compared with central differences
    fd_error: float
    fd_step: float
    jvp_error: float


@dataclass
class Timing:
    """The whole gradient both ways: P forward-mode passes (or a timed sample of them) against one reverse pass."""

    parameters: int
    forward_passes: int
    forward_seconds: float  # for all P passes; extrapolated from the timed ones when sampled
    reverse_seconds: float
    forward_error: float  # the forward-mode gradient entries against reverse mode

    @property
    def sampled(self) -> bool:
        return self.forward_passes < self.parameters


@dataclass
class GradcheckReport:
    """Everything `autobp gradcheck` found for one network."""

    name: str
    layers: list[Layer]
    rows: int
    arrays: list[ArrayCheck]
    timing: Timing

    @property
    def failures(self) -> list[ArrayCheck]:
        # Written as "not below" so that a NaN error counts as a failure.
        return [a for a in self.arrays if not (a.fd_error < TOLERANCE and a.jvp_error < TOLERANCE)]

    @property
    def ok(self) -> bool:
        return not self.failures and self.timing.forward_error < TOLERANCE

    def format(self) -> str:
        """The report printed by the command: errors per layer, the timing, the verdict."""
        return "\n".join([*self._error_table(), "", *self._timing_lines(), "", *self._verdict()])

    def _error_table(self) -> list[str]:
        lines = [
            f"gradcheck {self.name}: {len(self.layers)} layers, {self.timing.parameters:,} parameters, float64, "
            f"a batch of {self.rows} training rows",
            "largest relative error of reverse mode (backpropagation) against",
            f"{'':<30}{'central differences':<24}forward mode ({DIRECTIONS} random directions)",
            f"{'layer':<8}{'shape':<10}{'activation':<12}{'weight':<12}{'bias':<12}{'weight':<12}bias",
        ]
        lines += _layer_rows(self.layers, self.arrays, self.failures,
                             lambda w, b: (w.fd_error, b.fd_error, w.jvp_error, b.jvp_error))  # fmt: skip
        for step in FD_STEPS[1:]:
            names = [a.name for a in self.arrays if a.fd_step == step and a.fd_error < TOLERANCE]
            if names:
                lines.append(_wrapped(f"central differences needed the step ε={step:.0e} for", names))
        sampled = [f"{a.name} ({a.checked:,} of {a.size:,})" for a in self.arrays if a.checked < a.size]
        if sampled:
            lines.append(_wrapped("central differences checked a seeded sample of the entries of", sampled))
        return lines

    def _timing_lines(self) -> list[str]:
        t = self.timing
        count = f"{t.parameters:,}"
        extrapolated = f", extrapolated from {t.forward_passes:,} timed passes" if t.sampled else ""
        forward = f"{count} passes (one JVP per parameter)"
        reverse = f"{'1':>{len(count)}} pass (one backward after the forward)"
        width = max(len(forward), len(reverse)) + 3
        return [
            f"why backpropagation is reverse mode — the whole gradient of the loss, {count} numbers:",
            f"  forward mode  {forward:<{width}}{_duration(t.forward_seconds)}{extrapolated}",
            f"  reverse mode  {reverse:<{width}}{_duration(t.reverse_seconds)}, best of {REVERSE_REPEATS}",
            f"Reverse mode is {t.forward_seconds / t.reverse_seconds:,.0f}× faster here: forward mode needs a pass "
            "per parameter, reverse mode one pass in all.",
            f"The forward-mode gradient agrees with reverse mode to {t.forward_error:.1e}.",
        ]

    def _verdict(self) -> list[str]:
        if self.ok:
            return [f"gradient check passed: every error is below {TOLERANCE:g}"]
        lines = [f"gradient check FAILED: errors of {TOLERANCE:g} or more in"]
        for a in self.failures:
            lines.append(f"  {a.name}: central differences {a.fd_error:.1e}, forward mode {a.jvp_error:.1e}")
        if self.failures and all(a.jvp_error < TOLERANCE for a in self.failures):
            lines.append(textwrap.fill(
                "Forward mode agrees with reverse mode, central differences do not: both modes use each primitive's "
                "local derivative, so suspect the derivative rule of an activation or loss these layers use.",
                width=110,
            ))
        return lines


@dataclass
class _Problem:
    """The config's network in float64 and its loss on a seeded batch of training rows, as gradcheck checks it."""

    name: str
    layers: list[Layer]
    rows: int
    loss: LossOfParameters
    params: list[np.ndarray]
    names: list[str]  # layer0.weight, layer0.bias, …
    rng: np.random.Generator


def _problem(source: str | Path, overrides: Sequence[str]) -> _Problem:
    config, dataset = prepare(source, [*overrides, "training.dtype=float64"])
    network = build_network(config, dataset.n_features, np.random.default_rng([config.seed, INIT_STREAM]))
    rng = np.random.default_rng(config.seed)
    n = len(dataset.X_train)
    rows = np.sort(rng.choice(n, size=min(BATCH_ROWS, n), replace=False))
    y = loss_targets(dataset.y_train[rows], config.loss, np.dtype(np.float64))
    loss = network_loss(network, dataset.X_train[rows], y, config.loss)
    names = [f"{layer.name}.{kind}" for layer in network.layers for kind in ("weight", "bias")]
    return _Problem(config.name, network.layers, len(rows), loss, [p.data.copy() for p in network.parameters()],
                    names, rng)  # fmt: skip


def check_config(source: str | Path, overrides: Sequence[str] = (), *, quiet: bool = True) -> GradcheckReport:
    """Build the config's network in float64, take a batch of its training data and check every gradient
    (with progress on standard error unless `quiet`)."""
    problem = _problem(source, overrides)
    loss, params, rng = problem.loss, problem.params, problem.rng
    reverse = grad(loss, list(range(len(params))))(*params)
    progress = WorkProgress(_planned_passes([p.size for p in params]), f"gradcheck {problem.name}", "passes", quiet)
    try:
        arrays = [_check_array(loss, params, reverse, k, name, rng, progress) for k, name in enumerate(problem.names)]
        timing = _time_whole_gradient(loss, params, reverse, rng, progress)
    finally:
        progress.close()
    return GradcheckReport(problem.name, problem.layers, problem.rows, arrays, timing)


def _planned_passes(sizes: list[int]) -> int:
    """Loss evaluations and JVP passes the check makes when the first step ε of central differences suffices."""
    checked = sum(2 * min(size, FD_MAX_ENTRIES) + DIRECTIONS for size in sizes)
    total = sum(sizes)
    return checked + (total if total <= FORWARD_MAX_PASSES else FORWARD_SAMPLE)


def _check_array(
    loss: LossOfParameters,
    params: list[np.ndarray],
    reverse: list[np.ndarray],
    k: int,
    name: str,
    rng: np.random.Generator,
    progress: WorkProgress,
) -> ArrayCheck:
    size = params[k].size
    entries = _indices(size, FD_MAX_ENTRIES, FD_MAX_ENTRIES, rng)
    progress.start_phase(f"central differences, {name}")
    expected = reverse[k].reshape(-1)[entries]
    fd_error, fd_step = _central_difference_error(loss, params, k, entries, expected, progress, name)
    progress.start_phase(f"forward mode, {name}")
    jvp_error = _forward_mode_error(loss, params, reverse, k, rng, progress)
    return ArrayCheck(name, size, len(entries), fd_error, fd_step, jvp_error)


def _central_difference_error(
    loss: LossOfParameters, params: list[np.ndarray], k: int, entries: np.ndarray, expected: np.ndarray,
    progress: WorkProgress, name: str,
) -> tuple[float, float]:  # fmt: skip
    """The smallest error over the steps tried (stopping at the first within tolerance), and its step."""
    of_entries = _restricted(loss, params, k, entries, progress.advance)
    start = params[k].reshape(-1)[entries]
    best = (math.inf, FD_STEPS[0])
    for step in FD_STEPS:
        if step != FD_STEPS[0]:
            progress.start_phase(f"central differences with ε={step:.0e}, {name}", more=2 * len(entries))
        numerical = numerical_gradient(of_entries, [start], 0, step)
        best = min(best, (relative_error(expected, numerical, SCALE_FLOOR), step))
        if best[0] < TOLERANCE:
            break
    return best


def _restricted(
    loss: LossOfParameters, params: list[np.ndarray], k: int, entries: np.ndarray, evaluated: Callable[[], None]
) -> LossOfParameters:
    """The loss as a function of the chosen entries of params[k] alone, every other value held fixed;
    `evaluated` is called after each evaluation."""
    values = [p.copy() for p in params]
    flat = values[k].reshape(-1)

    def of_entries(chosen: Tensor) -> Tensor:
        flat[entries] = chosen.data
        value = loss(*[Tensor(v) for v in values])
        evaluated()
        return value

    return of_entries


def _forward_mode_error(
    loss: LossOfParameters, params: list[np.ndarray], reverse: list[np.ndarray], k: int, rng: np.random.Generator,
    progress: WorkProgress,
) -> float:  # fmt: skip
    """⟨∇L, v⟩ from reverse mode against J·v from one JVP pass, for random directions v in params[k] alone."""
    tangents = [np.zeros_like(p) for p in params]
    by_reverse, by_forward = [], []
    for _ in range(DIRECTIONS):
        tangents[k] = rng.standard_normal(params[k].shape)
        by_reverse.append(float(np.sum(reverse[k] * tangents[k])))
        by_forward.append(float(jvp(loss, params, tangents)[1]))
        progress.advance()
    return relative_error(np.array(by_reverse), np.array(by_forward), SCALE_FLOOR)


def _time_whole_gradient(
    loss: LossOfParameters, params: list[np.ndarray], reverse: list[np.ndarray], rng: np.random.Generator,
    progress: WorkProgress,
) -> Timing:  # fmt: skip
    """Forward mode: one JVP pass per parameter with a one-hot tangent. Reverse mode: one grad() call."""
    sizes = [p.size for p in params]
    total = sum(sizes)
    offsets = np.cumsum([0, *sizes])
    chosen = _indices(total, FORWARD_MAX_PASSES, FORWARD_SAMPLE, rng)
    arrays = np.searchsorted(offsets, chosen, side="right") - 1
    tangents = [np.zeros_like(p) for p in params]
    flats = [t.reshape(-1) for t in tangents]
    by_forward = np.empty(len(chosen))
    passes = list(zip(arrays.tolist(), (chosen - offsets[arrays]).tolist()))
    progress.start_phase("timing forward mode against reverse mode")
    elapsed = 0.0
    for begin in range(0, len(passes), TIMING_CHUNK):
        start = time.perf_counter()
        for i in range(begin, min(begin + TIMING_CHUNK, len(passes))):
            k, j = passes[i]
            flats[k][j] = 1.0
            by_forward[i] = jvp(loss, params, tangents)[1]
            flats[k][j] = 0.0
        elapsed += time.perf_counter() - start
        progress.advance(min(TIMING_CHUNK, len(passes) - begin))
    forward_seconds = elapsed * total / len(chosen)
    by_reverse = np.concatenate([g.reshape(-1) for g in reverse])[chosen]
    gradient = grad(loss, list(range(len(params))))
    reverse_seconds = min(_seconds(lambda: gradient(*params)) for _ in range(REVERSE_REPEATS))
    return Timing(total, len(chosen), forward_seconds, reverse_seconds, relative_error(by_reverse, by_forward))


def _seconds(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _indices(total: int, limit: int, sample: int, rng: np.random.Generator) -> np.ndarray:
    """All of range(total) up to `limit`, else a seeded sample of `sample` of them, in order."""
    if total <= limit:
        return np.arange(total)
    return np.sort(rng.choice(total, size=sample, replace=False))


def _layer_rows(layers: list[Layer], arrays: Sequence[Any], failures: Sequence[Any],
                errors: Callable[[Any, Any], tuple[float, ...]]) -> list[str]:  # fmt: skip
    """A table line per layer: name, shape, activation, the `errors` of its weight and bias checks, ok or FAIL."""
    failing = {a.name for a in failures}
    lines = []
    for layer, weight, bias in zip(layers, arrays[0::2], arrays[1::2]):
        flag = "FAIL" if {weight.name, bias.name} & failing else "ok"
        shape = "×".join(map(str, layer.shape))
        values = "".join(f"{e:<12.1e}" for e in errors(weight, bias))
        lines.append(f"{layer.name:<8}{shape:<10}{layer.activation:<12}{values}{flag}")
    return lines


def _wrapped(lead: str, items: list[str]) -> str:
    return textwrap.fill(f"{lead}: {', '.join(items)}", width=110, subsequent_indent="  ")


def _duration(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


# --- the second order ---------------------------------------------------------------------------------------------
@dataclass
class CurvatureCheck:
    """One parameter array's block of H·v: forward over reverse against central differences of gradients."""

    name: str
    error: float  # the largest over the directions
    step: float


@dataclass
class HvpTiming:
    """One H·v by forward over reverse against the two gradients its central difference takes (best of repeats)."""

    hvp_seconds: float
    gradients_seconds: float


@dataclass
class CurvatureReport:
    """Everything `autobp gradcheck --order 2` found for one network."""

    name: str
    layers: list[Layer]
    rows: int
    parameters: int
    arrays: list[CurvatureCheck]
    timing: HvpTiming

    @property
    def failures(self) -> list[CurvatureCheck]:
        return [a for a in self.arrays if not a.error < TOLERANCE]  # "not below": NaN fails

    @property
    def ok(self) -> bool:
        return not self.failures

    def format(self) -> str:
        """The report printed by the command: errors per layer, the cost, the verdict."""
        return "\n".join([*self._error_table(), "", *self._timing_lines(), "", *self._verdict()])

    def _error_table(self) -> list[str]:
        lines = [
            f"gradcheck {self.name} --order 2: {len(self.layers)} layers, {self.parameters:,} parameters, float64, "
            f"a batch of {self.rows} training rows",
            "largest relative error of Hessian-vector products H·v (forward over reverse) against central",
            f"differences of gradients, (∇L(θ + εv) − ∇L(θ − εv)) / 2ε, along {DIRECTIONS} random directions v",
            f"{'layer':<8}{'shape':<10}{'activation':<12}{'weight':<12}bias",
        ]
        lines += _layer_rows(self.layers, self.arrays, self.failures, lambda w, b: (w.error, b.error))
        for step in HVP_STEPS[1:]:
            names = [a.name for a in self.arrays if a.step == step and a.error < TOLERANCE]
            if names:
                lines.append(_wrapped(f"central differences needed the step ε={step:.0e} for", names))
        return lines

    def _timing_lines(self) -> list[str]:
        t = self.timing
        hvp_pass = "1 pass: v's tangents through the forward and the reverse pass"
        two = "2 gradients, at θ + εv and θ − εv"
        width = max(len(hvp_pass), len(two)) + 3
        return [
            f"the cost of one H·v, {self.parameters:,} numbers:",
            f"  forward over reverse  {hvp_pass:<{width}}{_duration(t.hvp_seconds)}, best of {REVERSE_REPEATS}",
            f"  central differences   {two:<{width}}{_duration(t.gradients_seconds)}, best of {REVERSE_REPEATS}",
            f"Forward over reverse costs {t.hvp_seconds / t.gradients_seconds:.2g}× two gradients here, and is exact:",
            "no step ε to choose between truncation and rounding.",
        ]

    def _verdict(self) -> list[str]:
        if self.ok:
            return [f"Hessian-vector check passed: every error is below {TOLERANCE:g}"]
        lines = [f"Hessian-vector check FAILED: errors of {TOLERANCE:g} or more in"]
        lines += [f"  {a.name}: {a.error:.1e} (best step ε={a.step:.0e})" for a in self.failures]
        lines.append(textwrap.fill(
            "The differences are of gradients: if `autobp gradcheck` (order 1) passes on this config, suspect the "
            "second-order rule (vjp_graph, partial_graph, slope_graph) of an activation or loss these layers use.",
            width=110, break_on_hyphens=False,
        ))  # fmt: skip
        return lines


def check_curvature(source: str | Path, overrides: Sequence[str] = (), *, quiet: bool = True) -> CurvatureReport:
    """Build the config's network in float64, take a batch of its training data and check Hessian-vector products
    of its loss along random directions (with progress on standard error unless `quiet`)."""
    problem = _problem(source, overrides)
    loss, params = problem.loss, problem.params
    directions = [[problem.rng.standard_normal(p.shape) for p in params] for _ in range(DIRECTIONS)]
    progress = WorkProgress(3 * DIRECTIONS + 3 * REVERSE_REPEATS, f"gradcheck --order 2 {problem.name}", "passes", quiet)
    try:
        progress.start_phase("forward over reverse")
        exact = []
        for v in directions:
            exact.append(hvp(loss, params, v))
            progress.advance()
        arrays = _curvature_errors(loss, params, problem.names, directions, exact, progress)
        timing = _time_hvp(loss, params, directions[0], progress)
    finally:
        progress.close()
    return CurvatureReport(problem.name, problem.layers, problem.rows, sum(p.size for p in params), arrays, timing)


def _curvature_errors(
    loss: LossOfParameters, params: list[np.ndarray], names: list[str], directions: list[list[np.ndarray]],
    exact: list[list[np.ndarray]], progress: WorkProgress,
) -> list[CurvatureCheck]:  # fmt: skip
    """Per array, the smallest error over the steps tried (stopping once every array is within tolerance)."""
    gradient = grad(loss, list(range(len(params))))
    best = [(math.inf, HVP_STEPS[0])] * len(params)
    for step in HVP_STEPS:
        progress.start_phase(f"central differences of gradients, ε={step:.0e}", more=0 if step == HVP_STEPS[0]
                             else 2 * len(directions))  # fmt: skip
        errors = [0.0] * len(params)
        for v, by_hvp in zip(directions, exact):
            above = gradient(*[p + step * d for p, d in zip(params, v)])
            below = gradient(*[p - step * d for p, d in zip(params, v)])
            progress.advance(2)
            for k, (a, b, h) in enumerate(zip(above, below, by_hvp)):
                errors[k] = max(errors[k], relative_error(h, (a - b) / (2 * step), SCALE_FLOOR))
        best = [min(old, (error, step)) for old, error in zip(best, errors)]
        if all(error < TOLERANCE for error, _ in best):
            break
    return [CurvatureCheck(name, error, step) for name, (error, step) in zip(names, best)]


def _time_hvp(loss: LossOfParameters, params: list[np.ndarray], v: list[np.ndarray], progress: WorkProgress) -> HvpTiming:
    """One H·v against the two gradients of its central difference, each the best of REVERSE_REPEATS."""
    progress.start_phase("timing forward over reverse against two gradients")
    gradient = grad(loss, list(range(len(params))))
    shifted = [p + 1e-5 * d for p, d in zip(params, v)]
    hvp_seconds, gradients_seconds = math.inf, math.inf
    for _ in range(REVERSE_REPEATS):  # alternated, so both sides see the same machine load
        hvp_seconds = min(hvp_seconds, _seconds(lambda: hvp(loss, params, v)))
        gradients_seconds = min(gradients_seconds, _seconds(lambda: (gradient(*shifted), gradient(*params))))
        progress.advance(3)
    return HvpTiming(hvp_seconds, gradients_seconds)
