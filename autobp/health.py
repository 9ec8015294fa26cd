"""The one gradient-health judgement: per-layer verdicts and run-level diagnoses from a run's logs.

`train` prints it at the end of a run and stores it in summary.json; `report`, `compare` and sweeps read the same
judgement, made by this module from the same files, so every output agrees. Every threshold lives here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autobp.common.text import format_number
from autobp.rundir.reader import RunLog, read_run
from autobp.rundir.summary import Diagnosis, Health, LayerVerdict
from autobp.spec.catalog import ACTIVATIONS
from autobp.spec.config import SYNTHETIC_DEFAULTS

SIGNAL_RATIO = 100.0  # vanishing/exploding: median ‖∂L/∂f‖ of a layer vs the output layer's, either way
INACTIVE_FRACTION = 0.5  # dead (ReLU family) or saturated (tanh, sigmoid) share of a layer's units
SATURATION = 3.0  # a squashing unit is saturated where |pre-activation| exceeds this for the whole batch
MIN_GRAD_NORM = 1e-8  # vanishing: a layer's median ‖∂L/∂W‖ below this
UPDATE_RATIO_HIGH = 1e-1  # learning rate: median ‖ΔW‖/‖W‖ over the logged steps of the layer that moves most
UPDATE_RATIO_LOW = 1e-5
HEALTHY_UPDATE_RATIO = 1e-3
MAX_LR_CHANGE = 1e3  # the largest factor by which a learning-rate suggestion changes optimizer.lr
OVERFIT_MIN_EPOCHS = 6  # overfitting: judged on the last third of the epochs, at least 3 of them
OVERFIT_MIN_RISE = 0.02  # the validation loss's fitted rise over that window, relative to its mean there

# The causes for which `early_terminate: health` stops a sweep's trial: a blow-up, vanishing, dead or saturated
# layers, a learning rate far off. Overfitting and the like are left to the trial's own early stopping.
FATAL_KINDS = frozenset({"exploding_gradients", "vanishing_gradients", "dead_units", "saturated_units",
                         "learning_rate_high", "learning_rate_low"})  # fmt: skip

# Gradient-log columns whose non-finite values mean the run blew up; update_ratio is left out because it is
# infinite by definition for a weight matrix of zeros.
BLOW_UP_COLUMNS = ("grad_norm_w", "grad_norm_b", "weight_norm", "out_grad_norm", "grad_mean", "grad_std")


@dataclass
class LayerSummary:
    """One layer's row of the report; medians are over the finite logged values."""

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


def summarize_layers(log: RunLog) -> list[LayerSummary]:
    """The per-layer table, input to output."""
    activations = log.activations()
    return [
        LayerSummary(
            name=layer.name,
            shape=log.shapes.get(layer.name),
            activation=activations[index] if index < len(activations) else None,
            logged_steps=len(layer.steps),
            grad_norm_w_first=first_value(layer.values("grad_norm_w")),
            grad_norm_w_median=median(layer.values("grad_norm_w")),
            grad_norm_w_last=last_value(layer.values("grad_norm_w")),
            out_grad_norm_median=median(layer.values("out_grad_norm")),
            update_ratio_median=median(layer.values("update_ratio")),
            dead_fraction=last_value(layer.values("dead_fraction")),
            saturated_fraction=last_value(layer.values("saturated_fraction")),
        )
        for index, layer in enumerate(log.layers)
    ]


# --- diagnoses ------------------------------------------------------------------------------------------------

SUGGEST_VANISHING_SQUASHING = ("use `model.activation: relu` with `model.init: he` (the slope of a sigmoid is at "
                               "most 1/4, of a saturated tanh near 0, so each such layer shrinks the signal), or "
                               "fewer hidden layers")  # fmt: skip
SUGGEST_VANISHING = ("use `model.init: he` for the ReLU family, or fewer hidden layers; a signal of 0 "
                     "means dead units, which `model.activation: leaky_relu` avoids")  # fmt: skip
SUGGEST_EXPLODING = ("set `optimizer.clip_grad_norm: 1.0`, lower `optimizer.lr`, and use `model.init: xavier` "
                     "(tanh, sigmoid) or `he` (relu) rather than a large `model.init_scale`")  # fmt: skip
SUGGEST_DEAD = ("use `model.activation: leaky_relu` or `elu`, `model.init: he`, or a lower `optimizer.lr` "
                "(a too-large step pushes the pre-activations below zero for good)")  # fmt: skip
SUGGEST_SATURATED = ("use `model.init: xavier` (or a smaller `model.init_scale` with `normal`/`uniform`), keep "
                     "`data.standardize: true`, or `model.activation: relu` with `model.init: he`")  # fmt: skip
SUGGEST_OVERFITTING = ("add `training.early_stopping: {monitor: val_loss, patience: 10}`, "
                       "`optimizer.weight_decay: 1e-4`, dropout (`model.dropout: 0.2`) or a smaller network")  # fmt: skip
SUGGEST_MORE_DATA = ", or more data (`data.n_samples`)"  # only synthetic sources can make more


def judge(log: RunLog, layers: list[LayerSummary] | None = None) -> Health:
    """The run's gradient health: one verdict per layer and every diagnosis, most likely cause first."""
    layers = summarize_layers(log) if layers is None else layers
    verdicts = layer_verdicts(layers)
    diagnoses = diagnose(log, layers, verdicts)
    for diagnosis in diagnoses:  # STUB until issue-20 parts 1-3 land: their fixes replace this table
        changes = _STUB_FIXES.get(diagnosis.kind, [])
        lr = log.config.optimizer.lr if log.config else 0.01
        changes = [{k: (v * lr if k == "optimizer.lr" else v) for k, v in c.items()} for c in changes]
        if changes:
            diagnosis.fix, diagnosis.alternatives = changes[0], changes[1:]
    return Health(layers=verdicts, diagnoses=diagnoses)


_STUB_FIXES = {
    "vanishing_gradients": [{"model.activation": "relu", "model.init": "he"}, {"model.activation": "tanh"}],
    "exploding_gradients": [{"optimizer.lr": 0.01, "optimizer.clip_grad_norm": 1.0}, {"optimizer.lr": 0.001}],
    "learning_rate_high": [{"optimizer.lr": 0.01}, {"optimizer.lr": 0.001}],
    "learning_rate_low": [{"optimizer.lr": 100}],
    "dead_units": [{"model.activation": "leaky_relu"}],
    "saturated_units": [{"model.init": "xavier"}],
    "overfitting": [{"optimizer.weight_decay": 1e-4}],
}


def fatal_cause(run_dir: Path) -> Diagnosis | None:
    """The cause (first diagnosis) of the run's judgement from its files so far, if it is fatal (FATAL_KINDS)."""
    diagnoses = judge(read_run(run_dir)).diagnoses
    return diagnoses[0] if diagnoses and diagnoses[0].kind in FATAL_KINDS else None


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
    if layer.dead_fraction is not None and layer.dead_fraction > INACTIVE_FRACTION:
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


def diagnose(log: RunLog, layers: list[LayerSummary], verdicts: list[LayerVerdict]) -> list[Diagnosis]:
    """Every diagnosis the logs trigger, most likely cause first; empty for a healthy run.

    A blow-up and a too-high learning rate lead: vanishing, exploding, saturated or dead layers in such a run are
    its symptoms, not its cause."""
    signal = [*_signal_diagnosis(layers, verdicts, "vanishing"), *_signal_diagnosis(layers, verdicts, "exploding")]
    rate = _learning_rate(log, layers)
    high = [d for d in rate if d.kind == "learning_rate_high"]
    low = [d for d in rate if d.kind == "learning_rate_low"]
    return [*_blow_up(log), *high, *signal, *_inactive_units(layers), *low, *_overfitting(log)]


def _signal_diagnosis(layers: list[LayerSummary], verdicts: list[LayerVerdict], verdict: str) -> list[Diagnosis]:
    """Vanishing or exploding gradients: every layer with that verdict, the most affected one first."""
    hit = [(layer, v) for layer, v in zip(layers, verdicts) if v.verdict == verdict]
    if not hit:
        return []
    names = [v.layer for _, v in hit]
    by_signal = [(layer, v) for layer, v in hit if v.relative is not None]
    if not by_signal:  # the signal is not comparable: tiny parameter gradients decided it
        layer = hit[0][0]
        return [Diagnosis(
            kind="vanishing_gradients", layer=layer.name, layers=names,
            evidence={"grad_norm_w_median": layer.grad_norm_w_median, "threshold": MIN_GRAD_NORM},
            message=f"the median ‖∂L/∂W‖ of {layer.name} is {format_number(layer.grad_norm_w_median)}, "
                    f"below {MIN_GRAD_NORM:g}",
            suggestion=_vanishing_suggestion(layers),
        )]  # fmt: skip
    pick = min if verdict == "vanishing" else max
    worst, judged = pick(by_signal, key=lambda pair: pair[1].relative)
    output = verdicts[-1]
    factor = 1 / judged.relative if verdict == "vanishing" and judged.relative > 0 else judged.relative
    how = (f"{_times(factor)} {'smaller' if verdict == 'vanishing' else 'larger'}" if judged.relative > 0
           else f"none of it reaches {worst.name}")  # fmt: skip
    which = f"at most 1/{SIGNAL_RATIO:g} of" if verdict == "vanishing" else f"at least {SIGNAL_RATIO:g}×"
    return [Diagnosis(
        kind=f"{verdict}_gradients", layer=worst.name, layers=names,
        evidence={"signal": judged.signal, "signal_output_layer": output.signal, "ratio": factor,
                  "threshold": SIGNAL_RATIO},
        message=f"the backpropagated signal, median ‖∂L/∂f‖, is {format_number(judged.signal)} at {worst.name} "
                f"against {format_number(output.signal)} at the output layer {output.layer}: {how}; "
                f"{_listing(names)} {'is' if len(names) == 1 else 'are'} {which} the output layer's signal",
        suggestion=_vanishing_suggestion(layers) if verdict == "vanishing" else SUGGEST_EXPLODING,
    )]  # fmt: skip


def _listing(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _times(ratio: float) -> str:
    return f"{ratio:,.0f}×" if ratio >= SIGNAL_RATIO else f"{ratio:.3g}×"


def _vanishing_suggestion(layers: list[LayerSummary]) -> str:
    if any(layer.activation and ACTIVATIONS[layer.activation].family == "squashing" for layer in layers):
        return SUGGEST_VANISHING_SQUASHING
    return SUGGEST_VANISHING


def _blow_up(log: RunLog) -> list[Diagnosis]:
    """The first non-finite gradient statistic in step order (layer0 first within a step), or the summary's."""
    hits = [
        (step, index, column, value)
        for index, layer in enumerate(log.layers)
        for column in BLOW_UP_COLUMNS
        for step, value in zip(layer.steps, layer.values(column))
        if value is not None and not math.isfinite(value)
    ]
    if hits:
        step, index, column, value = min(hits, key=lambda hit: hit[:2])
        layer = log.layers[index].name
        evidence: dict[str, Any] = {"step": step, "column": column, "value": str(value)}
        what = f"{column} = {value} in {layer}"
    elif log.summary and log.summary.diverged:
        step, layer = log.summary.diverged.step, log.summary.diverged.layer
        evidence, what = {"step": step}, log.summary.diverged.reason
    else:
        return []
    return [Diagnosis(kind="exploding_gradients", layer=layer, layers=[layer] if layer else [], evidence=evidence,
                      message=f"non-finite values from step {step}: first {what}", suggestion=SUGGEST_EXPLODING)]


def _inactive_units(layers: list[LayerSummary]) -> list[Diagnosis]:
    """Dead or saturated units, one diagnosis per kind naming every layer it concerns (their suggestion is one)."""
    found = []
    for kind, field, word, suggestion in (
        ("dead_units", "dead_fraction", "dead (pre-activation ≤ 0 for the whole batch)", SUGGEST_DEAD),
        ("saturated_units", "saturated_fraction", f"saturated (|pre-activation| > {SATURATION:g} for the whole batch)",
         SUGGEST_SATURATED),
    ):  # fmt: skip
        hit = [(layer.name, getattr(layer, field)) for layer in layers
               if getattr(layer, field) is not None and getattr(layer, field) > INACTIVE_FRACTION]  # fmt: skip
        if not hit:
            continue
        shares = ", ".join(f"{share:.0%} of {name}'s" for name, share in hit)
        found.append(Diagnosis(
            kind=kind, layer=hit[0][0], layers=[name for name, _ in hit],
            evidence={"fractions": dict(hit), "threshold": INACTIVE_FRACTION},
            message=f"{shares} units are {word} at the last logged step", suggestion=suggestion,
        ))  # fmt: skip
    return found


def _learning_rate(log: RunLog, layers: list[LayerSummary]) -> list[Diagnosis]:
    """Judged on the layer that moves most: lower layers may move little because their signal vanishes, which
    a larger learning rate would not cure."""
    # A layer that did not move has no gradient (dead units, a vanished signal): it says nothing about the rate.
    moving = [layer for layer in layers if layer.update_ratio_median]
    if not moving:
        return []
    fastest = max(moving, key=lambda layer: layer.update_ratio_median)
    ratio = fastest.update_ratio_median
    if UPDATE_RATIO_LOW <= ratio <= UPDATE_RATIO_HIGH:
        return []
    high = ratio > UPDATE_RATIO_HIGH
    threshold = UPDATE_RATIO_HIGH if high else UPDATE_RATIO_LOW
    evidence: dict[str, Any] = {"update_ratio_median": ratio, "threshold": threshold}
    advice = f"{'lower' if high else 'raise'} `optimizer.lr`"
    if log.config is not None:
        lr = log.config.optimizer.lr
        # ‖ΔW‖ scales about linearly with the learning rate for every optimizer autobp has; a run that blew up
        # has absurd ratios, hence the cap on the proposed change.
        factor = min(max(HEALTHY_UPDATE_RATIO / ratio, 1 / MAX_LR_CHANGE), MAX_LR_CHANGE)
        proposal = float(f"{lr * factor:.1g}")
        evidence["lr"] = lr
        advice += f" from {lr:g} to about {proposal:g}"
    if high:
        advice += ", or set `optimizer.clip_grad_norm: 1.0`"
    return [Diagnosis(
        kind="learning_rate_high" if high else "learning_rate_low", layer=fastest.name, evidence=evidence,
        message=f"the median update/weight ratio ‖ΔW‖/‖W‖ of {fastest.name}, the layer that moves most, is "
        f"{format_number(ratio)}, {'above' if high else 'below'} {threshold:g} (about {HEALTHY_UPDATE_RATIO:g} "
        "is healthy)",
        suggestion=advice,
    )]  # fmt: skip


def _overfitting(log: RunLog) -> list[Diagnosis]:
    """Validation loss rising while training loss falls, by straight-line fits over the last third of the run."""
    rows = [row for row in log.metrics if all(_is_finite(row.get(key)) for key in ("epoch", "train_loss", "val_loss"))]
    if len(rows) < OVERFIT_MIN_EPOCHS:
        return []
    window = rows[-max(3, len(rows) // 3):]
    epochs = np.array([row["epoch"] for row in window])
    val = np.array([row["val_loss"] for row in window])
    val_slope = float(np.polyfit(epochs, val, 1)[0])
    train_slope = float(np.polyfit(epochs, [row["train_loss"] for row in window], 1)[0])
    rise = val_slope * (epochs[-1] - epochs[0]) / float(np.mean(val))
    if train_slope >= 0 or rise <= OVERFIT_MIN_RISE:
        return []
    best = min(rows, key=lambda row: row["val_loss"])
    first, last = int(epochs[0]), int(epochs[-1])
    return [Diagnosis(
        kind="overfitting", layer=None,
        evidence={"from_epoch": first, "to_epoch": last, "val_loss_slope": val_slope, "train_loss_slope": train_slope,
         "val_loss_rise": rise, "best_val_loss": best["val_loss"], "best_epoch": int(best["epoch"])},
        message=f"over epochs {first}–{last} the validation loss rises ({format_number(val_slope)} per epoch, "
        f"+{rise:.0%}) while the training loss falls ({format_number(train_slope)} per epoch); the best "
        f"validation loss was {format_number(best['val_loss'])} at epoch {int(best['epoch'])}",
        suggestion=SUGGEST_OVERFITTING + (SUGGEST_MORE_DATA if _synthetic(log) else ""),
    )]  # fmt: skip


def _synthetic(log: RunLog) -> bool:
    """Whether the run's data comes from a built-in generator, which can make more of it."""
    return log.config is not None and log.config.data.source in SYNTHETIC_DEFAULTS


def _is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


