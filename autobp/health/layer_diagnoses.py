"""Diagnoses of the layers: a blow-up, initial weights off their fitting scale, a vanishing or exploding signal,
dead or saturated units; each a cause when the first logged step already shows it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from autobp.common.text import format_number
from autobp.config.models import Config
from autobp.health.findings import AT_START, LATER, Finding, listing
from autobp.health.layers import LayerSummary, is_finite, squashing
from autobp.health.remedies import dead_remedy, diagnosis, init_remedy, saturated_remedy, vanishing_remedy
from autobp.health.thresholds import (
    BLOW_UP_COLUMNS, DYING, INACTIVE_FRACTION, INIT_SCALE_HIGH, INIT_SCALE_LOW, MIN_GRAD_NORM, SATURATION,
    SIGNAL_RATIO,
)
from autobp.model.network import fitting_init, fitting_std
from autobp.rundir.logs import DEAD_FRACTION, SATURATED_FRACTION
from autobp.rundir.reader import RunLog
from autobp.rundir.summary import LayerVerdict


@dataclass
class BlowUp:
    """The first non-finite value: where, and whether the first logged step already had it (or an exploding
    signal), which makes the initial weights its cause rather than the steps taken."""

    step: int
    layer: str | None
    evidence: dict[str, Any]
    message: str
    at_start: bool


def first_blow_up(log: RunLog, layers: list[LayerSummary]) -> BlowUp | None:
    """The first non-finite gradient statistic in step order (layer0 first within a step), or the summary's."""
    hits = [
        (step, index, column, value)
        for index, layer in enumerate(log.layers)
        for column in BLOW_UP_COLUMNS
        for step, value in zip(layer.steps, layer.values(column))
        if value is not None and not math.isfinite(value)
    ]
    first_step = min((layer.steps[0] for layer in log.layers if layer.steps), default=None)
    if hits:
        step, index, column, value = min(hits, key=lambda hit: hit[:2])
        layer = log.layers[index].name
        evidence: dict[str, Any] = {"step": step, "column": column, "value": str(value)}
        what = f"{column} = {value} in {layer}"
    elif log.summary and log.summary.diverged:
        step, layer = log.summary.diverged.step, log.summary.diverged.layer
        evidence, what = {"step": step}, log.summary.diverged.reason
    else:
        return None
    at_start = step == first_step or bool(_exploding_at_start(layers))
    return BlowUp(step, layer, evidence, f"non-finite values from step {step}: first {what}", at_start)


def exploding_from_start(blow_up: BlowUp | None, config: Config | None) -> list[Finding]:
    if blow_up is None or not blow_up.at_start:
        return []
    return [Finding(AT_START, diagnosis("exploding_gradients", blow_up.layer,
                                        blow_up.message + ", already at the first step", blow_up.evidence,
                                        init_remedy(config), [blow_up.layer] if blow_up.layer else []))]  # fmt: skip


def _exploding_at_start(layers: list[LayerSummary]) -> list[LayerSummary]:
    reference = layers[-1].out_grad_norm_first if layers else None
    if not reference or not is_finite(reference):
        return []
    return [layer for layer in layers[:-1]
            if is_finite(layer.out_grad_norm_first) and layer.out_grad_norm_first >= SIGNAL_RATIO * reference]


def _vanishing_at_start(layers: list[LayerSummary]) -> bool:
    reference = layers[-1].out_grad_norm_first if layers else None
    if not reference or not is_finite(reference):
        return False
    return any(is_finite(layer.out_grad_norm_first) and layer.out_grad_norm_first * SIGNAL_RATIO <= reference
               for layer in layers[:-1])  # fmt: skip


def init_scale(layers: list[LayerSummary], config: Config | None) -> list[Finding]:
    """Initial weights far larger or smaller than the fitting initialisation of their shape and activation (He
    for the ReLU family, Xavier for the others): too large saturates squashing units and makes the signal grow
    layer by layer, too small makes it shrink."""
    scales = []
    for layer in layers:
        if layer.shape is None or layer.activation is None or not is_finite(layer.weight_norm_first):
            continue
        # The log holds the norm after the first update: ‖W_before‖ ≥ ‖W_after‖ / (1 + ‖ΔW‖/‖W_before‖).
        initial = layer.weight_norm_first / (1 + (layer.update_ratio_first or 0.0))
        fan_in, fan_out = layer.shape
        scales.append((layer, initial / (fitting_std(layer.activation, fan_in, fan_out) * math.sqrt(fan_in * fan_out))))
    large = [(layer, scale) for layer, scale in scales if scale > INIT_SCALE_HIGH]
    small = [(layer, scale) for layer, scale in scales if scale < INIT_SCALE_LOW]
    found = []
    for hit, word in ((large, "larger"), (small, "smaller")):
        if not hit:
            continue
        worst, scale = max(hit, key=lambda pair: max(pair[1], 1 / pair[1]))
        if word == "smaller":
            kind, remedy = "vanishing_gradients", init_remedy(config)
        elif any(squashing(layer.activation) for layer, _ in hit):
            kind, remedy = "saturated_units", init_remedy(config)
        else:
            kind, remedy = "exploding_gradients", init_remedy(config)
        times = scale if scale >= 1 else 1 / scale
        found.append(Finding(AT_START, diagnosis(
            kind, worst.name,
            f"the initial weights of {listing([layer.name for layer, _ in hit])} are far {word} than their fitting "
            f"initialisation's ({fitting_init(worst.activation)} for {worst.activation}): {worst.name}'s weights "
            f"start at least {_times(times)} {word} (threshold {INIT_SCALE_HIGH:g}×)",
            {"scales": {layer.name: scale for layer, scale in hit}, "threshold_high": INIT_SCALE_HIGH,
             "threshold_low": INIT_SCALE_LOW, "at_first_step": True},
            remedy, [layer.name for layer, _ in hit])))  # fmt: skip
    return found


def signal_findings(layers: list[LayerSummary], verdicts: list[LayerVerdict], config: Config | None,
                    verdict: str) -> list[Finding]:  # fmt: skip
    """Vanishing or exploding gradients: every layer with that verdict, the most affected one first; ranked as a
    cause when the first logged step already shows it."""
    hit = [(layer, v) for layer, v in zip(layers, verdicts) if v.verdict == verdict]
    if not hit:
        return []
    names = [v.layer for _, v in hit]
    vanishing = verdict == "vanishing"
    at_start = _vanishing_at_start(layers) if vanishing else bool(_exploding_at_start(layers))
    rank = AT_START if at_start else LATER
    remedy = vanishing_remedy(config) if vanishing else init_remedy(config)
    by_signal = [(layer, v) for layer, v in hit if v.relative is not None]
    if not by_signal:  # the signal is not comparable: tiny parameter gradients decided it
        layer = hit[0][0]
        return [Finding(rank, diagnosis(
            "vanishing_gradients", layer.name,
            f"the median ‖∂L/∂W‖ of {layer.name} is {format_number(layer.grad_norm_w_median)}, below {MIN_GRAD_NORM:g}",
            {"grad_norm_w_median": layer.grad_norm_w_median, "threshold": MIN_GRAD_NORM}, remedy, names))]  # fmt: skip
    pick = min if vanishing else max
    worst, judged = pick(by_signal, key=lambda pair: pair[1].relative)
    output = verdicts[-1]
    factor = 1 / judged.relative if vanishing and judged.relative > 0 else judged.relative
    how = (f"{_times(factor)} {'smaller' if vanishing else 'larger'}" if judged.relative > 0
           else f"none of it reaches {worst.name}")  # fmt: skip
    which = f"at most 1/{SIGNAL_RATIO:g} of" if vanishing else f"at least {SIGNAL_RATIO:g}×"
    when = ", from the first step on" if at_start else ""
    return [Finding(rank, diagnosis(
        f"{verdict}_gradients", worst.name,
        f"the backpropagated signal, median ‖∂L/∂f‖, is {format_number(judged.signal)} at {worst.name} "
        f"against {format_number(output.signal)} at the output layer {output.layer}: {how}; "
        f"{listing(names)} {'is' if len(names) == 1 else 'are'} {which} the output layer's signal{when}",
        {"signal": judged.signal, "signal_output_layer": output.signal, "ratio": factor, "threshold": SIGNAL_RATIO,
         "at_first_step": at_start},
        remedy, names))]  # fmt: skip


def _times(ratio: float) -> str:
    return f"{ratio:,.0f}×" if ratio >= SIGNAL_RATIO else f"{ratio:.3g}×"


def inactive_findings(layers: list[LayerSummary], config: Config | None) -> list[Finding]:
    """Dead or saturated units, one diagnosis per kind naming every layer it concerns; a cause when the first
    logged step already shows them (the initial weights, or inputs that are not standardized)."""
    found = []
    for kind, field_name, word in (
        ("dead_units", DEAD_FRACTION, "dead (pre-activation ≤ 0 for the whole batch)"),
        ("saturated_units", SATURATED_FRACTION, f"saturated (|pre-activation| > {SATURATION:g} for the whole batch)"),
    ):  # fmt: skip
        judged = [layer for layer in layers if kind == "saturated_units" or layer.activation in DYING]
        hit = [(layer, getattr(layer, field_name)) for layer in judged
               if getattr(layer, field_name) is not None and getattr(layer, field_name) > INACTIVE_FRACTION]  # fmt: skip
        at_start = [layer for layer in judged
                    if (getattr(layer, f"{field_name}_first") or 0.0) >= INACTIVE_FRACTION]  # fmt: skip
        if not hit and not at_start:
            continue
        hit = hit or [(layer, getattr(layer, f"{field_name}_first")) for layer in at_start]
        shares = ", ".join(f"{share:.0%} of {layer.name}'s" for layer, share in hit)
        when = " (already at the first step)" if at_start else ""
        remedy = dead_remedy(config) if kind == "dead_units" else saturated_remedy(config)
        found.append(Finding(AT_START if at_start else LATER, diagnosis(
            kind, hit[0][0].name, f"{shares} units are {word} at the last logged step{when}",
            {"fractions": {layer.name: share for layer, share in hit}, "threshold": INACTIVE_FRACTION,
             "at_first_step": [layer.name for layer in at_start]},
            remedy, [layer.name for layer, _ in hit])))  # fmt: skip
    return found
