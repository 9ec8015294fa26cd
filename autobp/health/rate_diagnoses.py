"""Diagnoses of the optimizer: a learning rate too high or too low, a batch far below the gradient noise scale."""

from __future__ import annotations

from typing import Any

from autobp.common.text import format_number
from autobp.config.models import Config
from autobp.health.course import Course, steps_per_epoch, training_score
from autobp.health.findings import NOISE, OPTIMIZER, SLOW, Finding, listing
from autobp.health.instruments import RateEvidence
from autobp.health.layer_diagnoses import BlowUp
from autobp.health.layers import LayerSummary
from autobp.health.remedies import adaptive_change, diagnosis, longer, lower_rate_remedy, lr_change, remedy_from
from autobp.health.thresholds import (
    EARLY_UPDATE_RATIO, HEALTHY_UPDATE_RATIO, LR_STEP, MAX_LR_RAISE, NOISE_SCALE_FACTOR, UNDERFIT_SCORE,
    UNSTABLE_SHARE, UPDATE_RATIO_HIGH, UPDATE_RATIO_JUMP, UPDATE_RATIO_LOW,
)
from autobp.rundir.reader import RunLog
from autobp.rundir.summary import InstrumentVerdict


def rate_high(layers: list[LayerSummary], course: Course | None, config: Config | None, later: list[Finding],
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
        reasons.append(f"{listing([kind.replace('_', ' ') for kind in kinds])} appeared after a healthy first step")
    if not reasons:
        return []
    layer = blow_up.layer if blow_up is not None and blow_up.layer else (fastest or jump).name if fastest or jump else None
    evidence["lr"] = config.optimizer.lr if config else None
    return [Finding(OPTIMIZER, diagnosis(
        "learning_rate_high", layer, "; ".join(reasons), evidence,
        lower_rate_remedy(config, fastest.update_ratio_median if fastest else None,
                          jump.update_ratio_max if jump else None)))]  # fmt: skip


def rate_low(log: RunLog, layers: list[LayerSummary], course: Course | None, config: Config | None,
             rate_evidence: RateEvidence | None) -> list[Finding]:  # fmt: skip
    """The layer that moves most barely moves (or the instruments' step quality says the steps fall short), and the
    loss is not done: it still falls, or the training data is not fitted. Lower layers may move little because
    their signal vanishes, which a larger rate would not cure."""
    moving = [layer for layer in layers if layer.update_ratio_median]
    if course is None or course.swings() or (rate_evidence is not None and rate_evidence[0]):
        return []
    fastest = max(moving, key=lambda layer: layer.update_ratio_median) if moving else None
    ratio = fastest.update_ratio_median if fastest else None
    score = training_score(log, config)
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
        return [lr_change(config, factor), *adaptive_change(config), longer(config)]

    remedy = remedy_from(config, "the steps are too small to learn at a useful pace", changes)
    return [Finding(SLOW, diagnosis(
        "learning_rate_low", fastest.name if fastest else None,
        "; ".join(reasons) + ", and the training loss is not done falling", evidence, remedy))]  # fmt: skip


def gradient_noise(log: RunLog, instruments: list[InstrumentVerdict], course: Course | None,
                   found: list[Finding]) -> list[Finding]:  # fmt: skip
    """The batch is far smaller than the smoothed gradient noise scale (instruments.csv): its steps are mostly
    noise. Not where the start or the learning rate already explains the run, nor where the run fitted its data."""
    verdict = next((v for v in instruments if v.instrument == "noise_scale_smoothed" and v.verdict != "ok"), None)
    config = log.config
    if verdict is None or config is None or config.training.batch_size is None or found:
        return []
    # A small batch costs steps, not quality: it is the most data-efficient (McCandlish et al. 2018). It is the
    # cause only of a run that ran out of steps before it fitted: the loss still falling, or a poor training fit.
    score = training_score(log, config)
    if course is not None and not course.still_falling() and (score is None or score >= UNDERFIT_SCORE):
        return []
    batch = config.training.batch_size
    epoch = steps_per_epoch(log) * batch  # about the training set's size
    # The noise scale grows as the loss falls (McCandlish et al. 2018), so a batch of the early estimate soon falls
    # below it again: the proposal leaves it the verdict's factor of room to grow.
    grown = NOISE_SCALE_FACTOR * verdict.value if verdict.value is not None else None
    proposal = min(epoch, int(float(f"{grown:.1g}"))) if grown is not None else epoch

    def changes(config: Config) -> list[dict[str, Any]]:
        # A larger batch averages the noise away; a rate lowered in proportion averages it over more steps.
        return [{"training.batch_size": proposal}, lr_change(config, batch / proposal)]

    remedy = remedy_from(config, "a batch above the noise scale, which grows as the loss falls, makes each step mostly "
                         "signal", changes)  # fmt: skip
    return [Finding(NOISE, diagnosis(
        "gradient_noise", None, f"over {verdict.window} the {verdict.message}",
        {"noise_scale_smoothed": verdict.value, "batch_size": batch, "threshold": NOISE_SCALE_FACTOR,
         "window": verdict.window, "suggested_batch_size": proposal}, remedy))]  # fmt: skip
