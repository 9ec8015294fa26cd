"""Diagnoses of the fit, judged only where the gradients and the optimizer are sound: overfitting, underfitting,
not converged."""

from __future__ import annotations

from typing import Any

from autobp.common.text import format_number
from autobp.config.catalog import ACTIVATIONS, SOURCES, task_metric, task_of_loss
from autobp.config.models import MAX_WIDTH, Config
from autobp.health.course import Course, training_score
from autobp.health.findings import FIT, Finding
from autobp.health.layers import is_finite
from autobp.health.remedies import adaptive_change, diagnosis, each, hidden_layers, longer, lr_change, remedy_from
from autobp.health.thresholds import (
    DROPOUT, EARLY_STOPPING, FALLING_LEVEL, FALLING_SHARE, FIT_MIN_EPOCHS, MIN_FIX_WIDTH, OVERFIT_MIN_EPOCHS,
    OVERFIT_RISE, OVERFIT_SHARE, UNDERFIT_GAP, UNDERFIT_SCORE, WEIGHT_DECAY, WIDEN_FACTOR,
)
from autobp.rundir.reader import RunLog


def overfitting(log: RunLog, config: Config | None) -> list[Finding]:
    """The validation loss ends well above its best value while the training loss kept falling after that epoch;
    not where early stopping already restored the best epoch's weights."""
    rows = [row for row in log.metrics if all(is_finite(row.get(key)) for key in ("epoch", "train_loss", "val_loss"))]
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
                each(hidden_layers(config), "dropout", DROPOUT), *more]  # fmt: skip

    remedy = remedy_from(config, "stop at the best validation loss and keep that epoch's weights", changes)
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


def underfitting(log: RunLog, course: Course, config: Config | None) -> list[Finding]:
    """Healthy gradients and a loss that has levelled off, yet the training data is not fitted: the best training
    accuracy (or R²) stays low and the training loss is about the validation loss, so nothing was memorised."""
    if config is None or course.still_falling() or len(course.losses) < FIT_MIN_EPOCHS:
        return []
    column = f"train_{task_metric(task_of_loss(config.loss))}"
    score = training_score(log, config)
    last = log.metrics[-1]
    train, val = last.get("train_loss"), last.get("val_loss")
    memorised = is_finite(train) and is_finite(val) and train < UNDERFIT_GAP * val
    if score is None or score >= UNDERFIT_SCORE or memorised:
        return []

    def changes(config: Config) -> list[dict[str, Any]]:
        layers = config.model.layers
        hidden = hidden_layers(config)
        linear = [i for i in hidden if ACTIVATIONS[layers[i].activation].family == "linear"]
        wider = {f"model.layers.{i}.units": min(max(layers[i].units * WIDEN_FACTOR, MIN_FIX_WIDTH), MAX_WIDTH)
                 for i in hidden}  # fmt: skip
        added = {"model.layers": [{"units": MIN_FIX_WIDTH, "activation": "tanh"},
                                  *[layer.model_dump(mode="json") for layer in layers]]}  # fmt: skip
        changes = [each(linear, "activation", "tanh")] if linear else []
        return [*changes, wider, added, longer(config)] if hidden else [added, longer(config)]

    remedy = remedy_from(config, "a network too small for its data cannot fit it however long it trains", changes)
    return [Finding(FIT, diagnosis(
        "underfitting", None,
        f"the training loss has levelled off at {format_number(course.last)} with healthy gradients, and the best "
        f"{column} is {format_number(score)}, below {UNDERFIT_SCORE:g}: the network cannot fit its training data",
        {column: score, "threshold": UNDERFIT_SCORE, "train_loss": train, "val_loss": val}, remedy))]  # fmt: skip


def not_converged(log: RunLog, course: Course, config: Config | None) -> list[Finding]:
    """Training stopped while the loss was still clearly falling, or after too few epochs to fit the data."""
    score = training_score(log, config)
    short = len(course.losses) < FIT_MIN_EPOCHS and score is not None and score < UNDERFIT_SCORE
    if not (course.still_falling() or short):
        return []
    share, level = course.recent_decline()

    def changes(config: Config) -> list[dict[str, Any]]:
        return [longer(config), lr_change(config, 3), *adaptive_change(config)]

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
        remedy_from(config, reason, changes)))]  # fmt: skip
