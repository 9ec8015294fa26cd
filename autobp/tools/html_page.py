"""The page scaffolding shared by the run and the sweep pages: the shell, its sections and their versions, and the
chart helpers.

A page is a list of sections (RUN_SECTIONS, SWEEP_SECTIONS), each built from the run's files by one function, so
the static report and the live view show the same thing. Each chart that grows as a run trains carries, in `data-live`, which log columns its traces are drawn from and the
byte offset of the logs it was drawn from: the live view appends the rows written since (autobp.tools.view).
"""

from __future__ import annotations

import hashlib
import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from autobp.common.errors import AutobpError, ConfigError

if TYPE_CHECKING:
    from autobp.tools.html_run import RunContext
    from autobp.tools.html_sweep import SweepContext

INSTALL_HINT = "the HTML pages (--html, autobp view) need plotly: pip install 'autobp[report]'"
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
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
SHOWN_DIGITS = 4  # significant digits of the numbers in a chart: what hovers show, in a third of the bytes of all 17


def plotly_objects() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return go


@dataclass(frozen=True)
class Section:
    """One part of a page: built from the run's (or sweep's) files by `build` (None: the run has nothing for it);
    `watches` names the files, besides the page's own state (summary.json, the status and whether each appended log
    has rows yet, or the sweep's trials), whose change makes the live view rebuild it. A chart that grows with a log
    says how in `data-live` (`live_data`)."""

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


def digest(state: Any) -> str:
    return hashlib.sha1(json.dumps(state, default=str).encode()).hexdigest()[:16]


def figure_html(figure: Any, div_id: str, live: dict | None = None) -> str:
    """A chart; `live` says how its traces grow from appended log rows (see the module's docstring)."""
    import plotly.io as pio

    chart = pio.to_html(figure, include_plotlyjs=False, full_html=False, div_id=div_id, config=PLOT_CONFIG)
    return chart if live is None else f'<div class="live" data-live="{html.escape(json.dumps(live))}">{chart}</div>'


def live_data(traces: list[dict], marks: dict[str, tuple[int, int] | None], **more: Any) -> dict:
    """A chart's `data-live`: per trace (None: one that does not grow) its log (`source`, relative to the page's
    directory), its `x` and `y` columns and the rows it takes (`match`: column values), and the (file id, byte
    offset) up to which each log was read when the chart was drawn."""
    return {"traces": traces, "marks": {name: mark for name, mark in marks.items() if mark is not None}, **more}


def clean(values: Sequence[float | None]) -> list[float | None]:
    """Values as charts carry them: to SHOWN_DIGITS significant digits (the most a hover shows), and non-finite ones
    as gaps (plotly cannot draw inf or NaN)."""
    return [float(f"{v:.{SHOWN_DIGITS}g}") if v is not None and math.isfinite(v) else None for v in values]


def table_html(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def layer_colors(count: int) -> list[str]:
    from plotly.colors import sample_colorscale

    return sample_colorscale("Viridis", [0.9 * i / max(count - 1, 1) for i in range(count)])


def log_toggle(axes: Sequence[str], log_first: bool) -> dict:
    """Buttons switching the given y axes between linear and log scale."""
    order = ("log", "linear") if log_first else ("linear", "log")
    return dict(type="buttons", direction="right", x=0, y=1.18, xanchor="left", yanchor="top", showactive=True,
                buttons=[dict(label=f"{scale} scale", method="relayout",
                              args=[{f"{axis}.type": scale for axis in axes}]) for scale in order])  # fmt: skip
