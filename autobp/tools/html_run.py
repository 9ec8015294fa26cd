"""A run's page: its sections (RUN_SECTIONS), each built from the run directory by one function.

It reads the run directory through `autobp.rundir.reader.read_run` and `autobp.tools.report.build_report`,
histograms.npz through `autobp.rundir.histograms.read`, and embeds the computation graph of one validation example
(`autobp.tools.graph`).
"""

from __future__ import annotations

import html
import math
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

from autobp.common.errors import AutobpError
from autobp.common.files import signature
from autobp.model.network import MODEL_FILE
from autobp.rundir import layout as rundir
from autobp.rundir.doctor import DOCTOR_FILE
from autobp.rundir.histograms import HISTOGRAMS_FILE
from autobp.rundir.logs import DEAD_FRACTION, GRAD_NORM_W, LAYER, OUT_GRAD_NORM, SATURATED_FRACTION, STEP, UPDATE_RATIO
from autobp.rundir.status import Status
from autobp.tools.html_instruments import instruments_section
from autobp.tools.html_page import (
    Section, clean, digest, figure_html, layer_colors, live_data, log_toggle, plotly_objects, table_html,
)

BANDS = (0, 16, 50, 84, 100)  # percentiles of the distributions view: min–max, ±1σ of a normal, the median
BAND_TRACES = 5  # a band's traces: the lower and upper edge of each of the two bands, the median
LAYER_CURVES = (
    (GRAD_NORM_W, "‖∂L/∂W‖", True),
    (UPDATE_RATIO, "update ratio ‖ΔW‖/‖W‖", True),
    (DEAD_FRACTION, "dead fraction (ReLU family)", False),
    (SATURATED_FRACTION, "saturated fraction (tanh, sigmoid)", False),
)
QUANTITY_TITLES = {"weight_grad": "∂L/∂W", "weight": "W", "pre_activation": "pre-activation z"}
# A click on the fitted drawing shows it at full size, scrolled so that the clicked place is in the middle.
ZOOM_SCRIPT = """(() => { const fit = document.getElementById('graph-fit'), frame = document.querySelector('.graph');
frame.addEventListener('click', (event) => { if (!fit.checked) return; const box = frame.querySelector('svg')
.getBoundingClientRect(), x = (event.clientX - box.left) / box.width, y = (event.clientY - box.top) / box.height;
fit.checked = false; frame.scrollLeft = x * frame.scrollWidth - frame.clientWidth / 2;
frame.scrollTop = y * frame.scrollHeight - frame.clientHeight / 2; }); })();"""
MAX_TICKS = 8  # labels on a log axis or colour bar
FRACTIONS = (DEAD_FRACTION, SATURATED_FRACTION)  # between 0 and 1: their axes start at 0


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
        return digest([self.state, [signature(self.run_dir / name) for name in section.watches]])


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
    parts.append(table_html(["", "first", "best (epoch)", "final"], rows) if rows else "<p>No epoch was completed.</p>")
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
    parts.append(table_html(fix_headers(record), rows))
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
            figure.add_trace(go.Scatter(x=epochs, y=clean([row.get(key) for row in log.metrics]), name=key,
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
                         updatemenus=[log_toggle(["yaxis"], log_first=False)],
                         legend=dict(orientation="h", y=-0.2, title="blue: training, red: validation"))  # fmt: skip
    return figure_html(figure, "curves", live_data(traces, context.marks))


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
    logs = [clean([math.log10(v) if v is not None and math.isfinite(v) and v > 0 else None for v in row]) for row in raw]
    finite = [v for row in logs for v in row if v is not None]
    low, high = (math.floor(min(finite)), math.ceil(max(finite))) if finite else (-1, 0)
    ticks = list(range(low, high + 1, _decade_step(high - low)))
    names = [layer.name for layer in log.layers]
    heatmap = go.Heatmap(
        z=logs, x=steps, y=names, customdata=[clean(row) for row in raw], colorscale="Viridis", zmin=low, zmax=high,
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
    live = live_data([{"source": rundir.GRADIENTS_FILE, "x": STEP, "z": OUT_GRAD_NORM, "rows": LAYER}],
                     context.marks, kind="heatmap", max_ticks=MAX_TICKS)  # fmt: skip
    return explain + figure_html(figure, "gradient-flow", live) + _layer_curves(context)


def _layer_curves(context: RunContext) -> str:
    from plotly.subplots import make_subplots

    go = plotly_objects()
    log, diverged, traces = context.log, context.diverged, []
    shown = [(c, t, lg) for c, t, lg in LAYER_CURVES if any(v is not None for l in log.layers for v in l.values(c))]
    figure = make_subplots(rows=1, cols=len(shown), subplot_titles=[title for _, title, _ in shown],
                           horizontal_spacing=0.06)  # fmt: skip
    for index, (layer, color) in enumerate(zip(log.layers, layer_colors(len(log.layers)))):
        for col, (column, _, _) in enumerate(shown, start=1):
            figure.add_trace(go.Scatter(x=layer.steps, y=clean(layer.values(column)), name=layer.name,
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
    return figure_html(figure, "layer-curves", live_data(traces, context.marks))


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
    return explain + figure_html(figure, "distributions")


def _band_traces(go: Any, steps: list[int], bands: Any, layer: str, *, visible: bool, legend: bool) -> list[Any]:
    low, inner_low, middle, inner_high, high = (clean(band.tolist()) for band in bands)
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


RUN_SECTIONS: list[Section] = [
    Section("summary", "", _summary),
    Section("verified-fixes", "", _verified_fixes, (DOCTOR_FILE,)),
    Section("curves", "Loss and metrics by epoch", _curves),
    Section("gradient-flow", "Gradient flow", _gradient_flow),
    Section("instruments", "Instruments", instruments_section),
    Section("distributions", "Distributions over time", _distributions, (HISTOGRAMS_FILE,)),
    Section("graph", "The computation graph", _graph, (MODEL_FILE,)),
    Section("config", "Config", _config, (rundir.CONFIG_FILE,)),
]
