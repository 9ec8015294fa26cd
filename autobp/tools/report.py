"""Reading a run directory back: what the loss did, what each layer's gradients did, and what went wrong.

The report is built from the run's files alone (config.yaml, metrics.csv, gradients.csv, model.npz,
summary.json), so it also reads runs that diverged, were interrupted or were killed. Each diagnosis carries the
numbers that triggered it and a suggestion naming the config keys to change; a healthy run gets none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from autobp.common.errors import AutobpError
from autobp.common.text import format_number, format_table, to_json
from autobp.health import LayerSummary, describe_change, judge, summarize_layers
from autobp.health.layers import finite, first_value, last_value
from autobp.rundir import layout as rundir
from autobp.rundir.doctor import DoctorRecord, Treatment, as_seen, read_doctor
from autobp.rundir.logs import EPOCH, STEP, measured_in
from autobp.rundir.reader import RunLog, read_run
from autobp.rundir.status import Status
from autobp.rundir.summary import Diagnosis, InstrumentVerdict, LayerVerdict
from autobp.config.catalog import lower_is_better

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 60
NON_FINITE_MARK = "×"


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
    verdicts: list[LayerVerdict]
    diagnoses: list[Diagnosis]
    notes: list[str]
    instruments: list[InstrumentVerdict]
    doctor: DoctorRecord | None = None
    """doctor.json: the changes `autobp doctor` retrained and which cured the cause (None if not run)."""


def summarize_series(metrics: list[dict[str, float | None]]) -> list[SeriesSummary]:
    """First, best and final value of every loss and metric column that has values."""
    names = measured_in(metrics[0]) if metrics else []
    summaries = []
    for name in names:
        column = [row.get(name) for row in metrics]
        if first_value(column) is None:
            continue
        scored = [(value, row.get(EPOCH)) for value, row in zip(column, metrics)
                  if value is not None and math.isfinite(value)]  # fmt: skip
        pick = min if lower_is_better(name) else max
        best, epoch = pick(scored, key=lambda pair: pair[0]) if scored else (None, None)
        best_epoch = None if epoch is None else int(epoch)
        summaries.append(SeriesSummary(name, first_value(column), best, best_epoch, last_value(column)))
    return summaries


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
    done = f"{summary.epochs_completed:,} of {planned:,} epochs" if planned else f"{summary.epochs_completed:,} epochs"
    if summary.status == Status.COMPLETED:
        stopped_by_steps = log.config and planned and summary.epochs_completed < planned
        return f"completed {done}, {summary.steps:,} steps" + (" (training.max_steps)" if stopped_by_steps else "")
    if summary.status == Status.STOPPED_EARLY and summary.early_stopping:
        stop = summary.early_stopping
        return (f"stopped early after {done}: {stop.monitor} had not improved since epoch {stop.best_epoch} "
                f"({format_number(stop.best_value)}); that epoch's weights were restored")  # fmt: skip
    if summary.status == Status.DIVERGED and summary.diverged:
        return f"diverged after {done}: {summary.diverged.reason}"
    if log.status == Status.KILLED:
        return (f"killed while training: {rundir.SUMMARY_FILE} says `running`, but no process is training it; showing "
                f"the {len(log.metrics)} logged epochs (`autobp train --resume {log.path}` continues it)")
    if summary.status == Status.RUNNING:
        return f"running: a process is training it; showing the {len(log.metrics)} epochs logged so far"
    if summary.status == Status.INTERRUPTED:
        return f"interrupted (Ctrl-C or SIGTERM) after {done}"
    if summary.status == Status.FAILED:
        return f"failed after {done}: {summary.error}"
    return f"{summary.status} after {done}"


# --- the report -------------------------------------------------------------------------------------------------


def build_report(log: RunLog) -> Report:
    """Summaries and diagnoses of a read run."""
    series = summarize_series(log.metrics)
    layers = summarize_layers(log)
    curve = "val_loss" if any(s.name == "val_loss" for s in series) else "train_loss"
    summary = log.summary
    health = judge(log, layers)
    notes = list(log.notes)
    try:
        doctor = read_doctor(log.path)
        doctor = None if doctor is None else as_seen(log.path, doctor)
    except AutobpError as err:
        doctor, notes = None, [*notes, str(err)]
    return Report(
        run_dir=str(log.path),
        name=log.name,
        status=log.status,
        ending=ending(log),
        task=summary.task if summary else None,
        epochs=summary.epochs_completed if summary else len(log.metrics),
        steps=summary.steps if summary else int(last_value([row.get(STEP) for row in log.metrics]) or 0),
        series=series,
        curve=curve,
        sparkline=sparkline([row.get(curve) for row in log.metrics]),
        layers=layers,
        verdicts=health.layers,
        diagnoses=health.diagnoses,
        notes=notes,
        instruments=health.instruments,
        doctor=doctor,
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
        *_instrument_section(report, heading, markdown=markdown),
        heading("Diagnoses"),
        "",
    ]
    if not report.diagnoses:
        lines.append("None: every check passed.")
    for diagnosis in report.diagnoses:
        where = f" ({diagnosis.layer})" if diagnosis.layer else ""
        lines.append(f"- {_code(diagnosis.kind, markdown)}{where}: {diagnosis.message}.")
        lines.append(f"  Suggestion: {diagnosis.suggestion}.")
    if report.doctor is not None:
        lines += ["", heading("Verified fixes (autobp doctor)"), "", *verified_fix_lines(report.doctor, markdown=markdown)]
    return "\n".join(lines)


# --- autobp doctor's verdict ----------------------------------------------------------------------------------

FIX_COLUMNS = ("rank", "role", "change", "status", "first diagnosis", "cured")


def fix_rows(record: DoctorRecord) -> list[list[str]]:
    """doctor.json's treatments as table rows, best first, under FIX_COLUMNS with the monitor after `status`."""
    return [[str(place) if t.cured else "-", t.role, _change(t.change), t.status,
             format_number(t.value), _first_diagnosis(t), "yes" if t.cured else "no"]
            for place, t in enumerate(record.treatments, start=1)]  # fmt: skip


def _first_diagnosis(treatment: Treatment) -> str:
    """The trial's first diagnosis; `none` only for a trial that finished and was judged, `-` for one that did not
    (never trained, interrupted, killed: nothing judged it)."""
    if treatment.diagnosis is not None:
        return treatment.diagnosis
    return "none" if treatment.status.finished else "-"


def _change(change: dict) -> str:
    return describe_change(change) or "(none: the config as it is)"


def fix_headers(record: DoctorRecord) -> list[str]:
    return [*FIX_COLUMNS[:4], record.monitor, *FIX_COLUMNS[4:]]


def verified_fix_lines(record: DoctorRecord, *, markdown: bool = False) -> list[str]:
    """What doctor found: each change with the metric before and after, best first, and the command of the best."""
    cause = record.cause
    source = "the run itself" if record.before_source == "run" else f"the config unchanged, {record.epochs} epochs"
    lines = [f"Treated {_code(cause.kind, markdown)} with {len(record.treatments)} trainings of {record.epochs} "
             f"epochs; {record.monitor} before: {format_number(record.before)} ({source}).", ""]  # fmt: skip
    lines += format_table(fix_headers(record), fix_rows(record), markdown=markdown)
    lines += [f"- {t.role} {_change(t.change)}: {t.error}" for t in record.treatments if t.status == Status.INVALID]
    if record.status != Status.COMPLETED:
        lines.append(f"doctor {record.status}: not every trial finished; `autobp doctor {record.run_dir}` finishes them")
    best = next((t for t in record.treatments if t.trial == record.best), None)
    if best is None and record.status == Status.COMPLETED:
        lines.append(f"No change cured {cause.kind}.")
    elif best is not None:
        lines += [f"Best: {_change(best.change)} cured {cause.kind}: {record.monitor} "
                  f"{format_number(record.before)} → {format_number(best.value)}.",
                  f"Reproduce: {_code(record.command, markdown)}"]  # fmt: skip
    return lines


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
         "update_ratio median", "dead/saturated", "verdict"],
        [_layer_row(layer, verdict) for layer, verdict in zip(report.layers, report.verdicts)],
        markdown=markdown,
    )  # fmt: skip
    legend = ("grad_norm_w = ‖∂L/∂W‖, out_grad_norm = ‖∂L/∂f‖ (the signal reaching the layer's output), "
              "update_ratio = ‖ΔW‖/‖W‖; medians over the logged steps, dead/saturated at the last one.")  # fmt: skip
    return [*table, "", legend]


def _instrument_section(report: Report, heading, *, markdown: bool) -> list[str]:
    """The instruments' table (instruments.csv's `total` rows), when the run has them."""
    if not report.instruments:
        return []
    table = format_table(
        ["instrument", "value", "trend", "verdict", "threshold", "steps"],
        [[v.instrument, format_number(v.value), v.trend, v.verdict, format_number(v.threshold), v.window.removeprefix("steps ")]
         for v in report.instruments],
        markdown=markdown,
    )  # fmt: skip
    legend = ("value = median over the steps shown (the noise scale early in training, the others recently); "
              "the verdict compares it with the threshold.")  # fmt: skip
    return [heading("Instruments"), "", *table, "", legend, ""]


def _layer_row(layer: LayerSummary, verdict: LayerVerdict) -> list[str]:
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
        verdict.verdict,
    ]


