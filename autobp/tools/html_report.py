"""`autobp report RUN_OR_SWEEP --html`: one HTML page per run or sweep, with interactive charts; `autobp view` serves
the same pages live.

A page is a list of sections (RUN_SECTIONS, SWEEP_SECTIONS), each built from the run's files by one function, so
the static report and the live view show the same thing. Charts are drawn by plotly (the optional `report` extra):
a run's report.html inlines its JavaScript (one self-contained file); the pages of a sweep share one copy written
in the sweep directory (PLOTLY_ASSET), referenced by relative path, so they open offline and from a copied folder.
Each chart that grows as a run trains carries, in `data-live`, which log columns its traces are drawn from and the
byte offset of the logs it was drawn from: the live view appends the rows written since (autobp.tools.view).
A run's page reads the run directory through `autobp.rundir.reader.read_run` and `autobp.tools.report.build_report`,
histograms.npz through `autobp.rundir.histograms.read`, and embeds the computation graph of one validation example
(`autobp.tools.graph`). A sweep's page ranks its trials with `autobp.tools.compare.compare_runs`.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from autobp.common.errors import AutobpError, ConfigError
from autobp.common.files import signature
from autobp.model.network import MODEL_FILE
from autobp.rundir import layout as rundir
from autobp.rundir.doctor import DOCTOR_FILE
from autobp.rundir.histograms import HISTOGRAMS_FILE
from autobp.rundir.instruments import INSTRUMENTS_FILE, TOTAL
from autobp.rundir.logs import DEAD_FRACTION, GRAD_NORM_W, LAYER, OUT_GRAD_NORM, SATURATED_FRACTION, STEP, UPDATE_RATIO
from autobp.rundir.status import Status

REPORT_FILE = "report.html"
PLOTLY_ASSET = "plotly.min.js"  # a sweep's one copy of plotly.js, beside sweep.yaml
INSTALL_HINT = "the HTML pages (--html, autobp view) need plotly: pip install 'autobp[report]'"
BANDS = (0, 16, 50, 84, 100)  # percentiles of the distributions view: min–max, ±1σ of a normal, the median
BAND_TRACES = 5  # a band's traces: the lower and upper edge of each of the two bands, the median
LAYER_CURVES = (
    (GRAD_NORM_W, "‖∂L/∂W‖", True),
    (UPDATE_RATIO, "update ratio ‖ΔW‖/‖W‖", True),
    (DEAD_FRACTION, "dead fraction (ReLU family)", False),
    (SATURATED_FRACTION, "saturated fraction (tanh, sigmoid)", False),
)
QUANTITY_TITLES = {"weight_grad": "∂L/∂W", "weight": "W", "pre_activation": "pre-activation z"}
STYLE = """body{font-family:Helvetica,Arial,sans-serif;margin:0 auto;max-width:1280px;padding:20px 28px;color:#222}
h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;margin-top:34px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 9px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f4f4f4}
.status{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-size:14px;vertical-align:middle}
.completed,.stopped_early{background:#2e7d32}.diverged,.failed{background:#c62828}
.interrupted,.unfinished{background:#ef6c00}.running{background:#1565c0}.killed{background:#6d4c41}
.pruned,.pending{background:#757575}.diagnosis{border-left:4px solid #c62828;background:#fdf3f3;
padding:8px 12px;margin:10px 0}.healthy{border-left:4px solid #2e7d32;background:#f1f8f1;padding:8px 12px}
.evidence{font-size:12px;color:#555}.note{color:#8a5a00}
.graph{overflow:auto;max-height:80vh;border:1px solid #ddd}#graph-fit:checked~.graph svg{width:100%;height:auto}
pre{background:#f7f7f7;padding:10px;font-size:12px;overflow-x:auto}.explain{color:#555;font-size:14px}
.cured{color:#2e7d32;font-weight:bold}.uncured{color:#c62828}
pre.command{white-space:pre-wrap;overflow-wrap:anywhere;margin:6px 0 0}
#verified-fixes :is(td,th):is(:nth-child(2),:nth-child(3)){text-align:left}
.legend span{display:inline-block;padding:1px 7px;margin-right:6px;border-radius:4px;border:1px solid;font-size:12px}
.verdict-ok{color:#2e7d32}.verdict-bad{color:#c62828;font-weight:bold}.instruments td:nth-child(4),.instruments td:last-child{text-align:left}"""
# A click on the fitted drawing shows it at full size, scrolled so that the clicked place is in the middle.
ZOOM_SCRIPT = """(() => { const fit = document.getElementById('graph-fit'), frame = document.querySelector('.graph');
frame.addEventListener('click', (event) => { if (!fit.checked) return; const box = frame.querySelector('svg')
.getBoundingClientRect(), x = (event.clientX - box.left) / box.width, y = (event.clientY - box.top) / box.height;
fit.checked = false; frame.scrollLeft = x * frame.scrollWidth - frame.clientWidth / 2;
frame.scrollTop = y * frame.scrollHeight - frame.clientHeight / 2; }); })();"""
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
MAX_TICKS = 8  # labels on a log axis or colour bar
SHOWN_DIGITS = 4  # significant digits of the numbers in a chart: what hovers show, in a third of the bytes of all 17
PAGE_DATA_BYTES = 1_000_000  # a run page's own data beside plotly's JavaScript: curves, histograms, the graph
FRACTIONS = (DEAD_FRACTION, SATURATED_FRACTION)  # between 0 and 1: their axes start at 0


def plotly_objects() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return go


def write_report(path: Path, out: Path | None = None) -> Path:
    """Write the HTML report of a run or sweep directory (default DIR/report.html); return where it went. A sweep's
    trials get their own reports, all sharing one copy of plotly.js in the sweep directory."""
    from autobp.common import files
    from autobp.sweeps.record import is_sweep_dir

    plotly_objects()
    if out is not None:
        files.output_path(out, "-o")  # refused before the work, not after
    target = out or path / REPORT_FILE
    if is_sweep_dir(path):
        from autobp.sweeps.record import read_record

        read_record(path)  # a damaged sweep.yaml refuses the report (the live view shows it as a note instead)
        trials = _sweep_trials(path)
        _check_trial_pages(path, trials)
        asset = _write_asset(path)
        for trial in trials:
            files.write_inside(trial, REPORT_FILE, page(RunContext(trial), _linked(asset, trial)))
        text = page(SweepContext(path, lambda trial: _relative(trial / REPORT_FILE, target.parent)),
                    _linked(asset, target.parent))  # fmt: skip
    else:
        in_sweep = out is None and is_sweep_dir(path.parent)  # a trial shares its sweep's plotly.js
        text = page(RunContext(path), _linked(_write_asset(path.parent), path) if in_sweep else _inline())
    if out is None:
        files.write_inside(path, REPORT_FILE, text)
    else:
        files.write_output(out, text, "-o")
    return target


def _sweep_trials(sweep_dir: Path) -> list[Path]:
    from autobp.sweeps.record import trial_dirs

    return trial_dirs(sweep_dir)


def _check_trial_pages(sweep_dir: Path, trial_dirs: list[Path]) -> None:
    """Before the first page: every trial folder inside the sweep (none a link out of it), and room for the pages
    and the one copy of plotly's JavaScript."""
    from plotly.offline import get_plotlyjs

    from autobp.common import files

    for trial_dir in trial_dirs:
        files.inside(sweep_dir, trial_dir)
    files.check_room(sweep_dir, len(get_plotlyjs()) + (len(trial_dirs) + 1) * PAGE_DATA_BYTES, "the HTML reports")


def _write_asset(sweep_dir: Path) -> Path:
    """The sweep's copy of plotly.js, written once (again only if a different plotly made it)."""
    from plotly.offline import get_plotlyjs

    from autobp.common import files

    script = get_plotlyjs().encode()
    asset = sweep_dir / PLOTLY_ASSET
    if not asset.is_file() or asset.stat().st_size != len(script):
        files.write_inside(sweep_dir, PLOTLY_ASSET, script)
    return asset


def _inline() -> str:
    from plotly.offline import get_plotlyjs

    return f'<script type="text/javascript">{get_plotlyjs()}</script>'


def _linked(asset: Path, page_dir: Path) -> str:
    return f'<script type="text/javascript" src="{html.escape(_relative(asset, page_dir))}"></script>'


# --- the page ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """One part of a page: built from the run's (or sweep's) files by `build` (None: the run has nothing for it);
    `watches` names the files, besides the page's own state (summary.json, the status and whether each appended log
    has rows yet, or the sweep's trials), whose change makes the live view rebuild it. A chart that grows with a log
    says how in `data-live` (`_live`)."""

    id: str
    title: str
    build: Callable[[Any], str]
    watches: tuple[str, ...] = ()


def page(context: RunContext | SweepContext, scripts: str, live_dir: str | None = None) -> str:
    """A whole page: its sections in order; `scripts` loads plotly (and, in the live view, its updater)."""
    live = "" if live_dir is None else f' data-dir="{html.escape(live_dir)}"'
    body = "".join(section_html(section, context, live_dir is not None) for section in context.sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(context.title)}</title>'
            f'<style>{STYLE}</style>{scripts}</head><body><main id="autobp-page"{live}>{body}</main></body></html>\n')  # fmt: skip


def section_html(section: Section, context: RunContext | SweepContext, live: bool = False) -> str:
    """One section; a file it cannot read is a note in its place (as `report` says it), not an error."""
    try:
        content = section.build(context)
    except (AutobpError, OSError) as err:
        content = _note(str(err))
    heading = f"<h2>{html.escape(section.title)}</h2>" if section.title and content is not None else ""
    version = f' data-version="{context.version(section)}"' if live else ""
    return f'<section id="section-{section.id}"{version}>{heading}{content or ""}</section>'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _digest(state: Any) -> str:
    return hashlib.sha1(json.dumps(state, default=str).encode()).hexdigest()[:16]


def _figure(figure: Any, div_id: str, live: dict | None = None) -> str:
    """A chart; `live` says how its traces grow from appended log rows (see the module's docstring)."""
    import plotly.io as pio

    chart = pio.to_html(figure, include_plotlyjs=False, full_html=False, div_id=div_id, config=PLOT_CONFIG)
    return chart if live is None else f'<div class="live" data-live="{html.escape(json.dumps(live))}">{chart}</div>'


def _live(traces: list[dict], marks: dict[str, tuple[int, int] | None], **more: Any) -> dict:
    """A chart's `data-live`: per trace (None: one that does not grow) its log (`source`, relative to the page's
    directory), its `x` and `y` columns and the rows it takes (`match`: column values), and the (file id, byte
    offset) up to which each log was read when the chart was drawn."""
    return {"traces": traces, "marks": {name: mark for name, mark in marks.items() if mark is not None}, **more}


def _clean(values: Sequence[float | None]) -> list[float | None]:
    """Values as charts carry them: to SHOWN_DIGITS significant digits (the most a hover shows), and non-finite ones
    as gaps (plotly cannot draw inf or NaN)."""
    return [float(f"{v:.{SHOWN_DIGITS}g}") if v is not None and math.isfinite(v) else None for v in values]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _layer_colors(count: int) -> list[str]:
    from plotly.colors import sample_colorscale

    return sample_colorscale("Viridis", [0.9 * i / max(count - 1, 1) for i in range(count)])


def _log_toggle(axes: Sequence[str], log_first: bool) -> dict:
    """Buttons switching the given y axes between linear and log scale."""
    order = ("log", "linear") if log_first else ("linear", "log")
    return dict(type="buttons", direction="right", x=0, y=1.18, xanchor="left", yanchor="top", showactive=True,
                buttons=[dict(label=f"{scale} scale", method="relayout",
                              args=[{f"{axis}.type": scale for axis in axes}]) for scale in order])  # fmt: skip


# --- a run --------------------------------------------------------------------------------------------------------


class RunContext:
    """What a run page's sections read, each file once and only if a section needs it. The logs' marks are taken
    first: rows appended while the page is built are sent again by the live view, and dropped by the page."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.title = f"{run_dir.name}: autobp report"
        self.sections = RUN_SECTIONS

    @cached_property
    def marks(self) -> dict[str, tuple[int, int] | None]:
        from autobp.rundir.reader import APPENDED_LOGS, log_mark

        return {name: log_mark(self.run_dir / name) for name in APPENDED_LOGS}

    @cached_property
    def log(self) -> Any:
        from autobp.rundir.reader import read_run

        _ = self.marks  # taken before the logs are read: rows appended meanwhile come again, none is lost
        return read_run(self.run_dir)

    @cached_property
    def report(self) -> Any:
        from autobp.tools.report import build_report

        return build_report(self.log)

    @property
    def diverged(self) -> Any:
        return self.log.summary.diverged if self.log.summary else None

    @cached_property
    def state(self) -> list:
        """What every section is drawn from: summary.json, the run's status, and whether each log has rows yet."""
        from autobp.rundir.reader import APPENDED_LOGS, has_rows, read_status

        return [signature(self.run_dir / rundir.SUMMARY_FILE), read_status(self.run_dir),
                [has_rows(self.run_dir / name) for name in APPENDED_LOGS]]  # fmt: skip

    def version(self, section: Section) -> str:
        """Changes whenever the section would be drawn differently (bar rows appended to the logs it follows)."""
        return _digest([self.state, [signature(self.run_dir / name) for name in section.watches]])


def _summary(context: RunContext) -> str:
    return _run_header(context.report, context.log.metrics)


def _run_header(report: Any, metrics: list[dict]) -> str:
    from autobp.common.text import format_number

    status = html.escape(report.status)
    epoch = max((row["epoch"] for row in metrics if row.get("epoch") is not None), default=0)
    counter = f'<b class="live-count" data-source="{rundir.METRICS_FILE}" data-column="epoch">{epoch}</b>'
    parts = [f'<h1>{html.escape(report.name)} <span class="status {status}">{status}</span></h1>',
             f"<p>{html.escape(report.ending)}.<br>Epochs logged: {counter}. "
             f"Run directory: <code>{html.escape(report.run_dir)}</code></p>"]  # fmt: skip
    parts += [f'<p class="note">Note: {html.escape(note)}</p>' for note in report.notes]
    rows = [[html.escape(s.name), format_number(s.first), f"{format_number(s.best)} ({s.best_epoch or '-'})",
             format_number(s.final)] for s in report.series]  # fmt: skip
    parts.append(_table(["", "first", "best (epoch)", "final"], rows) if rows else "<p>No epoch was completed.</p>")
    parts.append("<h2>Diagnoses</h2>")
    if not report.diagnoses:
        parts.append('<p class="healthy">None: every check passed.</p>')
    for diagnosis in report.diagnoses:
        where = f" ({html.escape(diagnosis.layer)})" if diagnosis.layer else ""
        evidence = ", ".join(f"{html.escape(k)} = {html.escape(_evidence(v))}" for k, v in diagnosis.evidence.items())
        parts.append(f'<div class="diagnosis"><b>{html.escape(diagnosis.kind)}</b>{where}: '
                     f"{html.escape(diagnosis.message)}.<br><b>Suggestion:</b> {html.escape(diagnosis.suggestion)}."
                     f'<div class="evidence">evidence: {evidence}</div></div>')  # fmt: skip
    return "".join(parts)


def verified_fixes_section(record: Any) -> str:
    """The run page's "Verified fixes" section: doctor.json's changes, best first, and the command of the best
    (empty when `autobp doctor` has not run)."""
    if record is None:
        return ""
    from autobp.common.text import format_number
    from autobp.health import describe_change
    from autobp.tools.report import fix_headers, fix_rows

    cause = html.escape(record.cause.kind)
    source = "the run itself" if record.before_source == "run" else f"the config unchanged, {record.epochs} epochs"
    parts = ['<section id="verified-fixes"><h2>Verified fixes (autobp doctor)</h2>',
             f'<p class="explain">Each change the diagnosis <b>{cause}</b> proposes, retrained for {record.epochs} '
             f"epochs; a change cured it when its trial finished and its own judgement no longer names {cause} "
             f"first. {html.escape(record.monitor)} before: {format_number(record.before)} "
             f"({html.escape(source)}).</p>"]  # fmt: skip
    rows = [[_code_spans(cell) for cell in row] for row in fix_rows(record)]
    for row, treatment in zip(rows, record.treatments):
        row[-1] = f'<span class="{"cured" if treatment.cured else "uncured"}">{row[-1]}</span>'
    parts.append(_table(fix_headers(record), rows))
    if record.status != Status.COMPLETED:
        parts.append(f'<p class="note">doctor {html.escape(record.status)}: not every trial finished; '
                     f"<code>autobp doctor {html.escape(record.run_dir)}</code> finishes them.</p>")  # fmt: skip
    best = next((t for t in record.treatments if t.trial == record.best), None)
    if best is not None:
        parts.append(f'<div class="healthy"><b>Best:</b> {_code_spans(describe_change(best.change))} cured {cause}: '
                     f"{html.escape(record.monitor)} {format_number(record.before)} → {format_number(best.value)}."
                     f'<pre class="command">{html.escape(record.command)}</pre></div>')  # fmt: skip
    elif record.status == Status.COMPLETED:
        parts.append(f'<p class="diagnosis">No change cured {cause}.</p>')
    return "".join(parts) + "</section>"


def _code_spans(text: str) -> str:
    """Escaped text whose `quoted` parts are shown as code."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


def _verified_fixes(context: RunContext) -> str | None:
    return verified_fixes_section(context.report.doctor) or None


def _evidence(value: Any) -> str:
    from autobp.common.text import format_number

    return format_number(value) if isinstance(value, (int, float)) else str(value)


def _curves(context: RunContext) -> str:
    from plotly.subplots import make_subplots

    go = plotly_objects()
    log, diverged, traces = context.log, context.diverged, []
    epochs = [row.get("epoch") for row in log.metrics]
    metric = next((name.removeprefix("val_") for row in log.metrics[:1] for name in row
                   if name.startswith("val_") and name != "val_loss"), None)  # fmt: skip
    figure = make_subplots(rows=1, cols=2, subplot_titles=["loss", metric or "metric"], horizontal_spacing=0.08)
    for column, kind in enumerate(("loss", metric), start=1):
        for split, color in (("train", "#1f77b4"), ("val", "#d62728")):
            key = f"{split}_{kind}"
            if kind is None or not any(row.get(key) is not None for row in log.metrics):
                continue
            traces.append({"source": rundir.METRICS_FILE, "x": "epoch", "y": key})
            figure.add_trace(go.Scatter(x=epochs, y=_clean([row.get(key) for row in log.metrics]), name=key,
                                        mode="lines+markers", marker=dict(size=4), line=dict(color=color),
                                        legendgroup=split, showlegend=column == 1,
                                        hovertemplate=f"{key} %{{y:.4g}}<br>epoch %{{x}}<extra></extra>"),
                             row=1, col=column)  # fmt: skip
    if diverged is not None:
        epoch = (log.summary.epochs_completed if log.summary else len(epochs)) + 1
        for column in (1, 2):
            figure.add_vline(x=epoch, line=dict(color="crimson", dash="dash"), row=1, col=column)
        figure.add_annotation(x=epoch, y=1, yref="paper", text=f"diverged at step {diverged.step}",
                              showarrow=False, font=dict(color="crimson"), xanchor="right")  # fmt: skip
    figure.update_xaxes(title_text="epoch")
    figure.update_layout(height=380, margin=dict(t=70, b=40, l=60, r=20), hovermode="closest",
                         updatemenus=[_log_toggle(["yaxis"], log_first=False)],
                         legend=dict(orientation="h", y=-0.2, title="blue: training, red: validation"))  # fmt: skip
    return _figure(figure, "curves", _live(traces, context.marks))


def _gradient_flow(context: RunContext) -> str:
    go = plotly_objects()
    log, diverged = context.log, context.diverged
    if not log.layers:
        return "<p>No gradient log.</p>"
    steps = sorted({step for layer in log.layers for step in layer.steps})
    column = {step: i for i, step in enumerate(steps)}
    raw = [[None] * len(steps) for _ in log.layers]
    for row, layer in zip(raw, log.layers):
        for step, value in zip(layer.steps, layer.values(OUT_GRAD_NORM)):
            row[column[step]] = value
    logs = [_clean([math.log10(v) if v is not None and math.isfinite(v) and v > 0 else None for v in row]) for row in raw]
    finite = [v for row in logs for v in row if v is not None]
    low, high = (math.floor(min(finite)), math.ceil(max(finite))) if finite else (-1, 0)
    ticks = list(range(low, high + 1, _decade_step(high - low)))
    names = [layer.name for layer in log.layers]
    heatmap = go.Heatmap(
        z=logs, x=steps, y=names, customdata=[_clean(row) for row in raw], colorscale="Viridis", zmin=low, zmax=high,
        colorbar=dict(title="‖∂L/∂f‖", tickvals=ticks, ticktext=[f"1e{t}" for t in ticks]),
        hovertemplate="%{y}, step %{x}<br>‖∂L/∂f‖ %{customdata:.3e}<extra></extra>",
    )  # fmt: skip
    figure = go.Figure(heatmap)
    if diverged is not None:
        figure.add_vline(x=diverged.step, line=dict(color="crimson", dash="dash"))
    figure.update_layout(height=max(280, 120 + 28 * len(names)), margin=dict(t=30, b=40, l=70, r=20),
                         xaxis_title="step", yaxis_title="layer (input at the bottom)")  # fmt: skip
    explain = ('<p class="explain">‖∂L/∂f_i‖, the backpropagated signal reaching each layer\'s output, at every '
               "logged step, on a log colour scale: a signal that vanishes on its way back to the input shows as "
               "a dark bottom, one that explodes as a bright bottom.</p>")  # fmt: skip
    live = _live([{"source": rundir.GRADIENTS_FILE, "x": STEP, "z": OUT_GRAD_NORM, "rows": LAYER}],
                 context.marks, kind="heatmap", max_ticks=MAX_TICKS)  # fmt: skip
    return explain + _figure(figure, "gradient-flow", live) + _layer_curves(context)


def _layer_curves(context: RunContext) -> str:
    from plotly.subplots import make_subplots

    go = plotly_objects()
    log, diverged, traces = context.log, context.diverged, []
    shown = [(c, t, lg) for c, t, lg in LAYER_CURVES if any(v is not None for l in log.layers for v in l.values(c))]
    figure = make_subplots(rows=1, cols=len(shown), subplot_titles=[title for _, title, _ in shown],
                           horizontal_spacing=0.06)  # fmt: skip
    for index, (layer, color) in enumerate(zip(log.layers, _layer_colors(len(log.layers)))):
        for col, (column, _, _) in enumerate(shown, start=1):
            figure.add_trace(go.Scatter(x=layer.steps, y=_clean(layer.values(column)), name=layer.name,
                                        legendgroup=layer.name, showlegend=col == 1, line=dict(color=color, width=1.4),
                                        hovertemplate=f"{layer.name} step %{{x}}<br>{column} %{{y:.3g}}<extra></extra>"),
                             row=1, col=col)  # fmt: skip
            traces.append({"source": rundir.GRADIENTS_FILE, "x": STEP, "y": column, "match": {LAYER: layer.name}})
    for col, (column, _, log_scale) in enumerate(shown, start=1):
        values = [v for layer in log.layers for v in layer.values(column)]
        if log_scale:  # labels on whole decades only: minor labels crowd a short axis
            figure.update_yaxes(type="log", dtick=_decade_step(_decades(values)), exponentformat="e", row=1, col=col)
        if column in FRACTIONS:  # a fraction's axis starts at 0; at 0..1 while every value is 0 (not −1..1)
            zero = all(v == 0 for v in values if v is not None)
            figure.update_yaxes(rangemode="tozero", range=[0, 1] if zero else None, row=1, col=col)
        if diverged is not None:
            figure.add_vline(x=diverged.step, line=dict(color="crimson", dash="dash"), row=1, col=col)
    figure.update_xaxes(title_text="step")
    figure.update_layout(height=380, margin=dict(t=40, b=40, l=60, r=20), legend=dict(title="input → output"))
    return _figure(figure, "layer-curves", _live(traces, context.marks))


INSTRUMENT_CHARTS = (
    ("noise_scale_smoothed", "noise scale: smoothed, per step (dots)", True),
    ("norm_test", "norm test", False), ("inner_test", "inner-product test", False),
    ("ortho_test", "orthogonality test", False), ("alpha", "step quality α", False),
    ("lr_lambda_max", "lr · λ_max", False),
)  # fmt: skip
BAND_COLORS = {"ok": "rgba(46,125,50,0.12)", "steps too short": "rgba(239,108,0,0.18)"}  # other verdicts: red
BAD_BAND = "rgba(198,40,40,0.15)"


def _instruments(context: RunContext) -> str | None:
    """The "Instruments" part of a run's page: each instrument's verdict with its threshold, and its curve over
    the steps on the verdict bands (instruments.csv's `total` rows; thresholds from autobp.health); none without
    instruments.csv."""
    from autobp.common.text import format_number
    from autobp.health import instrument_bands

    log, verdicts = context.log, context.report.instruments
    if log.instruments is None:
        return None
    rows = [[html.escape(v.instrument), format_number(v.value), html.escape(v.trend),
             f'<span class="{"verdict-ok" if v.verdict == "ok" else "verdict-bad"}">{html.escape(v.verdict)}</span>',
             format_number(v.threshold), html.escape(v.window), html.escape(v.message)] for v in verdicts]  # fmt: skip
    headers = ["instrument", "value", "trend", "verdict", "threshold", "judged over", "why"]
    table = f'<div class="instruments">{_table(headers, rows)}</div>'
    explain = ('<p class="explain">From instruments.csv (the rows of the whole network): the gradient noise scale against '
               "the batch size, the norm, inner-product and orthogonality tests, the step quality α (−1: no progress, "
               "0: to the minimum along the step, 1: over to the other side) and lr·λ_max against the stability "
               "limit 2. Dots: each instrumented step; line: the smoothed noise scale, else a running median; "
               "dashed: the judged value over the steps it was judged on. Shaded: the verdict each value would get "
               "(green ok, red or orange not).</p>")  # fmt: skip
    batch = log.config.training.batch_size if log.config is not None else None
    charts = _instrument_charts(log.instruments.total, instrument_bands(batch), verdicts, context.marks)
    return explain + table + charts


def _instrument_charts(total: Any, bands: dict[str, list[tuple[float | None, float | None, str]]],
                       verdicts: Sequence[Any], marks: dict[str, Any]) -> str:  # fmt: skip
    from plotly.subplots import make_subplots

    go = plotly_objects()
    if total is None:
        return "<p>No instrumented step.</p>"
    shown = [chart for chart in INSTRUMENT_CHARTS if any(v is not None for v in total.values(chart[0]))]
    if not shown:
        return ""
    cols = 3
    rows = math.ceil(len(shown) / cols)
    figure = make_subplots(rows=rows, cols=cols, subplot_titles=[title for _, title, _ in shown],
                           horizontal_spacing=0.07, vertical_spacing=0.16)  # fmt: skip
    traces: list[dict | None] = []  # the live view grows the per-step dots and the smoothed noise scale; the rest
    follow = {"source": INSTRUMENTS_FILE, "x": "step", "match": {"block": TOTAL}}  # is redrawn when the run ends
    for index, (column, _, log_scale) in enumerate(shown):
        row, col = index // cols + 1, index % cols + 1
        steps, values = total.series(column)
        values = _clean(values)
        smoothed = column == "noise_scale_smoothed"
        dot_steps, dots = total.series("noise_scale") if smoothed else (steps, values)
        figure.add_trace(go.Scatter(x=dot_steps, y=_clean(dots), mode="markers", name="per step", showlegend=False,
                                    marker=dict(size=3, color="#8a8a8a"),
                                    hovertemplate="step %{x}<br>per step %{y:.4g}<extra></extra>"),
                         row=row, col=col)  # fmt: skip
        traces.append({**follow, "y": "noise_scale" if smoothed else column})
        line = values if smoothed else _running_median(values)
        traces.append({**follow, "y": column} if smoothed else None)
        figure.add_trace(go.Scatter(x=steps, y=line, mode="lines", name=column, showlegend=False,
                                    line=dict(color="#1f3b73", width=1.8),
                                    hovertemplate=f"step %{{x}}<br>{'' if smoothed else 'running median '}"
                                                  f"%{{y:.4g}}<extra></extra>"),
                         row=row, col=col)  # fmt: skip
        judged = next((v for v in verdicts if v.instrument == column and v.value is not None), None)
        if judged is not None:  # the judged value across the steps it was judged over
            traces.append(None)
            first, last = (int(step) for step in judged.window.removeprefix("steps ").split("–"))
            figure.add_trace(go.Scatter(x=[first, last], y=[judged.value] * 2, mode="lines", showlegend=False,
                                        line=dict(color="#000", dash="dash", width=2), name="judged value",
                                        hovertemplate=f"judged value %{{y:.4g}} ({judged.verdict})<extra></extra>"),
                             row=row, col=col)  # fmt: skip
        _shade(figure, [v for v in values if v is not None and (v > 0 or not log_scale)], bands.get(column, []),
               log_scale, row, col)  # fmt: skip
    figure.update_xaxes(title_text="step")
    figure.update_layout(height=330 * rows, margin=dict(t=40, b=40, l=60, r=20), hovermode="closest",
                         plot_bgcolor="white")  # fmt: skip
    return _figure(figure, "instruments", _live(traces, marks))


def _running_median(values: list[float | None]) -> list[float | None]:
    """A centred running median over about a 25th of the steps: the trend through per-step noise."""
    width = max(1, len(values) // 25) | 1
    if width == 1:
        return values
    padded = np.array([np.nan if v is None else v for v in values], dtype=float)
    padded = np.pad(padded, width // 2, constant_values=np.nan)  # the ends: medians of the values there are
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a window of gaps only
            return _clean(np.nanmedian(windows, axis=1).tolist())


def _shade(figure: Any, values: list[float], bands: list[tuple[float | None, float | None, str]], log_scale: bool,
           row: int, col: int) -> None:  # fmt: skip
    """Shade each verdict band across the chart's range: the 5th to 95th percentile of the values (a rare wild α
    would flatten the rest) and every threshold, padded."""
    thresholds = [edge for low, high, _ in bands for edge in (low, high) if edge is not None]
    kept = [float(v) for v in np.percentile(values, [5, 95])] if values else []
    points = [v for v in kept + thresholds if not log_scale or v > 0]
    if not points:
        return
    low, high = min(points), max(points)
    if log_scale:
        bottom, top = math.log10(low) - 0.15, math.log10(high) + 0.15
        figure.update_yaxes(type="log", range=[bottom, top], exponentformat="e", row=row, col=col)
        bottom, top = 10**bottom, 10**top
    else:
        pad = 0.08 * (high - low) or 1.0
        bottom, top = low - pad, high + pad
        figure.update_yaxes(range=[bottom, top], row=row, col=col)
    for band_low, band_high, verdict in bands:
        y0 = bottom if band_low is None else max(band_low, bottom)
        y1 = top if band_high is None else min(band_high, top)
        if y1 > y0:
            figure.add_hrect(y0=y0, y1=y1, fillcolor=BAND_COLORS.get(verdict, BAD_BAND), line_width=0, layer="below",
                             row=row, col=col)  # fmt: skip


def _decades(values: Sequence[float | None]) -> int:
    """How many decades the finite positive values span."""
    logs = [math.log10(v) for v in values if v is not None and math.isfinite(v) and v > 0]
    return math.ceil(max(logs)) - math.floor(min(logs)) if logs else 1


def _decade_step(decades: int) -> int:
    """Label every n-th decade, so that a log axis carries at most MAX_TICKS labels."""
    return max(1, math.ceil(decades / MAX_TICKS))


def _distributions(context: RunContext) -> str:
    from plotly.subplots import make_subplots

    from autobp.rundir.histograms import QUANTITIES
    from autobp.rundir.histograms import read as read_histograms

    go = plotly_objects()
    histograms = read_histograms(context.run_dir)
    if histograms is None:
        return "<p>This run has no histograms.npz (it was trained by an autobp that did not write one).</p>"
    figure = make_subplots(rows=1, cols=len(QUANTITIES), subplot_titles=[QUANTITY_TITLES[q] for q in QUANTITIES],
                           horizontal_spacing=0.07)  # fmt: skip
    steps = histograms.steps.tolist()
    for index, layer in enumerate(histograms.layers):
        for col, quantity in enumerate(QUANTITIES, start=1):
            bands = histograms.percentiles(index, quantity, BANDS).T
            for trace in _band_traces(go, steps, bands, layer, visible=index == 0, legend=col == 1):
                figure.add_trace(trace, row=1, col=col)
    per_layer = BAND_TRACES * len(QUANTITIES)
    buttons = [dict(label=layer, method="update",
                    args=[{"visible": [i // per_layer == index for i in range(per_layer * len(histograms.layers))]}])
               for index, layer in enumerate(histograms.layers)]  # fmt: skip
    figure.update_xaxes(title_text="step")
    figure.update_layout(height=380, margin=dict(t=80, b=40, l=60, r=20), legend=dict(orientation="h", y=-0.2),
                         updatemenus=[dict(buttons=buttons, x=0, y=1.25, xanchor="left", yanchor="top")])  # fmt: skip
    explain = ('<p class="explain">Per layer (choose it above the charts), how the entries of ∂L/∂W, of W and of the '
               "pre-activations z are distributed at up to 100 snapshots: the band spans the minimum to the maximum, "
               "the darker band the 16th to 84th percentile, the line is the median (from histograms.npz: counts of "
               "up to 1,024 sampled entries in fixed bins, 8 per decade).</p>")  # fmt: skip
    return explain + _figure(figure, "distributions")


def _band_traces(go: Any, steps: list[int], bands: Any, layer: str, *, visible: bool, legend: bool) -> list[Any]:
    low, inner_low, middle, inner_high, high = (_clean(band.tolist()) for band in bands)
    common = dict(x=steps, visible=visible, legendgroup="bands", hoverinfo="skip", mode="lines")
    return [
        go.Scatter(y=low, line=dict(width=0, color="#9ecae1"), showlegend=False, **common),
        go.Scatter(y=high, fill="tonexty", fillcolor="rgba(158,202,225,0.45)", line=dict(width=0), showlegend=legend,
                   name="min–max", **common),
        go.Scatter(y=inner_low, line=dict(width=0, color="#4292c6"), showlegend=False, **common),
        go.Scatter(y=inner_high, fill="tonexty", fillcolor="rgba(66,146,198,0.55)", line=dict(width=0),
                   showlegend=legend, name="16th–84th percentile", **common),
        go.Scatter(x=steps, y=middle, visible=visible, name="median", showlegend=legend, mode="lines",
                   line=dict(color="#08306b", width=1.6), hovertemplate=f"{layer} step %{{x}}<br>median %{{y:.3g}}<extra></extra>"),
    ]  # fmt: skip


def _graph(context: RunContext) -> str:
    from autobp.tools.graph import build_graph, legend, to_svg

    try:
        graph = build_graph(context.run_dir, 0)
    except AutobpError as err:
        return f'<p class="note">The computation graph needs the run\'s data and model.npz: {html.escape(str(err))}</p>'
    explain = ('<p class="explain">The engine\'s recorded graph for one validation example with the trained weights: '
               "every operation it ran, with its forward value and its adjoint ∂L/∂· from the reverse pass; each edge "
               "carries the local derivative it contributes. <code>autobp graph</code> draws it alone.</p>")  # fmt: skip
    fit = ('<input type="checkbox" id="graph-fit"> <label for="graph-fit">fit the drawing to the page width</label> '
           "(click a fitted drawing to see that place at full size; else scroll it)")  # fmt: skip
    drawing = to_svg(graph, values=False)  # the drawing shows the numbers; their full lists are `autobp graph`'s
    return explain + legend() + fit + f'<div class="graph">{drawing}</div><script>{ZOOM_SCRIPT}</script>'


def _config(context: RunContext) -> str:
    path = context.run_dir / rundir.CONFIG_FILE
    text = path.read_text(encoding="utf-8") if path.is_file() else "(no config.yaml)"
    return f"<details><summary>the resolved config.yaml</summary><pre>{html.escape(text)}</pre></details>"


# --- a sweep ----------------------------------------------------------------------------------------------------


@dataclass
class _Trial:
    """A row of the sweep's table: the trial, how it ended, its compared run and the values the sweep gave it."""

    name: str
    outcome: Any
    run: Any
    values: dict[str, Any]
    metrics: list[dict] = field(default_factory=list)


class SweepContext:
    """What a sweep page's sections read; `link` turns a trial directory into the address of its page."""

    def __init__(self, sweep_dir: Path, link: Callable[[Path], str]) -> None:
        self.sweep_dir, self.link = sweep_dir, link
        self.trial_dirs = _sweep_trials(sweep_dir)
        self.sections = SWEEP_SECTIONS

    @cached_property
    def marks(self) -> dict[str, tuple[int, int] | None]:
        from autobp.rundir.reader import log_mark

        return {f"{trial.name}/{rundir.METRICS_FILE}": log_mark(trial / rundir.METRICS_FILE)
                for trial in self.trial_dirs}  # fmt: skip

    @property
    def title(self) -> str:
        try:
            name = self.record.name
        except AutobpError:
            name = self.sweep_dir.name
        return f"{name}: autobp sweep report"

    @cached_property
    def record(self) -> Any:
        from autobp.sweeps.record import read_record

        return read_record(self.sweep_dir)

    @cached_property
    def outcomes(self) -> list[Any]:
        from autobp.sweeps.record import read_outcomes

        return read_outcomes(self.sweep_dir, self.record, [])

    @cached_property
    def ranked(self) -> list[_Trial]:
        """The trials with a run directory, best first, as the sweep ranks them."""
        from autobp.rundir.reader import read_run
        from autobp.tools.compare import compare_runs

        if not self.trial_dirs:
            return []
        _ = self.marks  # taken before the logs are read: rows appended meanwhile come again, none is lost
        by_trial = {Path(run.run_dir).name: run for run in compare_runs([self.sweep_dir], "epochs").runs}
        trials = self.record.trials
        ranked = [_Trial(trials[i].trial, self.outcomes[i], by_trial[trials[i].trial], trials[i].values)
                  for i in self.record.ranking.order(self.outcomes) if trials[i].trial in by_trial]  # fmt: skip
        for trial in ranked:
            trial.metrics = read_run(Path(trial.run.run_dir), with_gradients=False).metrics
        return ranked

    @property
    def keys(self) -> list[str]:
        """The swept keys."""
        return list(self.record.trials[0].values) if self.record.trials else []

    @cached_property
    def state(self) -> list:
        """What the sections are drawn from: sweep.yaml, trials.csv, the trials' directories and statuses."""
        from autobp.common.errors import AutobpError
        from autobp.sweeps.record import SWEEP_FILE, TRIALS_FILE

        try:
            statuses = [outcome.status for outcome in self.outcomes]
        except AutobpError as err:
            statuses = [str(err)]
        return [signature(self.sweep_dir / SWEEP_FILE), signature(self.sweep_dir / TRIALS_FILE),
                [trial.name for trial in self.trial_dirs], statuses]  # fmt: skip

    def version(self, section: Section) -> str:
        return _digest([self.state, [signature(self.sweep_dir / name) for name in section.watches]])


def _sweep_table(context: SweepContext) -> str:
    from autobp.common.text import format_number
    from autobp.sweeps.record import EPOCHS, STATUS, TRIAL, best_column
    from autobp.sweeps.table import RANK

    record, ranking = context.record, context.record.ranking
    rows = []
    for place, trial in enumerate(context.ranked, start=1):
        value = ranking.value(trial.outcome)
        link = html.escape(context.link(Path(trial.run.run_dir)))
        metrics = [format_number(value), format_number(trial.outcome.best(record.monitor))]
        rows.append([str(place) if value is not None else "-", f'<a class="trial" href="{link}">{html.escape(trial.name)}</a>',
                     _badge(trial.outcome.status), *(_cell(trial.values.get(key)) for key in context.keys), *metrics,
                     str(trial.run.epochs)])  # fmt: skip
    headers = [RANK, TRIAL, STATUS, *context.keys, record.monitor, best_column(record.monitor), EPOCHS]
    return (f'<h1>{html.escape(record.name)} <span class="status completed">sweep</span></h1>'
            f"<p>{len(rows)} trials, {html.escape(ranking.describe())}. Each trial links to its own report.<br>"
            f"Sweep directory: <code>{html.escape(str(context.sweep_dir))}</code></p>"
            + _table(headers, rows))  # fmt: skip


def _badge(status: str) -> str:
    status = html.escape(status)
    return f'<span class="status {status}">{status}</span>'


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve()).replace(os.sep, "/")


def _cell(value: Any) -> str:
    from autobp.common.text import format_number

    return html.escape(format_number(value) if isinstance(value, float) else str(value))


def _sweep_curves(context: SweepContext) -> str:
    go = plotly_objects()
    monitor, keys = context.record.monitor, context.keys
    curve = monitor if monitor.startswith("val_") else "val_loss"
    figure, traces = go.Figure(), []
    for trial, color in zip(context.ranked, _layer_colors(len(context.ranked))):
        params = "<br>".join(f"{html.escape(key)} = {_cell(trial.values.get(key))}" for key in keys)
        name = html.escape(trial.name)
        figure.add_trace(go.Scatter(x=[row.get("epoch") for row in trial.metrics], y=_clean([row.get(curve) for row in trial.metrics]),
                                    name=trial.name, mode="lines", line=dict(color=color, width=1.5),
                                    hovertemplate=f"<b>{name}</b><br>{params}<br>epoch %{{x}}: {curve} %{{y:.4g}}<extra></extra>"))  # fmt: skip
        traces.append({"source": f"{trial.name}/{rundir.METRICS_FILE}", "x": "epoch", "y": curve})
    log_first = curve.endswith("loss")
    figure.update_layout(height=420, margin=dict(t=60, b=40, l=60, r=20), xaxis_title="epoch", yaxis_title=curve,
                         yaxis_type="log" if log_first else "linear",
                         updatemenus=[_log_toggle(["yaxis"], log_first=log_first)])  # fmt: skip
    return _figure(figure, "sweep-curves", _live(traces, context.marks))


def _parallel(context: SweepContext) -> str:
    go = plotly_objects()
    monitor, trials = context.record.monitor, context.ranked
    dimensions = [_dimension(key, [trial.values.get(key) for trial in trials]) for key in context.keys]
    scores = [trial.run.metrics.get(monitor) for trial in trials]
    finite = [s for s in scores if s is not None and math.isfinite(s)]
    if not finite:
        return "<p>No trial has a finite monitored metric yet.</p>"
    worst = max(finite) if monitor.endswith("loss") else min(finite)
    scores = [s if s is not None and math.isfinite(s) else worst for s in scores]
    dimensions.append(dict(label=monitor, values=scores))
    figure = go.Figure(go.Parcoords(line=dict(color=scores, colorscale="Viridis", showscale=True,
                                              reversescale=monitor.endswith("loss")), dimensions=dimensions))  # fmt: skip
    figure.update_layout(height=420, margin=dict(t=60, b=30, l=80, r=80))
    return _figure(figure, "parallel")


def _dimension(key: str, values: list[Any]) -> dict:
    """A parallel-coordinates axis: numbers as they are (log10 when they span 100× or more), text as categories."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric and min(values) > 0 and max(values) >= 100 * min(values):
        return dict(label=f"log10 {key}", values=[math.log10(v) for v in values])
    if numeric:
        return dict(label=key, values=values)
    categories = sorted({str(v) for v in values})
    return dict(label=key, values=[categories.index(str(v)) for v in values], tickvals=list(range(len(categories))),
                ticktext=categories)  # fmt: skip


RUN_SECTIONS: list[Section] = [
    Section("summary", "", _summary),
    Section("verified-fixes", "", _verified_fixes, (DOCTOR_FILE,)),
    Section("curves", "Loss and metrics by epoch", _curves),
    Section("gradient-flow", "Gradient flow", _gradient_flow),
    Section("instruments", "Instruments", _instruments),
    Section("distributions", "Distributions over time", _distributions, (HISTOGRAMS_FILE,)),
    Section("graph", "The computation graph", _graph, (MODEL_FILE,)),
    Section("config", "Config", _config, (rundir.CONFIG_FILE,)),
]
SWEEP_SECTIONS: list[Section] = [
    Section("trials", "", _sweep_table),
    Section("sweep-curves", "Validation curves", _sweep_curves),
    Section("parallel", "Swept parameters against the result", _parallel),
]
