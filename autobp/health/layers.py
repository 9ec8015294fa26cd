"""Each layer's summary of the gradient log (medians, first and last values) and its verdict."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from autobp.common.text import format_number
from autobp.config.catalog import ACTIVATIONS
from autobp.health.thresholds import DYING, INACTIVE_FRACTION, MIN_GRAD_NORM, SIGNAL_RATIO
from autobp.rundir.logs import DEAD_FRACTION, GRAD_NORM_W, OUT_GRAD_NORM, SATURATED_FRACTION, UPDATE_RATIO, WEIGHT_NORM
from autobp.rundir.reader import RunLog
from autobp.rundir.summary import LayerVerdict


@dataclass
class LayerSummary:
    """One layer's row of the report; medians are over the finite logged values, `_first` at the first logged
    step (the initial weights: its statistics come from the forward and backward pass before the first update)."""

    name: str
    shape: tuple[int, ...] | None
    activation: str | None
    logged_steps: int
    grad_norm_w_first: float | None
    grad_norm_w_median: float | None
    grad_norm_w_last: float | None
    out_grad_norm_median: float | None
    update_ratio_median: float | None
    dead_fraction: float | None
    saturated_fraction: float | None
    out_grad_norm_first: float | None = None
    update_ratio_max: float | None = None
    weight_norm_first: float | None = None
    update_ratio_first: float | None = None
    dead_fraction_first: float | None = None
    saturated_fraction_first: float | None = None


def finite(values: Iterable[float | None]) -> np.ndarray:
    """The finite values, as an array."""
    return np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)


def median(values: Iterable[float | None]) -> float | None:
    """Median of the finite values, None when there are none."""
    # np.median would import numpy.ma (about 10 ms at the end of every run); the middle of the sorted values is it.
    kept = np.sort(finite(values))
    if not kept.size:
        return None
    middle = kept.size // 2
    return float(np.mean(kept[middle - 1 + kept.size % 2 : middle + 1]))


def first_value(values: Sequence[float | None]) -> float | None:
    """The first logged (non-empty) value."""
    return next((v for v in values if v is not None), None)


def last_value(values: Sequence[float | None]) -> float | None:
    """The last logged (non-empty) value."""
    return first_value(values[::-1])


def _largest(values: Iterable[float | None]) -> float | None:
    kept = finite(values)
    return float(kept.max()) if kept.size else None


def _at_first_step(values: Sequence[float | None]) -> float | None:
    return values[0] if values else None


# Each summarised field: how it reduces which gradients.csv column over the logged steps.
_REDUCTIONS = {
    "grad_norm_w_first": (first_value, GRAD_NORM_W), "grad_norm_w_median": (median, GRAD_NORM_W),
    "grad_norm_w_last": (last_value, GRAD_NORM_W), "out_grad_norm_median": (median, OUT_GRAD_NORM),
    "update_ratio_median": (median, UPDATE_RATIO), DEAD_FRACTION: (last_value, DEAD_FRACTION),
    SATURATED_FRACTION: (last_value, SATURATED_FRACTION), "out_grad_norm_first": (_at_first_step, OUT_GRAD_NORM),
    "update_ratio_max": (_largest, UPDATE_RATIO), "weight_norm_first": (_at_first_step, WEIGHT_NORM),
    "update_ratio_first": (_at_first_step, UPDATE_RATIO), "dead_fraction_first": (_at_first_step, DEAD_FRACTION),
    "saturated_fraction_first": (_at_first_step, SATURATED_FRACTION),
}  # fmt: skip


def summarize_layers(log: RunLog) -> list[LayerSummary]:
    """The per-layer table, input to output."""
    activations = log.activations()
    return [
        LayerSummary(
            name=layer.name,
            shape=log.shapes.get(layer.name),
            activation=activations[index] if index < len(activations) else None,
            logged_steps=len(layer.steps),
            **{field: reduce(layer.values(column)) for field, (reduce, column) in _REDUCTIONS.items()},
        )
        for index, layer in enumerate(log.layers)
    ]


def layer_verdicts(layers: list[LayerSummary]) -> list[LayerVerdict]:
    """Each layer's health: its median signal ‖∂L/∂f‖ against the output layer's, then its units."""
    reference = layers[-1].out_grad_norm_median if layers else None
    verdicts = []
    for layer in layers:
        signal = layer.out_grad_norm_median
        relative = signal / reference if signal is not None and reference else None
        verdicts.append(LayerVerdict(layer=layer.name, activation=layer.activation, signal=signal,
                                     relative=relative, verdict=_verdict(layer, relative)))  # fmt: skip
    return verdicts


def _verdict(layer: LayerSummary, relative: float | None) -> str:
    if relative is not None and relative * SIGNAL_RATIO <= 1.0:
        return "vanishing"
    if relative is not None and relative >= SIGNAL_RATIO:
        return "exploding"
    if layer.grad_norm_w_median is None:
        return "no finite gradient"
    if layer.grad_norm_w_median < MIN_GRAD_NORM:
        return "vanishing"
    if layer.activation in DYING and layer.dead_fraction is not None and layer.dead_fraction > INACTIVE_FRACTION:
        return "dead"
    if layer.saturated_fraction is not None and layer.saturated_fraction > INACTIVE_FRACTION:
        return "saturated"
    return "healthy"


def describe(verdict: LayerVerdict) -> str:
    """One line on a layer's health, as `train` prints it."""
    evidence = f"median ‖∂L/∂f‖ {format_number(verdict.signal)}"
    if verdict.relative is not None:
        evidence += f", {verdict.relative:.2g}× the output layer's"
    return f"{verdict.layer} ({verdict.activation or '?'}): {verdict.verdict} ({evidence})"


def is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def squashing(activation: str | None) -> bool:
    return activation is not None and ACTIVATIONS[activation].family == "squashing"
