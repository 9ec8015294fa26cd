"""Reading a run directory back: what the loss did, what each layer's gradients did, and what went wrong.

The report is built from the run's files alone (config.yaml, metrics.csv, gradients.csv, model.npz,
summary.json), so it also reads runs that diverged, were interrupted or were killed. Each diagnosis carries the
numbers that triggered it and a suggestion naming the config keys to change; a healthy run gets none.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from autobp.common import files
from autobp.rundir import layout as rundir
from autobp.common.files import load_npz
from autobp.spec.catalog import ACTIVATIONS, lower_is_better
from autobp.spec.config import Config
from autobp.spec.configfile import load_config
from autobp.common.errors import AutobpError, DataError
from autobp.common.text import format_number, format_table, to_json
from autobp.train.gradstats import INACTIVE_FRACTION, SIGNAL_RATIO

# Thresholds of the diagnoses (SIGNAL_RATIO and INACTIVE_FRACTION are shared with the end-of-run verdicts).
MIN_GRAD_NORM = 1e-8  # vanishing: a layer's median ‖∂L/∂W‖ below this
UPDATE_RATIO_HIGH = 1e-1  # learning rate: median ‖ΔW‖/‖W‖ over the logged steps of the layer that moves most
UPDATE_RATIO_LOW = 1e-5
HEALTHY_UPDATE_RATIO = 1e-3
MAX_LR_CHANGE = 1e3  # the largest factor by which a learning-rate suggestion changes optimizer.lr
OVERFIT_MIN_EPOCHS = 6  # overfitting: judged on the last third of the epochs, at least 3 of them
OVERFIT_MIN_RISE = 0.02  # the validation loss's fitted rise over that window, relative to its mean there

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 60
NON_FINITE_MARK = "×"
# Gradient-log columns whose non-finite values mean the run blew up; update_ratio is left out because it is
# infinite by definition for a weight matrix of zeros.
BLOW_UP_COLUMNS = ("grad_norm_w", "grad_norm_b", "weight_norm", "out_grad_norm", "grad_mean", "grad_std")
RUN_FILES = (rundir.SUMMARY_FILE, rundir.METRICS_FILE, rundir.GRADIENTS_FILE, rundir.CONFIG_FILE)
_STAMP = re.compile(r"-(\d{8}-\d{6})(?:-\d+)?$")

T = TypeVar("T")


# --- reading the run directory ---------------------------------------------------------------------------------


class Divergence(BaseModel):
    """summary.json's `diverged`: the step and first layer whose gradient went non-finite."""

    step: int
    layer: str | None = None
    reason: str = ""


class EarlyStop(BaseModel):
    monitor: str
    best_epoch: int
    best_value: float


class RunSummary(BaseModel):
    """The parts of summary.json the report reads; other keys are ignored, so newer files still load."""

    model_config = ConfigDict(extra="ignore")

    status: str
    task: str | None = None
    epochs_completed: int = 0
    steps: int = 0
    diverged: Divergence | None = None
    error: str | None = None
    early_stopping: EarlyStop | None = None


@dataclass
class LayerLog:
    """One layer's rows of gradients.csv, column by column; None is an empty cell."""

    name: str
    steps: list[int] = field(default_factory=list)
    columns: dict[str, list[float | None]] = field(default_factory=dict)

    def values(self, column: str) -> list[float | None]:
        return self.columns.get(column, [None] * len(self.steps))


@dataclass
class RunLog:
    """Everything a run directory holds that the report uses; `notes` lists files that could not be read."""

    path: Path
    summary: RunSummary | None
    config: Config | None
    metrics: list[dict[str, float | None]]
    layers: list[LayerLog]
    shapes: dict[str, tuple[int, ...]]
    notes: list[str]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        return self.summary.status if self.summary else "unfinished"

    def activations(self) -> list[str]:
        """Each layer's activation, input to output (empty without a readable config)."""
        return [spec.activation for spec in self.config.model.layers] if self.config else []


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in RUN_FILES)


def read_run(path: Path, *, with_gradients: bool = True) -> RunLog:
    """Read a run directory; a missing or damaged file becomes a note, not an error (DataError if not a run)."""
    if not is_run_dir(path):
        raise DataError(f"{path}: not a run directory (it has none of {', '.join(RUN_FILES)}); "
                        "`autobp runs` lists the run directories")  # fmt: skip
    notes: list[str] = []
    summary = _optional(path / rundir.SUMMARY_FILE, read_summary, notes)
    config = _optional(path / rundir.CONFIG_FILE, load_config, notes)
    metrics = _optional(path / rundir.METRICS_FILE, _read_numbers, notes) or []
    layers: list[LayerLog] = []
    shapes: dict[str, tuple[int, ...]] = {}
    if with_gradients:
        rows = _optional(path / rundir.GRADIENTS_FILE, _read_numbers, notes) or []
        layers = _layer_logs(rows)
        shapes = _optional(path / rundir.MODEL_FILE, _read_shapes, notes) or {}
    return RunLog(path, summary, config, metrics, layers, shapes, notes)


def read_summary(path: Path) -> RunSummary:
    """summary.json as a RunSummary (DataError if it is not valid JSON or lacks a status)."""
    try:
        return RunSummary.model_validate(files.read_json(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise DataError(f"{path}: unexpected content ({where}: {first['msg']})") from None


def run_date(path: Path) -> datetime:
    """When a run or sweep started: the stamp in its directory name, else the directory's modification time."""
    match = _STAMP.search(path.name)
    if match:
        return datetime.strptime(match.group(1), "%Y%m%d-%H%M%S")
    return datetime.fromtimestamp(path.stat().st_mtime)


def _optional(path: Path, reader: Callable[[Path], T], notes: list[str]) -> T | None:
    if not path.exists():
        return None
    try:
        return reader(path)
    except AutobpError as err:
        notes.append(str(err))
        return None


def _read_numbers(path: Path) -> list[dict[str, Any]]:
    """A CSV log as rows of numbers (and the `layer` name); empty or missing cells are None."""
    rows = files.read_rows(path)
    parsed = []
    for index, row in enumerate(rows):
        try:
            parsed.append({key: files.parse_cell(key, value) for key, value in row.items() if key is not None})
        except ValueError:
            # A run killed while writing can leave half a number on its last line: that row is dropped.
            if index < len(rows) - 1:
                bad = next(k for k, v in row.items() if k is not None and not _parses(k, v))
                raise DataError(f"{path}:{index + 2}: column {bad}: {row[bad]!r} is not a number") from None
    return parsed


def _parses(column: str, value: str | None) -> bool:
    try:
        files.parse_cell(column, value)
    except ValueError:
        return False
    return True


def _layer_logs(rows: list[dict[str, Any]]) -> list[LayerLog]:
    layers: dict[str, LayerLog] = {}
    for row in rows:
        name, step = row.get("layer"), row.get("step")
        if name is None or step is None:
            continue
        log = layers.setdefault(name, LayerLog(name))
        log.steps.append(int(step))
        for column, value in row.items():
            if column not in ("layer", "step", "epoch"):
                log.columns.setdefault(column, []).append(value)
    return sorted(layers.values(), key=lambda log: _layer_index(log.name))


def _layer_index(name: str) -> int:
    digits = name.removeprefix("layer")
    return int(digits) if digits.isdigit() else 1 << 30


def _read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    arrays = load_npz(path)
    return {key.removesuffix(".weight"): value.shape for key, value in arrays.items() if key.endswith(".weight")}


# --- summarising ----------------------------------------------------------------------------------------------


@dataclass
class SeriesSummary:
    """A per-epoch curve of metrics.csv: first, best (with its epoch) and final values."""

    name: str
    first: float | None
    best: float | None
    best_epoch: int | None
    final: float | None


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


@dataclass
class Diagnosis:
    """A problem the logs show: what, where (a layer, or None for the whole run), the numbers, and what to change."""

    kind: str
    layer: str | None
    evidence: dict[str, float | int | str | None]
    message: str
    suggestion: str


@dataclass
class Report:
    """What `autobp report` shows about one run."""

    run_dir: str
    name: str
    status: str
    ending: str
    task: str | None
    epochs: int
    steps: int
    series: list[SeriesSummary]
    curve: str
    sparkline: str
    layers: list[LayerSummary]
    diagnoses: list[Diagnosis]
    notes: list[str]


def finite(values: Iterable[float | None]) -> np.ndarray:
    return np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)


def median(values: Iterable[float | None]) -> float | None:
    """Median of the finite values, None when there are none."""
    kept = finite(values)
    return float(np.median(kept)) if kept.size else None


def _first(values: Sequence[float | None]) -> float | None:
    return next((v for v in values if v is not None), None)


def _last(values: Sequence[float | None]) -> float | None:
    return _first(values[::-1])


def summarize_series(metrics: list[dict[str, float | None]]) -> list[SeriesSummary]:
    """First, best and final value of every loss and metric column that has values."""
    names = [name for name in (metrics[0] if metrics else {}) if name not in ("epoch", "step", "lr", "seconds")]
    summaries = []
    for name in names:
        column = [row.get(name) for row in metrics]
        if _first(column) is None:
            continue
        scored = [(value, row.get("epoch")) for value, row in zip(column, metrics)
                  if value is not None and math.isfinite(value)]  # fmt: skip
        pick = min if lower_is_better(name) else max
        best, epoch = pick(scored, key=lambda pair: pair[0]) if scored else (None, None)
        best_epoch = None if epoch is None else int(epoch)
        summaries.append(SeriesSummary(name, _first(column), best, best_epoch, _last(column)))
    return summaries


def summarize_layers(log: RunLog) -> list[LayerSummary]:
    """The per-layer table, input to output."""
    activations = log.activations()
    return [
        LayerSummary(
            name=layer.name,
            shape=log.shapes.get(layer.name),
            activation=activations[index] if index < len(activations) else None,
            logged_steps=len(layer.steps),
            grad_norm_w_first=_first(layer.values("grad_norm_w")),
            grad_norm_w_median=median(layer.values("grad_norm_w")),
            grad_norm_w_last=_last(layer.values("grad_norm_w")),
            out_grad_norm_median=median(layer.values("out_grad_norm")),
            update_ratio_median=median(layer.values("update_ratio")),
            dead_fraction=_last(layer.values("dead_fraction")),
            saturated_fraction=_last(layer.values("saturated_fraction")),
        )
        for index, layer in enumerate(log.layers)
    ]


def sparkline(values: Sequence[float | None], width: int = SPARK_WIDTH) -> str:
    """A one-line chart of a curve in unicode blocks; long curves are averaged into `width` buckets."""
    points = [math.nan if v is None else v for v in values]
    if not points:
        return ""
    buckets = np.array_split(np.array(points, dtype=float), min(width, len(points)))
    means = [float(b.mean()) if np.isfinite(b).all() else math.nan for b in buckets]
    kept = finite(means)
    if not kept.size:
        return NON_FINITE_MARK * len(means)
    low, span = kept.min(), kept.max() - kept.min()
    top = len(SPARK_BLOCKS) - 1

    def block(mean: float) -> str:
        if not math.isfinite(mean):
            return NON_FINITE_MARK
        return SPARK_BLOCKS[round((mean - low) / span * top) if span > 0 else top // 2]

    return "".join(map(block, means))


def ending(log: RunLog) -> str:
    """Why the run ended, in one sentence."""
    summary = log.summary
    if summary is None:
        damaged = (log.path / rundir.SUMMARY_FILE).exists()
        why = "is unreadable" if damaged else "is missing: the run is still going, or its process was killed"
        return f"{rundir.SUMMARY_FILE} {why}; showing the {len(log.metrics)} logged epochs"
    planned = log.config.training.epochs if log.config else None
    done = f"{summary.epochs_completed} of {planned} epochs" if planned else f"{summary.epochs_completed} epochs"
    if summary.status == "completed":
        stopped_by_steps = log.config and planned and summary.epochs_completed < planned
        return f"completed {done}, {summary.steps} steps" + (" (training.max_steps)" if stopped_by_steps else "")
    if summary.status == "stopped_early" and summary.early_stopping:
        stop = summary.early_stopping
        return (f"stopped early after {done}: {stop.monitor} had not improved since epoch {stop.best_epoch} "
                f"({format_number(stop.best_value)}); that epoch's weights were restored")  # fmt: skip
    if summary.status == "diverged" and summary.diverged:
        return f"diverged after {done}: {summary.diverged.reason}"
    if summary.status == "interrupted":
        return f"interrupted (Ctrl-C) after {done}"
    if summary.status == "failed":
        return f"failed after {done}: {summary.error}"
    return f"{summary.status} after {done}"


# --- diagnoses ------------------------------------------------------------------------------------------------

SUGGEST_VANISHING_SQUASHING = ("use `model.activation: relu` with `model.init: he` (the slope of a sigmoid is at "
                               "most 1/4, of a saturated tanh near 0, so each such layer shrinks the signal), or "
                               "fewer layers in `model.hidden`")  # fmt: skip
SUGGEST_VANISHING = ("use `model.init: he` for the ReLU family, or fewer layers in `model.hidden`; a signal of 0 "
                     "means dead units, which `model.activation: leaky_relu` avoids")  # fmt: skip
SUGGEST_EXPLODING = ("set `optimizer.clip_grad_norm: 1.0`, lower `optimizer.lr`, and use `model.init: xavier` "
                     "(tanh, sigmoid) or `he` (relu) rather than a large `model.init_scale`")  # fmt: skip
SUGGEST_DEAD = ("use `model.activation: leaky_relu` or `elu`, `model.init: he`, or a lower `optimizer.lr` "
                "(a too-large step pushes the pre-activations below zero for good)")  # fmt: skip
SUGGEST_SATURATED = ("use `model.init: xavier` (or a smaller `model.init_scale` with `normal`/`uniform`), keep "
                     "`data.standardize: true`, or `model.activation: relu` with `model.init: he`")  # fmt: skip
SUGGEST_OVERFITTING = ("add `training.early_stopping: {monitor: val_loss, patience: 10}`, "
                       "`optimizer.weight_decay: 1e-4`, dropout (`model.layers.<i>.dropout: 0.2`), "
                       "a smaller network, or more data (`data.n_samples`)")  # fmt: skip


def diagnose(log: RunLog, layers: list[LayerSummary]) -> list[Diagnosis]:
    """Every diagnosis the logs trigger, in a fixed order; empty for a healthy run."""
    return [
        *_signal_diagnoses(layers),
        *_blow_up(log),
        *_inactive_units(layers),
        *_learning_rate(log, layers),
        *_overfitting(log.metrics),
    ]


def _signal_diagnoses(layers: list[LayerSummary]) -> list[Diagnosis]:
    """Vanishing or exploding: the median signal ‖∂L/∂f‖ of layer0 against the output layer's."""
    if len(layers) < 2:
        return _tiny_gradients(layers)
    first, last = layers[0], layers[-1]
    signal_in, signal_out = first.out_grad_norm_median, last.out_grad_norm_median
    if signal_in is None or not signal_out:
        return _tiny_gradients(layers)
    evidence = {"signal_first_layer": signal_in, "signal_output_layer": signal_out, "threshold": SIGNAL_RATIO}
    compared = (f"the backpropagated signal, median ‖∂L/∂f‖, is {format_number(signal_in)} at {first.name} "
                f"against {format_number(signal_out)} at the output layer {last.name}")  # fmt: skip
    if signal_in * SIGNAL_RATIO <= signal_out:
        shrink = signal_out / signal_in if signal_in > 0 else math.inf
        how = f"{_times(shrink)} smaller" if signal_in > 0 else "none of it reaches the first layer"
        return [Diagnosis(
            "vanishing_gradients", first.name, {**evidence, "ratio": shrink},
            f"{compared}: {how} (threshold {SIGNAL_RATIO:g}×)", _vanishing_suggestion(layers),
        )]  # fmt: skip
    if signal_in >= signal_out * SIGNAL_RATIO:
        growth = signal_in / signal_out
        return [Diagnosis(
            "exploding_gradients", first.name, {**evidence, "ratio": growth},
            f"{compared}: {_times(growth)} larger (threshold {SIGNAL_RATIO:g}×)", SUGGEST_EXPLODING,
        )]  # fmt: skip
    return _tiny_gradients(layers)


def _times(ratio: float) -> str:
    return f"{ratio:,.0f}×" if ratio >= SIGNAL_RATIO else f"{ratio:.3g}×"


def _tiny_gradients(layers: list[LayerSummary]) -> list[Diagnosis]:
    tiny = next((layer for layer in layers if layer.grad_norm_w_median is not None
                 and layer.grad_norm_w_median < MIN_GRAD_NORM), None)  # fmt: skip
    if tiny is None:
        return []
    return [Diagnosis(
        "vanishing_gradients", tiny.name, {"grad_norm_w_median": tiny.grad_norm_w_median, "threshold": MIN_GRAD_NORM},
        f"the median ‖∂L/∂W‖ of {tiny.name} is {format_number(tiny.grad_norm_w_median)}, below {MIN_GRAD_NORM:g}",
        _vanishing_suggestion(layers),
    )]  # fmt: skip


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
    return [Diagnosis("exploding_gradients", layer, evidence, f"non-finite values from step {step}: first {what}",
                      SUGGEST_EXPLODING)]  # fmt: skip


def _inactive_units(layers: list[LayerSummary]) -> list[Diagnosis]:
    found = []
    for layer in layers:
        for kind, share, word, suggestion in (
            ("dead_units", layer.dead_fraction, "dead (pre-activation ≤ 0 for the whole batch)", SUGGEST_DEAD),
            ("saturated_units", layer.saturated_fraction, "saturated (|pre-activation| > 3 for the whole batch)",
             SUGGEST_SATURATED),
        ):  # fmt: skip
            if share is not None and share > INACTIVE_FRACTION:
                found.append(Diagnosis(
                    kind, layer.name, {"fraction": share, "threshold": INACTIVE_FRACTION},
                    f"{share:.0%} of {layer.name}'s units are {word} at the last logged step",
                    suggestion,
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
        "learning_rate_high" if high else "learning_rate_low", fastest.name, evidence,
        f"the median update/weight ratio ‖ΔW‖/‖W‖ of {fastest.name}, the layer that moves most, is "
        f"{format_number(ratio)}, {'above' if high else 'below'} {threshold:g} (about {HEALTHY_UPDATE_RATIO:g} "
        "is healthy)",
        advice,
    )]  # fmt: skip


def _overfitting(metrics: list[dict[str, float | None]]) -> list[Diagnosis]:
    """Validation loss rising while training loss falls, by straight-line fits over the last third of the run."""
    rows = [row for row in metrics if all(_is_finite(row.get(key)) for key in ("epoch", "train_loss", "val_loss"))]
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
        "overfitting", None,
        {"from_epoch": first, "to_epoch": last, "val_loss_slope": val_slope, "train_loss_slope": train_slope,
         "val_loss_rise": rise, "best_val_loss": best["val_loss"], "best_epoch": int(best["epoch"])},
        f"over epochs {first}–{last} the validation loss rises ({format_number(val_slope)} per epoch, "
        f"+{rise:.0%}) while the training loss falls ({format_number(train_slope)} per epoch); the best "
        f"validation loss was {format_number(best['val_loss'])} at epoch {int(best['epoch'])}",
        SUGGEST_OVERFITTING,
    )]  # fmt: skip


def _is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


# --- the report -------------------------------------------------------------------------------------------------


def build_report(log: RunLog) -> Report:
    """Summaries and diagnoses of a read run."""
    series = summarize_series(log.metrics)
    layers = summarize_layers(log)
    curve = "val_loss" if any(s.name == "val_loss" for s in series) else "train_loss"
    summary = log.summary
    return Report(
        run_dir=str(log.path),
        name=log.name,
        status=log.status,
        ending=ending(log),
        task=summary.task if summary else None,
        epochs=summary.epochs_completed if summary else len(log.metrics),
        steps=summary.steps if summary else int(_last([row.get("step") for row in log.metrics]) or 0),
        series=series,
        curve=curve,
        sparkline=sparkline([row.get(curve) for row in log.metrics]),
        layers=layers,
        diagnoses=diagnose(log, layers),
        notes=log.notes,
    )


def report_run(path: Path) -> Report:
    """Read a run directory and report on it."""
    return build_report(read_run(path))


def render(report: Report, fmt: str) -> str:
    """The report as `text`, `markdown` or `json`."""
    if fmt == "json":
        return to_json(asdict(report))
    return _render_document(report, markdown=fmt == "markdown")


def _render_document(report: Report, *, markdown: bool) -> str:
    def heading(text: str, level: int = 3) -> str:
        return f"{'#' * level} {text}" if markdown else text

    lines = [
        heading(f"{report.name}: {report.status}", level=2),
        "",
        f"{report.ending}.",
        f"Run directory: {_code(report.run_dir, markdown)}",
        *(f"Note: {note}" for note in report.notes),
        "",
        heading("Loss and metrics"),
        "",
        *_series_lines(report, markdown=markdown),
        "",
        heading("Layers, input to output"),
        "",
        *_layer_lines(report, markdown=markdown),
        "",
        heading("Diagnoses"),
        "",
    ]
    if not report.diagnoses:
        lines.append("None: every check passed.")
    for diagnosis in report.diagnoses:
        where = f" ({diagnosis.layer})" if diagnosis.layer else ""
        lines.append(f"- {_code(diagnosis.kind, markdown)}{where}: {diagnosis.message}.")
        lines.append(f"  Suggestion: {diagnosis.suggestion}.")
    return "\n".join(lines)


def _code(text: str, markdown: bool) -> str:
    return f"`{text}`" if markdown else text


def _series_lines(report: Report, *, markdown: bool) -> list[str]:
    if not report.series:
        return ["No epoch was completed."]
    table = format_table(
        ["", "first", "best (epoch)", "final"],
        [[s.name, format_number(s.first), f"{format_number(s.best)} ({s.best_epoch or '-'})", format_number(s.final)]
         for s in report.series],
        markdown=markdown,
    )  # fmt: skip
    return [*table, "", f"{report.curve} by epoch: {_code(report.sparkline, markdown)}"]


def _layer_lines(report: Report, *, markdown: bool) -> list[str]:
    if not report.layers:
        return ["No gradient log."]
    table = format_table(
        ["layer", "shape", "activation", "grad_norm_w first", "median", "last", "out_grad_norm median",
         "update_ratio median", "dead/saturated"],
        [_layer_row(layer) for layer in report.layers],
        markdown=markdown,
    )  # fmt: skip
    legend = ("grad_norm_w = ‖∂L/∂W‖, out_grad_norm = ‖∂L/∂f‖ (the signal reaching the layer's output), "
              "update_ratio = ‖ΔW‖/‖W‖; medians over the logged steps, dead/saturated at the last one.")  # fmt: skip
    return [*table, "", legend]


def _layer_row(layer: LayerSummary) -> list[str]:
    if layer.dead_fraction is not None:
        inactive = f"{layer.dead_fraction:.0%} dead"
    elif layer.saturated_fraction is not None:
        inactive = f"{layer.saturated_fraction:.0%} saturated"
    else:
        inactive = "-"
    return [
        layer.name,
        "×".join(map(str, layer.shape)) if layer.shape else "?",
        layer.activation or "?",
        format_number(layer.grad_norm_w_first),
        format_number(layer.grad_norm_w_median),
        format_number(layer.grad_norm_w_last),
        format_number(layer.out_grad_norm_median),
        format_number(layer.update_ratio_median),
        inactive,
    ]


