"""The one gradient-health judgement: per-layer verdicts and run-level diagnoses from a run's logs.

`train` prints it at the end of a run and stores it in summary.json; `report`, `compare` and sweeps read the same
judgement, made by this module from the same files, so every output agrees. Every threshold lives here.

Each diagnosis names a cause and carries `fix`, the config change to try first (dotted keys to values, exactly what
`--set` takes, valid for the run's own config.yaml), and `alternatives`; its prose `suggestion` is written from them.
Causes come before their symptoms: a problem already present at the first logged step comes from the
initialisation or the data, one that appears later while the loss climbs or swings comes from the optimizer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autobp.common.text import format_number
from autobp.model.network import fitting_init, fitting_std
from autobp.rundir.instruments import BlockLog
from autobp.rundir.logs import (
    DEAD_FRACTION, GRAD_MEAN, GRAD_NORM_B, GRAD_NORM_W, GRAD_STD, OUT_GRAD_NORM, SATURATED_FRACTION, UPDATE_RATIO,
    WEIGHT_NORM,
)  # fmt: skip
from autobp.rundir.reader import RunLog, read_run
from autobp.rundir.summary import Diagnosis, Health, InstrumentVerdict, LayerVerdict
from autobp.config.catalog import ACTIVATIONS, SOURCES, task_metric, task_of_loss
from autobp.config.models import MAX_EPOCHS, MAX_WIDTH, Config, TrainingConfig
from autobp.config.configfile import override_value

SIGNAL_RATIO = 100.0  # vanishing/exploding: median ‖∂L/∂f‖ of a layer vs the output layer's, either way
INACTIVE_FRACTION = 0.5  # dead (ReLU) or saturated (tanh, sigmoid) share of a layer's units; at the first logged
# step, reaching it (half the units) already makes the initialisation or the data the cause
DYING = ("relu",)  # activations whose units stop learning for good below zero (leaky_relu and elu keep a gradient)
SATURATION = 3.0  # a squashing unit is saturated where |pre-activation| exceeds this for the whole batch
MIN_GRAD_NORM = 1e-8  # vanishing: a layer's median ‖∂L/∂W‖ below this
UPDATE_RATIO_HIGH = 1e-1  # learning rate: median ‖ΔW‖/‖W‖ over the logged steps of the layer that moves most
UPDATE_RATIO_JUMP = 0.5  # learning rate high: a logged step changed a layer's weights by half their norm or more
UPDATE_RATIO_LOW = 1e-4
HEALTHY_UPDATE_RATIO = 1e-3  # a healthy median update ratio, which a lowered learning rate aims at…
HEALTHY_LARGEST_STEP = 2e-2  # …and a healthy largest one (the first steps of a healthy run are about this)
EARLY_UPDATE_RATIO = 1e-2  # a raised learning rate aims at the update ratio of a healthy run's early steps
INIT_SCALE_HIGH = 4.0  # initialisation: a layer's first weight norm against the norm of its fitting init (he or
INIT_SCALE_LOW = 1 / 8  # xavier for its shape), above or below which the initialisation is the cause
LR_STEP = 10.0  # a learning-rate fix changes optimizer.lr by at least this factor…
MAX_LR_CUT = 1e3  # …and at most this one down (a run that blew up has absurd update ratios)…
MAX_LR_RAISE = 1e4  # …or up
CLIMB = 0.5  # learning rate high: the training loss ends more than 50% above its lowest value…
CLIMB_SHARE = 0.2  # …and the climb is at least a fifth of the first epoch's loss above that lowest value
UNSTABLE_SHARE = 0.3  # learning rate high: at least this share of the epochs raise the training loss…
UNSTABLE_RISE = 0.05  # …each by more than this share of the loss's range over the run and of its level
OVERFIT_MIN_EPOCHS = 6  # overfitting: judged from this many epochs with both losses on, when the validation loss
OVERFIT_RISE = 0.2  # ends more than 20% above its best value, while the training loss fell after that epoch…
OVERFIT_SHARE = 0.1  # …and the rise is at least a tenth of what the validation loss had gained up to its best
FIT_MIN_EPOCHS = 10  # under this many epochs a poor fit means too little training, not too small a network
FALLING_SHARE = 0.25  # not converged: the last third of the epochs made this share of the whole decline…
FALLING_LEVEL = 0.01  # …and lowered the loss by at least this share of its level there
UNDERFIT_SCORE = 0.9  # underfitting: the best training accuracy or R² stays below this…
UNDERFIT_GAP = 0.8  # …while the training loss is at least this share of the validation loss (nothing memorised)
EPOCHS_FACTOR = 4  # not converged: train this many times as long
WIDEN_FACTOR = 4  # underfitting: hidden layers this many times wider…
MIN_FIX_WIDTH = 32  # …and at least this wide
EARLY_STOPPING = {"monitor": "val_loss", "patience": 10}  # overfitting's fix
WEIGHT_DECAY = 1e-3
DROPOUT = 0.2
CLIP_GRAD_NORM = 1.0
ADAPTIVE = {"name": "adam", "lr": 1e-3}  # the optimizer a plain-SGD run is moved to as an alternative

# The causes for which `early_terminate: health` stops a sweep's trial: a blow-up, vanishing, dead or saturated
# layers, a learning rate far off. Overfitting, underfitting, not converging and noise are left to the trial's own
# end (early stopping, its ranking): a few epochs in, they are no reason to give up on it.
FATAL_KINDS = frozenset({"exploding_gradients", "vanishing_gradients", "dead_units", "saturated_units",
                         "learning_rate_high", "learning_rate_low"})  # fmt: skip
# A learning rate is far off, and fatal, when the update ratio is this many times beyond its threshold, or (too
# high) the loss or a single step shows it too: the first steps of a good rate can cross the threshold itself
# (Adam's first steps move small weights a lot) while the loss falls as it should.
FAR_OFF = 10.0

# Gradient-log columns whose non-finite values mean the run blew up; update_ratio is left out because it is
# infinite by definition for a weight matrix of zeros.
BLOW_UP_COLUMNS = (GRAD_NORM_W, GRAD_NORM_B, WEIGHT_NORM, OUT_GRAD_NORM, GRAD_MEAN, GRAD_STD)


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


# --- verdicts ----------------------------------------------------------------------------------------------------


def judge(log: RunLog, layers: list[LayerSummary] | None = None) -> Health:
    """The run's gradient health: one verdict per layer and every diagnosis, the cause first."""
    layers = summarize_layers(log) if layers is None else layers
    verdicts = layer_verdicts(layers)
    instruments = instrument_verdicts(log)
    return Health(layers=verdicts, diagnoses=diagnose(log, layers, verdicts, instruments), instruments=instruments)


def fatal_cause(run_dir: Path) -> Diagnosis | None:
    """The cause (first diagnosis) of the run's judgement from its files so far, if it is fatal."""
    diagnoses = judge(read_run(run_dir)).diagnoses
    return diagnoses[0] if diagnoses and is_fatal(diagnoses[0]) else None


def is_fatal(diagnosis: Diagnosis) -> bool:
    """Whether a diagnosis is a reason to give up on a run: one of FATAL_KINDS, a learning rate FAR_OFF."""
    if diagnosis.kind not in FATAL_KINDS:
        return False
    evidence = diagnosis.evidence
    ratio = evidence.get("update_ratio_median")
    if diagnosis.kind == "learning_rate_high":
        # A single step larger than the weights, a loss that climbs or swings, layers the steps broke.
        beside = {"update_ratio_max", "lowest_train_loss", "unstable", "appeared_later"} & evidence.keys()
        return bool(beside) or ratio is not None and ratio >= FAR_OFF * UPDATE_RATIO_HIGH
    if diagnosis.kind == "learning_rate_low":
        return ratio is not None and ratio * FAR_OFF <= UPDATE_RATIO_LOW
    return True


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


# --- fixes -------------------------------------------------------------------------------------------------------

_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(\w+)$")
NO_CONFIG = "config.yaml could not be read, so no change can be proposed for it"


@dataclass
class Remedy:
    """What to change for a diagnosis: the fix to try first, the alternatives best first, and why they help."""

    fix: dict[str, Any]
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""

    def suggestion(self) -> str:
        """The prose, written from the fix and the alternatives so that it cannot say anything else."""
        if not self.fix:
            return f"no config change can be proposed: {self.reason}"
        text = f"set {describe_change(self.fix)}" + (f" ({self.reason})" if self.reason else "")
        return text + "".join(f"; {'else' if i == 0 else 'or'} try {describe_change(change)}"
                              for i, change in enumerate(self.alternatives))  # fmt: skip


def describe_change(change: dict[str, Any]) -> str:
    """A change as the user reads it: `key: value` pairs, per-layer keys with one value grouped by layer range."""
    parts: dict[tuple[str, str], list[int]] = {}
    for key, value in change.items():
        match = _LAYER_KEY.match(key)
        if match:
            parts.setdefault((f"model.layers.{{}}.{match[2]}", override_value(value)), []).append(int(match[1]))
        else:
            parts[(key, override_value(value))] = []
    return ", ".join(f"`{key.format(_index_range(indexes))}: {value}`" for (key, value), indexes in parts.items())


def _index_range(indexes: list[int]) -> str:
    if len(indexes) > 2 and indexes == list(range(indexes[0], indexes[-1] + 1)):
        return f"{indexes[0]}–{indexes[-1]}"
    return ",".join(map(str, indexes))


def diagnosis(kind: str, layer: str | None, message: str, evidence: dict[str, Any], remedy: Remedy,
              layers: Sequence[str] = ()) -> Diagnosis:  # fmt: skip
    """A diagnosis whose suggestion is its remedy's prose."""
    return Diagnosis(kind=kind, layer=layer, layers=list(layers), evidence=evidence, message=message,
                     suggestion=remedy.suggestion(), fix=remedy.fix, alternatives=remedy.alternatives)  # fmt: skip


def _rounded(value: float) -> float:
    return float(f"{value:.1g}")


def _hidden(config: Config) -> range:
    return range(len(config.model.layers) - 1)


def _each(indexes: Iterable[int], key: str, value: Any) -> dict[str, Any]:
    return {f"model.layers.{index}.{key}": value for index in indexes}


def _init_change(config: Config) -> dict[str, Any]:
    """Every layer whose initialisation does not fit its activation moved to the one that does."""
    return {f"model.layers.{index}.init": fitting_init(layer.activation)
            for index, layer in enumerate(config.model.layers) if layer.init != fitting_init(layer.activation)}  # fmt: skip


def _lr_change(config: Config, factor: float) -> dict[str, Any]:
    return {"optimizer.lr": _rounded(config.optimizer.lr * factor)}


def _adaptive_change(config: Config) -> list[dict[str, Any]]:
    """Adam at its usual rate, as an alternative for the optimizers without a per-weight step size."""
    if config.optimizer.name in ("adam", "adamw", "rmsprop"):
        return []
    return [{"optimizer.name": ADAPTIVE["name"], "optimizer.lr": ADAPTIVE["lr"]}]


def _longer(config: Config) -> dict[str, Any]:
    """Train longer: without the step budget if one ended the run, else EPOCHS_FACTOR times the epochs, and at least
    the default number of epochs."""
    training = config.training
    if training.max_steps is not None:
        return {"training.max_steps": None}
    epochs = max(training.epochs * EPOCHS_FACTOR, TrainingConfig.model_fields["epochs"].default)
    return {"training.epochs": min(epochs, MAX_EPOCHS)}


def _without_empty(changes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [change for change in changes if change]


def _remedy(config: Config | None, reason: str, changes: Any) -> Remedy:
    """A remedy from `changes(config)`, a list of changes best first; none without a readable config."""
    if config is None:
        return Remedy({}, [], NO_CONFIG)
    found = _without_empty(changes(config))
    return Remedy(found[0], found[1:], reason) if found else Remedy({}, [], reason)


# --- what the loss did ---------------------------------------------------------------------------------------------


@dataclass
class Course:
    """The training loss epoch by epoch (metrics.csv) and what it says about the cause."""

    epochs: list[int]
    losses: list[float]

    @property
    def first(self) -> float:
        return self.losses[0]

    @property
    def lowest(self) -> float:
        return min(self.losses)

    @property
    def last(self) -> float:
        return self.losses[-1]

    def climbs(self) -> bool:
        """The loss ends well above its lowest value: the steps throw the weights out of a minimum they found."""
        above = self.last - self.lowest
        return above > CLIMB * abs(self.lowest) and above > CLIMB_SHARE * abs(self.first - self.lowest)

    def unstable(self) -> bool:
        """The loss rises from one epoch to the next in a good share of the epochs, each time by a visible amount."""
        if len(self.losses) < 4:
            return False
        spread = max(self.losses) - self.lowest
        # A rise counts against the loss's range and its level alike: a flat loss's jitter is no swing.
        rises = sum(b - a > UNSTABLE_RISE * max(spread, abs(a)) for a, b in zip(self.losses, self.losses[1:]))
        return spread > 0 and rises >= UNSTABLE_SHARE * (len(self.losses) - 1)

    def swings(self) -> bool:
        """Climbs or is unstable: the evidence that forbids ever raising the learning rate."""
        return self.climbs() or self.unstable()

    def recent_decline(self) -> tuple[float, float]:
        """(share of the whole decline made over the last third of the epochs, that drop relative to the level)."""
        window = self.losses[-max(2, len(self.losses) // 3):]
        whole = self.first - self.last
        drop = window[0] - window[-1] if len(self.losses) > 2 else whole
        if whole <= 0 or drop <= 0:
            return 0.0, 0.0
        return drop / whole, drop / max(abs(window[0]), 1e-12)

    def still_falling(self) -> bool:
        share, level = self.recent_decline()
        return share >= FALLING_SHARE and level >= FALLING_LEVEL


def loss_course(log: RunLog) -> Course | None:
    """The finite training losses by epoch; None without any."""
    rows = [row for row in log.metrics if _is_finite(row.get("train_loss")) and _is_finite(row.get("epoch"))]
    if not rows:
        return None
    return Course([int(row["epoch"]) for row in rows], [float(row["train_loss"]) for row in rows])


# --- diagnoses ----------------------------------------------------------------------------------------------------

# Ranks, the cause first: what the initial weights or the data already show at the first logged step, then the
# optimizer (its learning rate, its batch), then problems that appear later without such a cause, then the fit.
AT_START, OPTIMIZER, LATER, NOISE, SLOW, FIT = range(6)


@dataclass
class Finding:
    rank: int
    diagnosis: Diagnosis


def diagnose(log: RunLog, layers: list[LayerSummary], verdicts: list[LayerVerdict],
             instruments: list[InstrumentVerdict] | None = None) -> list[Diagnosis]:  # fmt: skip
    """Every diagnosis the logs trigger, the cause first; empty for a healthy run.

    A problem present from the first logged step is the initialisation's (or the data's); vanishing, exploding,
    saturated or dead layers that appear only later, or a blow-up after a finite start, are the steps' doing: a
    learning rate too high. The fit (a too-low rate, under- or overfitting, not converged) is judged only where no
    such problem is found, and a rate is never called too low while the loss climbs or swings (or the instruments
    call it too high). The instruments, where logged, add their step quality and curvature to the learning-rate
    evidence and decide gradient_noise."""
    instruments = instrument_verdicts(log) if instruments is None else instruments
    rate_evidence = instrument_rate_evidence(instruments)
    course = loss_course(log)
    config = log.config
    # Dead or saturated units explain a vanishing signal, not the other way round: they are listed first.
    blow_up = _blow_up(log, layers)
    found = [*_exploding_from_start(blow_up, config), *_init_scale(layers, config), *_inactive_findings(layers, config)]
    found += _signal_findings(layers, verdicts, config, "vanishing")
    found += _signal_findings(layers, verdicts, config, "exploding")
    started_sick = any(finding.rank == AT_START for finding in found)
    later = [] if started_sick else [finding for finding in found if finding.rank == LATER]
    found += _rate_high(layers, course, config, later, rate_evidence,
                        blow_up if blow_up is not None and not blow_up.at_start else None, _noise_swings(instruments))
    found += _gradient_noise(log, instruments, course, found)
    if not found:
        found += _rate_low(log, layers, course, config, rate_evidence)
    if course is not None and not found:
        found += _overfitting(log, config)
        if not (log.summary and log.summary.early_stopping):  # stopped on purpose: neither too small nor too short
            found += _underfitting(log, course, config) or _not_converged(log, course, config)
    ordered = sorted(found, key=lambda finding: finding.rank)
    kinds = [finding.diagnosis.kind for finding in ordered]
    return [f.diagnosis for index, f in enumerate(ordered) if f.diagnosis.kind not in kinds[:index]]


@dataclass
class BlowUp:
    """The first non-finite value: where, and whether the first logged step already had it (or an exploding
    signal), which makes the initial weights its cause rather than the steps taken."""

    step: int
    layer: str | None
    evidence: dict[str, Any]
    message: str
    at_start: bool


def _blow_up(log: RunLog, layers: list[LayerSummary]) -> BlowUp | None:
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


def _exploding_from_start(blow_up: BlowUp | None, config: Config | None) -> list[Finding]:
    if blow_up is None or not blow_up.at_start:
        return []
    return [Finding(AT_START, diagnosis("exploding_gradients", blow_up.layer,
                                        blow_up.message + ", already at the first step", blow_up.evidence,
                                        _init_remedy(config), [blow_up.layer] if blow_up.layer else []))]  # fmt: skip


def _exploding_at_start(layers: list[LayerSummary]) -> list[LayerSummary]:
    reference = layers[-1].out_grad_norm_first if layers else None
    if not reference or not _is_finite(reference):
        return []
    return [layer for layer in layers[:-1]
            if _is_finite(layer.out_grad_norm_first) and layer.out_grad_norm_first >= SIGNAL_RATIO * reference]


def _vanishing_at_start(layers: list[LayerSummary]) -> bool:
    reference = layers[-1].out_grad_norm_first if layers else None
    if not reference or not _is_finite(reference):
        return False
    return any(_is_finite(layer.out_grad_norm_first) and layer.out_grad_norm_first * SIGNAL_RATIO <= reference
               for layer in layers[:-1])  # fmt: skip


def _rate_high(layers: list[LayerSummary], course: Course | None, config: Config | None, later: list[Finding],
               rate_evidence: RateEvidence | None, blow_up: BlowUp | None, noisy: bool) -> list[Finding]:  # fmt: skip
    """A blow-up after a finite start, steps far larger than the weights, a loss that climbs back or swings (unless
    `noisy`: the batch's noise explains the swings), layers that were healthy at the first logged step and broke later
    (nothing but the steps changed them), or the instruments' overshooting steps or curvature beyond the stability
    limit."""
    moving = [layer for layer in layers if layer.update_ratio_median]
    fastest = max(moving, key=lambda layer: layer.update_ratio_median) if moving else None
    jumping = [layer for layer in layers if layer.update_ratio_max]
    jump = max(jumping, key=lambda layer: layer.update_ratio_max) if jumping else None
    reasons, evidence = [], {}
    if blow_up is not None:
        evidence.update(blow_up.evidence)
        reasons.append(blow_up.message + ", after a finite start: the steps threw the weights out of range")
    if fastest is not None and fastest.update_ratio_median > UPDATE_RATIO_HIGH:
        evidence.update(update_ratio_median=fastest.update_ratio_median, threshold=UPDATE_RATIO_HIGH)
        reasons.append(f"the median update/weight ratio ‖ΔW‖/‖W‖ of {fastest.name}, the layer that moves most, is "
                       f"{format_number(fastest.update_ratio_median)}, above {UPDATE_RATIO_HIGH:g} (about "
                       f"{HEALTHY_UPDATE_RATIO:g} is healthy)")  # fmt: skip
    if jump is not None and jump.update_ratio_max > UPDATE_RATIO_JUMP:
        evidence.update(update_ratio_max=jump.update_ratio_max, jump_threshold=UPDATE_RATIO_JUMP)
        reasons.append(f"a single step changed {jump.name}'s weights by {format_number(jump.update_ratio_max)} of "
                       f"their norm (more than {UPDATE_RATIO_JUMP:g})")  # fmt: skip
    if course is not None and course.climbs():
        evidence.update(lowest_train_loss=course.lowest, last_train_loss=course.last)
        reasons.append(f"the training loss climbed back from {format_number(course.lowest)} to "
                       f"{format_number(course.last)}")  # fmt: skip
    elif course is not None and course.unstable() and not noisy:
        evidence.update(unstable=True)
        reasons.append(f"the training loss rose in at least {UNSTABLE_SHARE:.0%} of the epochs")
    if rate_evidence is not None and rate_evidence[0]:
        evidence.update(rate_evidence[1])
        reasons.append(rate_evidence[2])
    if later:
        kinds = list(dict.fromkeys(finding.diagnosis.kind for finding in later))
        evidence.update(appeared_later=kinds)
        reasons.append(f"{_listing([kind.replace('_', ' ') for kind in kinds])} appeared after a healthy first step")
    if not reasons:
        return []
    layer = blow_up.layer if blow_up is not None and blow_up.layer else (fastest or jump).name if fastest or jump else None
    evidence["lr"] = config.optimizer.lr if config else None
    return [Finding(OPTIMIZER, diagnosis(
        "learning_rate_high", layer, "; ".join(reasons), evidence,
        _lower_rate_remedy(config, fastest.update_ratio_median if fastest else None,
                           jump.update_ratio_max if jump else None)))]  # fmt: skip


def _lower_rate_remedy(config: Config | None, typical: float | None, largest: float | None) -> Remedy:
    """A learning rate lowered to bring the steps to a healthy size, by at least LR_STEP."""

    def changes(config: Config) -> list[dict[str, Any]]:
        # ‖ΔW‖ scales about linearly with the learning rate for every optimizer autobp has.
        wanted = [HEALTHY_UPDATE_RATIO / typical if typical else 1.0, HEALTHY_LARGEST_STEP / largest if largest else 1.0]
        factor = min(max(min(wanted), 1 / MAX_LR_CUT), 1 / LR_STEP)
        clip = [] if config.optimizer.clip_grad_norm else [{"optimizer.clip_grad_norm": CLIP_GRAD_NORM}]
        return [_lr_change(config, factor), _lr_change(config, factor / LR_STEP), *clip]

    return _remedy(config, "smaller steps stay inside the minimum the loss is looking for", changes)


def _rate_low(log: RunLog, layers: list[LayerSummary], course: Course | None, config: Config | None,
              rate_evidence: RateEvidence | None) -> list[Finding]:  # fmt: skip
    """The layer that moves most barely moves (or the instruments' step quality says the steps fall short), and the
    loss is not done: it still falls, or the training data is not fitted. Lower layers may move little because
    their signal vanishes, which a larger rate would not cure."""
    moving = [layer for layer in layers if layer.update_ratio_median]
    if course is None or course.swings() or (rate_evidence is not None and rate_evidence[0]):
        return []
    fastest = max(moving, key=lambda layer: layer.update_ratio_median) if moving else None
    ratio = fastest.update_ratio_median if fastest else None
    score = _training_score(log, config)
    slow = ratio is not None and ratio < UPDATE_RATIO_LOW
    if not (slow or rate_evidence is not None) or not (course.still_falling() or (score or 0.0) < UNDERFIT_SCORE):
        return []
    evidence: dict[str, Any] = {"update_ratio_median": ratio, "threshold": UPDATE_RATIO_LOW,
                                "lr": config.optimizer.lr if config else None}  # fmt: skip
    reasons = []
    if slow:
        reasons.append(f"the median update/weight ratio ‖ΔW‖/‖W‖ of {fastest.name}, the layer that moves most, is "
                       f"{format_number(ratio)}, below {UPDATE_RATIO_LOW:g} (about {HEALTHY_UPDATE_RATIO:g} is "
                       "healthy)")  # fmt: skip
    if rate_evidence is not None:
        evidence.update(rate_evidence[1])
        reasons.append(rate_evidence[2])

    def changes(config: Config) -> list[dict[str, Any]]:
        factor = min(max(EARLY_UPDATE_RATIO / ratio, LR_STEP), MAX_LR_RAISE) if slow else LR_STEP
        return [_lr_change(config, factor), *_adaptive_change(config), _longer(config)]

    remedy = _remedy(config, "the steps are too small to learn at a useful pace", changes)
    return [Finding(SLOW, diagnosis(
        "learning_rate_low", fastest.name if fastest else None,
        "; ".join(reasons) + ", and the training loss is not done falling", evidence, remedy))]  # fmt: skip


def _gradient_noise(log: RunLog, instruments: list[InstrumentVerdict], course: Course | None,
                    found: list[Finding]) -> list[Finding]:  # fmt: skip
    """The batch is far smaller than the smoothed gradient noise scale (instruments.csv): its steps are mostly
    noise. Not where the start or the learning rate already explains the run, nor where the run fitted its data."""
    verdict = next((v for v in instruments if v.instrument == "noise_scale_smoothed" and v.verdict != "ok"), None)
    config = log.config
    if verdict is None or config is None or config.training.batch_size is None or found:
        return []
    # A small batch costs steps, not quality: it is the most data-efficient (McCandlish et al. 2018). It is the
    # cause only of a run that ran out of steps before it fitted: the loss still falling, or a poor training fit.
    score = _training_score(log, config)
    if course is not None and not course.still_falling() and (score is None or score >= UNDERFIT_SCORE):
        return []
    batch = config.training.batch_size
    epoch = _steps_per_epoch(log) * batch  # about the training set's size
    # The noise scale grows as the loss falls (McCandlish et al. 2018), so a batch of the early estimate soon falls
    # below it again: the proposal leaves it the verdict's factor of room to grow.
    grown = NOISE_SCALE_FACTOR * verdict.value if verdict.value is not None else None
    proposal = min(epoch, int(float(f"{grown:.1g}"))) if grown is not None else epoch

    def changes(config: Config) -> list[dict[str, Any]]:
        # A larger batch averages the noise away; a rate lowered in proportion averages it over more steps.
        return [{"training.batch_size": proposal}, _lr_change(config, batch / proposal)]

    remedy = _remedy(config, "a batch above the noise scale, which grows as the loss falls, makes each step mostly "
                     "signal", changes)  # fmt: skip
    return [Finding(NOISE, diagnosis(
        "gradient_noise", None, f"over {verdict.window} the {verdict.message}",
        {"noise_scale_smoothed": verdict.value, "batch_size": batch, "threshold": NOISE_SCALE_FACTOR,
         "window": verdict.window, "suggested_batch_size": proposal}, remedy))]  # fmt: skip


def _training_score(log: RunLog, config: Config | None) -> float | None:
    """The best training accuracy (classification) or R² (regression) of the run."""
    if config is None:
        return None
    column = f"train_{task_metric(task_of_loss(config.loss))}"
    return max(finite(row.get(column) for row in log.metrics), default=None)


def _init_scale(layers: list[LayerSummary], config: Config | None) -> list[Finding]:
    """Initial weights far larger or smaller than the fitting initialisation of their shape and activation (He
    for the ReLU family, Xavier for the others): too large saturates squashing units and makes the signal grow
    layer by layer, too small makes it shrink."""
    scales = []
    for layer in layers:
        if layer.shape is None or layer.activation is None or not _is_finite(layer.weight_norm_first):
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
            kind, remedy = "vanishing_gradients", _init_remedy(config)
        elif any(_squashing(layer.activation) for layer, _ in hit):
            kind, remedy = "saturated_units", _init_remedy(config)
        else:
            kind, remedy = "exploding_gradients", _init_remedy(config)
        times = scale if scale >= 1 else 1 / scale
        found.append(Finding(AT_START, diagnosis(
            kind, worst.name,
            f"the initial weights of {_listing([layer.name for layer, _ in hit])} are far {word} than their fitting "
            f"initialisation's ({fitting_init(worst.activation)} for {worst.activation}): {worst.name}'s weights "
            f"start at least {_times(times)} {word} (threshold {INIT_SCALE_HIGH:g}×)",
            {"scales": {layer.name: scale for layer, scale in hit}, "threshold_high": INIT_SCALE_HIGH,
             "threshold_low": INIT_SCALE_LOW, "at_first_step": True},
            remedy, [layer.name for layer, _ in hit])))  # fmt: skip
    return found


def _init_remedy(config: Config | None) -> Remedy:
    def changes(config: Config) -> list[dict[str, Any]]:
        clip = [] if config.optimizer.clip_grad_norm else [{"optimizer.clip_grad_norm": CLIP_GRAD_NORM}]
        return [_init_change(config), *clip]

    return _remedy(config, "weights scaled to their layer's width keep the signal's size from layer to layer",
                   changes)


def _signal_findings(layers: list[LayerSummary], verdicts: list[LayerVerdict], config: Config | None,
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
    remedy = _vanishing_remedy(config) if vanishing else _init_remedy(config)
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
        f"{_listing(names)} {'is' if len(names) == 1 else 'are'} {which} the output layer's signal{when}",
        {"signal": judged.signal, "signal_output_layer": output.signal, "ratio": factor, "threshold": SIGNAL_RATIO,
         "at_first_step": at_start},
        remedy, names))]  # fmt: skip


def _listing(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _times(ratio: float) -> str:
    return f"{ratio:,.0f}×" if ratio >= SIGNAL_RATIO else f"{ratio:.3g}×"


def _squashing(activation: str | None) -> bool:
    return activation is not None and ACTIVATIONS[activation].family == "squashing"


def _vanishing_remedy(config: Config | None) -> Remedy:
    def changes(config: Config) -> list[dict[str, Any]]:
        hidden = _hidden(config)
        if any(_squashing(config.model.layers[i].activation) for i in hidden):
            relu = {**_each(hidden, "activation", "relu"), **_each(hidden, "init", "he")}
            return [relu, _init_change(config), *_adaptive_change(config)]
        return [_init_change(config), _each(hidden, "activation", "leaky_relu"), *_adaptive_change(config)]

    return _remedy(config, "a signal that keeps its size through every layer reaches the first ones", changes)


def _inactive_findings(layers: list[LayerSummary], config: Config | None) -> list[Finding]:
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
        remedy = _dead_remedy(config) if kind == "dead_units" else _saturated_remedy(config)
        found.append(Finding(AT_START if at_start else LATER, diagnosis(
            kind, hit[0][0].name, f"{shares} units are {word} at the last logged step{when}",
            {"fractions": {layer.name: share for layer, share in hit}, "threshold": INACTIVE_FRACTION,
             "at_first_step": [layer.name for layer in at_start]},
            remedy, [layer.name for layer, _ in hit])))  # fmt: skip
    return found


def _dead_remedy(config: Config | None) -> Remedy:
    def changes(config: Config) -> list[dict[str, Any]]:
        standardize = [] if config.data.standardize else [{"data.standardize": True}]
        relu = [i for i in _hidden(config) if config.model.layers[i].activation == "relu"]
        return [*standardize, _each(relu, "activation", "leaky_relu"), _init_change(config),
                _lr_change(config, 1 / LR_STEP)]  # fmt: skip

    return _remedy(config, "a unit whose pre-activation is negative for every input never learns again", changes)


def _saturated_remedy(config: Config | None) -> Remedy:
    def changes(config: Config) -> list[dict[str, Any]]:
        standardize = [] if config.data.standardize else [{"data.standardize": True}]
        hidden = _hidden(config)
        relu = {**_each(hidden, "activation", "relu"), **_each(hidden, "init", "he")}
        return [*standardize, _init_change(config), relu]

    return _remedy(config, "a unit pinned at ±1 (or 0 and 1) passes almost no gradient", changes)


def _overfitting(log: RunLog, config: Config | None) -> list[Finding]:
    """The validation loss ends well above its best value while the training loss kept falling after that epoch;
    not where early stopping already restored the best epoch's weights."""
    rows = [row for row in log.metrics if all(_is_finite(row.get(key)) for key in ("epoch", "train_loss", "val_loss"))]
    stop = log.summary.early_stopping if log.summary else None
    if len(rows) < OVERFIT_MIN_EPOCHS or (stop is not None and stop.restored):
        return []
    best = min(rows, key=lambda row: row["val_loss"])
    first, last = rows[0], rows[-1]
    rise = last["val_loss"] - best["val_loss"]
    gained = first["val_loss"] - best["val_loss"]
    if (last["train_loss"] >= best["train_loss"] or rise <= OVERFIT_RISE * best["val_loss"]
            or rise < OVERFIT_SHARE * gained):  # fmt: skip
        return []

    def changes(config: Config) -> list[dict[str, Any]]:
        more = [{"data.n_samples": config.data.n_samples * 4}] if SOURCES[config.data.source].synthetic else []
        return [{"training.early_stopping": dict(EARLY_STOPPING)}, {"optimizer.weight_decay": WEIGHT_DECAY},
                _each(_hidden(config), "dropout", DROPOUT), *more]  # fmt: skip

    remedy = _remedy(config, "stop at the best validation loss and keep that epoch's weights", changes)
    best_epoch = int(best["epoch"])
    return [Finding(FIT, diagnosis(
        "overfitting", None,
        f"the validation loss was best at epoch {best_epoch} ({format_number(best['val_loss'])}) and ended at "
        f"{format_number(last['val_loss'])} (+{rise / best['val_loss']:.0%}), while the training loss fell from "
        f"{format_number(best['train_loss'])} to {format_number(last['train_loss'])}",
        {"best_epoch": best_epoch, "best_val_loss": best["val_loss"], "last_val_loss": last["val_loss"],
         "val_loss_rise": rise / best["val_loss"], "threshold": OVERFIT_RISE, "train_loss_at_best": best["train_loss"],
         "last_train_loss": last["train_loss"]},
        remedy))]  # fmt: skip


def _underfitting(log: RunLog, course: Course, config: Config | None) -> list[Finding]:
    """Healthy gradients and a loss that has levelled off, yet the training data is not fitted: the best training
    accuracy (or R²) stays low and the training loss is about the validation loss, so nothing was memorised."""
    if config is None or course.still_falling() or len(course.losses) < FIT_MIN_EPOCHS:
        return []
    column = f"train_{task_metric(task_of_loss(config.loss))}"
    score = _training_score(log, config)
    last = log.metrics[-1]
    train, val = last.get("train_loss"), last.get("val_loss")
    memorised = _is_finite(train) and _is_finite(val) and train < UNDERFIT_GAP * val
    if score is None or score >= UNDERFIT_SCORE or memorised:
        return []

    def changes(config: Config) -> list[dict[str, Any]]:
        layers = config.model.layers
        hidden = _hidden(config)
        linear = [i for i in hidden if ACTIVATIONS[layers[i].activation].family == "linear"]
        wider = {f"model.layers.{i}.units": min(max(layers[i].units * WIDEN_FACTOR, MIN_FIX_WIDTH), MAX_WIDTH)
                 for i in hidden}  # fmt: skip
        added = {"model.layers": [{"units": MIN_FIX_WIDTH, "activation": "tanh"},
                                  *[layer.model_dump(mode="json") for layer in layers]]}  # fmt: skip
        changes = [_each(linear, "activation", "tanh")] if linear else []
        return [*changes, wider, added, _longer(config)] if hidden else [added, _longer(config)]

    remedy = _remedy(config, "a network too small for its data cannot fit it however long it trains", changes)
    return [Finding(FIT, diagnosis(
        "underfitting", None,
        f"the training loss has levelled off at {format_number(course.last)} with healthy gradients, and the best "
        f"{column} is {format_number(score)}, below {UNDERFIT_SCORE:g}: the network cannot fit its training data",
        {column: score, "threshold": UNDERFIT_SCORE, "train_loss": train, "val_loss": val}, remedy))]  # fmt: skip


def _not_converged(log: RunLog, course: Course, config: Config | None) -> list[Finding]:
    """Training stopped while the loss was still clearly falling, or after too few epochs to fit the data."""
    score = _training_score(log, config)
    short = len(course.losses) < FIT_MIN_EPOCHS and score is not None and score < UNDERFIT_SCORE
    if not (course.still_falling() or short):
        return []
    share, level = course.recent_decline()

    def changes(config: Config) -> list[dict[str, Any]]:
        return [_longer(config), _lr_change(config, 3), *_adaptive_change(config)]

    if course.still_falling():
        reason = "the loss was still falling when training stopped"
        message = (f"the training loss was still falling when training stopped: the last third of the epochs made "
                   f"{share:.0%} of its whole decline and lowered it by {level:.0%}, to {format_number(course.last)}")
    else:
        reason = "a few epochs are too few to tell what the network can fit"
        message = (f"training stopped after {len(course.losses)} epochs (fewer than {FIT_MIN_EPOCHS}) with the best "
                   f"training {task_metric(task_of_loss(config.loss)) if config else 'score'} at {format_number(score)}, "
                   f"below {UNDERFIT_SCORE:g}")  # fmt: skip
    return [Finding(FIT, diagnosis(
        "not_converged", None, message,
        {"epochs": len(course.losses), "decline_share": share, "decline_level": level, "threshold_share": FALLING_SHARE,
         "threshold_level": FALLING_LEVEL, "training_score": score, "min_epochs": FIT_MIN_EPOCHS},
        _remedy(config, reason, changes)))]  # fmt: skip


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
    course = loss_course(log)
    climbing = course is not None and course.swings()
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


RateEvidence = tuple[bool, dict[str, Any], str]  # (too high?, evidence, a sentence saying so)


def instrument_rate_evidence(instruments: list[InstrumentVerdict]) -> RateEvidence | None:
    """What the instruments say of the learning rate: (too high?, evidence, a sentence), or None if nothing."""
    by_name = {v.instrument: v for v in instruments}
    alpha, sharp = by_name.get("alpha"), by_name.get("lr_lambda_max")
    if sharp is not None and sharp.verdict.endswith("with a climbing loss"):
        return True, {"lr_lambda_max": sharp.value, "stability_limit": STABILITY_LIMIT}, sharp.message
    if alpha is not None and alpha.verdict != "ok":
        high = alpha.verdict == "overshooting"
        return high, {"alpha_median": alpha.value, "alpha_threshold": alpha.threshold}, alpha.message
    return None


def _noise_swings(instruments: list[InstrumentVerdict]) -> bool:
    """The batch is far below the noise scale while the step quality α is in range: a loss that rises from epoch to
    epoch then follows the noisy batches, not steps that overshoot."""
    by_name = {v.instrument: v for v in instruments}
    noise, alpha = by_name.get("noise_scale_smoothed"), by_name.get("alpha")
    return noise is not None and noise.verdict != "ok" and alpha is not None and alpha.verdict == "ok"


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
