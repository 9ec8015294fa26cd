"""The one gradient-health judgement: per-layer verdicts and run-level diagnoses from a run's logs.

`train` prints it at the end of a run and stores it in summary.json; `report`, `compare` and sweeps read the same
judgement, made by this module from the same files, so every output agrees. Every threshold lives here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autobp.common.text import format_number
from autobp.rundir.instruments import BlockLog
from autobp.rundir.reader import RunLog
from autobp.rundir.summary import Diagnosis, Health, InstrumentVerdict, LayerVerdict
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
    instruments = instrument_verdicts(log)
    return Health(layers=verdicts, diagnoses=diagnose(log, layers, verdicts, instruments), instruments=instruments)


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


def diagnose(log: RunLog, layers: list[LayerSummary], verdicts: list[LayerVerdict],
             instruments: list[InstrumentVerdict] | None = None) -> list[Diagnosis]:  # fmt: skip
    """Every diagnosis the logs trigger, most likely cause first; empty for a healthy run.

    A blow-up and a too-high learning rate lead: vanishing, exploding, saturated or dead layers in such a run are
    its symptoms, not its cause."""
    instruments = instrument_verdicts(log) if instruments is None else instruments
    signal = [*_signal_diagnosis(layers, verdicts, "vanishing"), *_signal_diagnosis(layers, verdicts, "exploding")]
    rate = _learning_rate(log, layers, instruments)
    high = [d for d in rate if d.kind == "learning_rate_high"]
    low = [d for d in rate if d.kind == "learning_rate_low"]
    noise = _gradient_noise(log, instruments)
    return [*_blow_up(log), *high, *signal, *_inactive_units(layers), *noise, *low, *_overfitting(log)]


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


def _learning_rate(log: RunLog, layers: list[LayerSummary], instruments: list[InstrumentVerdict]) -> list[Diagnosis]:
    """Judged on the layer that moves most: lower layers may move little because their signal vanishes, which
    a larger learning rate would not cure. The instruments' step quality and curvature add their evidence; a rate
    they call too high is never called too low."""
    # A layer that did not move has no gradient (dead units, a vanished signal): it says nothing about the rate.
    moving = [layer for layer in layers if layer.update_ratio_median]
    rate_evidence = instrument_rate_evidence(instruments)
    if not moving and rate_evidence is None:
        return []
    fastest = max(moving, key=lambda layer: layer.update_ratio_median) if moving else None
    ratio = fastest.update_ratio_median if fastest else HEALTHY_UPDATE_RATIO
    by_ratio = None if UPDATE_RATIO_LOW <= ratio <= UPDATE_RATIO_HIGH else ratio > UPDATE_RATIO_HIGH
    by_instruments = None if rate_evidence is None else rate_evidence[0]
    if by_ratio is None and by_instruments is None:
        return []
    high = bool(by_ratio) or bool(by_instruments)
    if by_ratio is None or by_ratio != high:
        return [_instrument_rate_diagnosis(log, high, rate_evidence, fastest)]
    threshold = UPDATE_RATIO_HIGH if high else UPDATE_RATIO_LOW
    evidence: dict[str, Any] = {"update_ratio_median": ratio, "threshold": threshold}
    if rate_evidence is not None and rate_evidence[0] == high:
        evidence |= rate_evidence[1]
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
    also = f"; {rate_evidence[2]}" if rate_evidence is not None and rate_evidence[0] == high else ""
    return [Diagnosis(
        kind="learning_rate_high" if high else "learning_rate_low", layer=fastest.name, evidence=evidence,
        message=f"the median update/weight ratio ‖ΔW‖/‖W‖ of {fastest.name}, the layer that moves most, is "
        f"{format_number(ratio)}, {'above' if high else 'below'} {threshold:g} (about {HEALTHY_UPDATE_RATIO:g} "
        f"is healthy){also}",
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




# --- instruments (instruments.csv) ----------------------------------------------------------------------------
# Each instrument is judged on the `total` rows over a window of the instrumented steps: the noise scale over the
# first half (it grows without bound as the gradient shrinks near a minimum, which is no batch problem), the others
# over the last third. A verdict needs at least MIN_INSTRUMENTED values there.

# gradient_noise: the smoothed noise scale B_noise at least this many times the batch size B. Training at B needs
# (1 + B_noise/B) times the fewest possible steps (McCandlish et al. 2018): at this factor, five times.
NOISE_SCALE_FACTOR = 4.0
# Norm and inner-product tests: the norm test squared is the (unsmoothed) noise scale over the batch size, so the
# same factor decides, recently rather than early.
NORM_TEST_LIMIT = math.sqrt(NOISE_SCALE_FACTOR)
ORTHO_TEST_LIMIT = 5.84  # orthogonality test ν: Bollapragada et al. (2018)'s suggested value
ALPHA_LOW = -0.5  # step quality α persistently below: the steps barely move along the fitted quadratic
ALPHA_HIGH = 1.0  # α persistently above: the steps overshoot the minimum along their direction
STABILITY_LIMIT = 2.0  # lr·λ_max beyond it, gradient descent on the local quadratic diverges (Cohen et al. 2021)
TREND_CHANGE = 0.1  # a window's fitted change, relative to its median, that counts as rising or falling
MIN_INSTRUMENTED = 3


def instrument_verdicts(log: RunLog) -> list[InstrumentVerdict]:
    """Each logged instrument's recent value, trend and verdict, in instruments.csv's column order."""
    total = log.instruments.total if log.instruments is not None else None
    if total is None:
        return []
    found = [_noise_verdict(log, total)]
    for column in ("norm_test", "inner_test", "ortho_test", "alpha", "lr_lambda_max"):
        window = _window(total, column, early=False)
        if window is None:
            continue
        value = median(v for _, v in window)
        verdict, threshold, message = _instrument_verdict(column, value, log)
        found.append(InstrumentVerdict(instrument=column, value=value, trend=_trend(window, value), verdict=verdict,
                                       threshold=threshold, window=_steps(window), message=message))  # fmt: skip
    return [verdict for verdict in found if verdict is not None]


def _window(total: BlockLog, column: str, early: bool) -> list[tuple[int, float]] | None:
    """(step, value) pairs of the judged window: the first half of the finite values, or the last third."""
    kept = [(s, v) for s, v in zip(*total.series(column)) if math.isfinite(v)]
    if len(kept) < MIN_INSTRUMENTED:
        return None
    return kept[: max(MIN_INSTRUMENTED, len(kept) // 2)] if early else kept[-max(MIN_INSTRUMENTED, len(kept) // 3):]


def _steps(window: list[tuple[int, float]]) -> str:
    return f"steps {window[0][0]}–{window[-1][0]}"


def _noise_verdict(log: RunLog, total: BlockLog) -> InstrumentVerdict | None:
    """The batch size against the noise scale smoothed over the first half of the run (later it grows without
    bound as the gradient shrinks near a minimum, which is no batch problem): ΣS / Σ(‖g‖² − S/B) over the window,
    its steps weighted alike, since the per-step moving-average ratio swings while the |G|² estimate is near 0.
    A full batch (or a batch of one, which has no covariance) is not judged."""
    batch = log.config.training.batch_size if log.config is not None else None
    window = _window(total, "trace_cov", early=True)
    if window is None or batch is None:
        return None
    grad_sq = dict(zip(total.steps, total.values("grad_sq_norm")))
    signal = sum((grad_sq[s] or 0.0) - v / batch for s, v in window)
    value = sum(v for _, v in window) / signal if signal > 0 else None  # None: the noise outweighs any signal
    limit = NOISE_SCALE_FACTOR * batch
    room = _steps_per_epoch(log) >= NOISE_SCALE_FACTOR  # a batch that many times larger still fits an epoch
    shown = "beyond measure (the noise outweighs the signal)" if value is None else format_number(value)
    if (value is None or value >= limit) and room:
        verdict, message = "batch far below the noise scale", (
            f"smoothed noise scale {shown} is at least {NOISE_SCALE_FACTOR:g}× the batch size {batch}: training "
            f"takes over {NOISE_SCALE_FACTOR + 1:g}× the steps a larger batch would need")  # fmt: skip
    else:
        verdict, message = "ok", f"smoothed noise scale {shown} against {NOISE_SCALE_FACTOR:g}× the batch size {batch}"
    smoothed = [(s, v) for s, v in zip(*total.series("noise_scale_smoothed")) if window[0][0] <= s <= window[-1][0]]
    return InstrumentVerdict(instrument="noise_scale_smoothed", value=value, trend=_trend(smoothed, value),
                             verdict=verdict, threshold=limit, window=_steps(window), message=message)  # fmt: skip


def _steps_per_epoch(log: RunLog) -> int:
    """Batches in an epoch: the step count logged with the first epoch."""
    first = log.metrics[0].get("step") if log.metrics else None
    return int(first) if first else 0


def _instrument_verdict(column: str, value: float, log: RunLog) -> tuple[str, float, str]:
    """(verdict, the threshold that decided it, a sentence saying so) for one instrument's judged value."""
    shown = format_number(value)
    if column in ("norm_test", "inner_test", "ortho_test"):
        limit = ORTHO_TEST_LIMIT if column == "ortho_test" else NORM_TEST_LIMIT
        if value > limit:
            return "noisy batch gradient", limit, f"{column} {shown} is above {limit:g}: the batch is small for it"
        return "ok", limit, f"{column} {shown} is at most {limit:g}"
    if column == "alpha":
        if value < ALPHA_LOW:
            return "steps too short", ALPHA_LOW, f"median α {shown} is below {ALPHA_LOW:g}: the steps barely move"
        if value > ALPHA_HIGH:
            return "overshooting", ALPHA_HIGH, f"median α {shown} is above {ALPHA_HIGH:g}: the steps overshoot"
        return "ok", ALPHA_HIGH, f"median α {shown} is within [{ALPHA_LOW:g}, {ALPHA_HIGH:g}]"
    climbing = _loss_climbs(log)
    if value > STABILITY_LIMIT:
        verdict = "beyond the stability limit" + (" with a climbing loss" if climbing else "")
        loss = "the training loss climbs" if climbing else "the training loss does not climb"
        return verdict, STABILITY_LIMIT, f"lr·λ_max {shown} is above {STABILITY_LIMIT:g} and {loss}"
    return "ok", STABILITY_LIMIT, f"lr·λ_max {shown} is at most {STABILITY_LIMIT:g}"


def _trend(window: list[tuple[int, float]], value: float | None) -> str:
    if len(window) < 2 or not value or not all(math.isfinite(v) for _, v in window):
        return "flat"
    steps = np.array([s for s, _ in window], dtype=float)
    slope = float(np.polyfit(steps, [v for _, v in window], 1)[0])
    change = slope * (steps[-1] - steps[0]) / abs(value)
    return "rising" if change > TREND_CHANGE else "falling" if change < -TREND_CHANGE else "flat"


def _loss_climbs(log: RunLog) -> bool:
    """Whether the training loss rises over the last third of the epochs (a straight-line fit)."""
    rows = [row for row in log.metrics if _is_finite(row.get("train_loss")) and _is_finite(row.get("epoch"))]
    if len(rows) < 2:
        return False
    window = rows[-max(2, len(rows) // 3):]
    return float(np.polyfit([r["epoch"] for r in window], [r["train_loss"] for r in window], 1)[0]) > 0


def instrument_rate_evidence(instruments: list[InstrumentVerdict]) -> tuple[bool, dict[str, Any], str] | None:
    """What the instruments say of the learning rate: (too high?, evidence, a sentence), or None if nothing."""
    by_name = {v.instrument: v for v in instruments}
    alpha, sharp = by_name.get("alpha"), by_name.get("lr_lambda_max")
    if sharp is not None and sharp.verdict.endswith("with a climbing loss"):
        return True, {"lr_lambda_max": sharp.value, "stability_limit": STABILITY_LIMIT}, sharp.message
    if alpha is not None and alpha.verdict != "ok":
        high = alpha.verdict == "overshooting"
        return high, {"alpha_median": alpha.value, "alpha_threshold": alpha.threshold}, alpha.message
    return None


def _instrument_rate_diagnosis(log: RunLog, high: bool, rate_evidence: tuple[bool, dict[str, Any], str] | None,
                               fastest: LayerSummary | None) -> Diagnosis:  # fmt: skip
    """A learning-rate diagnosis the instruments decided (the update ratio alone did not, or said otherwise)."""
    evidence = dict(rate_evidence[1]) if rate_evidence is not None else {}
    if fastest is not None:
        evidence["update_ratio_median"] = fastest.update_ratio_median
    advice = f"{'lower' if high else 'raise'} `optimizer.lr`"
    if log.config is not None:
        lr = log.config.optimizer.lr
        evidence["lr"] = lr
        advice += f" from {lr:g} to about {float(f'{lr / 10 if high else lr * 10:.1g}'):g}"
    if high:
        advice += ", or set `optimizer.clip_grad_norm: 1.0`"
    return Diagnosis(kind="learning_rate_high" if high else "learning_rate_low", layer=None, evidence=evidence,
                     message=rate_evidence[2] if rate_evidence is not None else "", suggestion=advice)  # fmt: skip


def _gradient_noise(log: RunLog, instruments: list[InstrumentVerdict]) -> list[Diagnosis]:
    """The batch is far smaller than the smoothed gradient noise scale: its steps are mostly noise."""
    verdict = next((v for v in instruments if v.instrument == "noise_scale_smoothed" and v.verdict != "ok"), None)
    if verdict is None or log.config is None or log.config.training.batch_size is None:
        return []
    batch = log.config.training.batch_size
    epoch = _steps_per_epoch(log) * batch  # about the training set's size
    proposal = min(epoch, int(float(f"{verdict.value:.1g}"))) if verdict.value is not None else epoch
    return [Diagnosis(
        kind="gradient_noise", layer=None,
        evidence={"noise_scale_smoothed": verdict.value, "batch_size": batch, "threshold": NOISE_SCALE_FACTOR,
                  "window": verdict.window, "suggested_batch_size": proposal},
        message=f"over {verdict.window} the {verdict.message}",
        suggestion=f"raise `training.batch_size` from {batch} to about {proposal} (the noise scale, at most an "
                   "epoch), or lower `optimizer.lr` in proportion to average the noise over more steps",
    )]  # fmt: skip


def instrument_bands(batch: int | None) -> dict[str, list[tuple[float | None, float | None, str]]]:
    """Each instrument's verdict bands for charts: (low, high, verdict), None an open end; the thresholds above."""
    test = [(None, NORM_TEST_LIMIT, "ok"), (NORM_TEST_LIMIT, None, "noisy batch gradient")]
    bands = {
        "norm_test": test, "inner_test": test,
        "ortho_test": [(None, ORTHO_TEST_LIMIT, "ok"), (ORTHO_TEST_LIMIT, None, "noisy batch gradient")],
        "alpha": [(None, ALPHA_LOW, "steps too short"), (ALPHA_LOW, ALPHA_HIGH, "ok"), (ALPHA_HIGH, None, "overshooting")],
        "lr_lambda_max": [(None, STABILITY_LIMIT, "ok"), (STABILITY_LIMIT, None, "beyond the stability limit")],
    }  # fmt: skip
    if batch is not None:
        limit = NOISE_SCALE_FACTOR * batch
        bands["noise_scale_smoothed"] = [(None, limit, "ok"), (limit, None, "batch far below the noise scale")]
    return bands
