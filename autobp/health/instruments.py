"""The training instruments' verdicts (instruments.csv), what they say of the learning rate, and their bands for
charts.

Each instrument is judged on the `total` rows over a window of the instrumented steps: the noise scale over the
first half (it grows without bound as the gradient shrinks near a minimum, which is no batch problem), the others
over the last third. A verdict needs at least MIN_INSTRUMENTED values there.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from autobp.common.text import format_number
from autobp.health.course import loss_course, steps_per_epoch
from autobp.health.layers import median
from autobp.health.thresholds import (
    ALPHA_HIGH, ALPHA_LOW, MIN_INSTRUMENTED, NOISE_SCALE_FACTOR, NORM_TEST_LIMIT, ORTHO_TEST_LIMIT, STABILITY_LIMIT,
    TREND_CHANGE,
)
from autobp.rundir.instruments import BlockLog
from autobp.rundir.reader import RunLog
from autobp.rundir.summary import InstrumentVerdict


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
    room = steps_per_epoch(log) >= NOISE_SCALE_FACTOR  # a batch that many times larger still fits an epoch
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
        nearer = min((ALPHA_LOW, ALPHA_HIGH), key=lambda bound: abs(value - bound))  # the bound it is closer to
        return "ok", nearer, f"median α {shown} is within [{ALPHA_LOW:g}, {ALPHA_HIGH:g}]"
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


def noise_swings(instruments: list[InstrumentVerdict]) -> bool:
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
