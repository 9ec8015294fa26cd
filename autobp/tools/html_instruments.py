"""The run page's "Instruments" section: each instrument's verdict and its curve on the verdict bands."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from autobp.rundir.instruments import INSTRUMENTS_FILE, TOTAL
from autobp.tools.html_page import clean, figure_html, live_data, plotly_objects, table_html

if TYPE_CHECKING:
    from autobp.tools.html_run import RunContext

INSTRUMENT_CHARTS = (
    ("noise_scale_smoothed", "noise scale: smoothed, per step (dots)", True),
    ("norm_test", "norm test", False), ("inner_test", "inner-product test", False),
    ("ortho_test", "orthogonality test", False), ("alpha", "step quality α", False),
    ("lr_lambda_max", "lr · λ_max", False),
)  # fmt: skip
BAND_COLORS = {"ok": "rgba(46,125,50,0.12)", "steps too short": "rgba(239,108,0,0.18)"}  # other verdicts: red
BAD_BAND = "rgba(198,40,40,0.15)"


def instruments_section(context: RunContext) -> str | None:
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
    table = f'<div class="instruments">{table_html(headers, rows)}</div>'
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
        values = clean(values)
        smoothed = column == "noise_scale_smoothed"
        dot_steps, dots = total.series("noise_scale") if smoothed else (steps, values)
        figure.add_trace(go.Scatter(x=dot_steps, y=clean(dots), mode="markers", name="per step", showlegend=False,
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
        shown_values = [[v for v in series if v is not None and (v > 0 or not log_scale)] for series in (dots, line)]
        _shade(figure, *shown_values, bands.get(column, []), log_scale, row, col)
    figure.update_xaxes(title_text="step")
    figure.update_layout(height=330 * rows, margin=dict(t=40, b=40, l=60, r=20), hovermode="closest",
                         plot_bgcolor="white")  # fmt: skip
    return figure_html(figure, "instruments", live_data(traces, marks))


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
            return clean(np.nanmedian(windows, axis=1).tolist())


def _shade(figure: Any, dots: list[float], line: list[float], bands: list[tuple[float | None, float | None, str]],
           log_scale: bool, row: int, col: int) -> None:  # fmt: skip
    """Shade each verdict band across the chart's range: the 5th to 95th percentile of the per-step dots (a rare
    wild α would flatten the rest), the whole line drawn through them and every threshold, padded."""
    thresholds = [edge for low, high, _ in bands for edge in (low, high) if edge is not None]
    kept = [float(v) for v in np.percentile(dots, [5, 95])] if dots else []
    points = [v for v in kept + [min(line, default=None), max(line, default=None)] + thresholds
              if v is not None and (not log_scale or v > 0)]  # fmt: skip
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
