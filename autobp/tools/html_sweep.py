"""A sweep's page: its trials ranked (with `autobp.tools.compare.compare_runs`) and linked to their pages, their
validation curves and the swept parameters against the result (SWEEP_SECTIONS)."""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from autobp.common.errors import AutobpError
from autobp.common.files import signature
from autobp.rundir import layout as rundir
from autobp.tools.html_page import (
    Section, clean, digest, figure_html, layer_colors, live_data, log_toggle, plotly_objects, table_html,
)


def sweep_trials(sweep_dir: Path) -> list[Path]:
    from autobp.sweeps.record import trial_dirs

    return trial_dirs(sweep_dir)


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
        self.trial_dirs = sweep_trials(sweep_dir)
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
    def order(self) -> list[int]:
        """The trials' indexes, best first, as the sweep ranks them."""
        return self.record.ranking.order(self.outcomes)

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
                  for i in self.order if trials[i].trial in by_trial]  # fmt: skip
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
        return digest([self.state, [signature(self.sweep_dir / name) for name in section.watches]])


def _sweep_table(context: SweepContext) -> str:
    from autobp.common.text import format_number
    from autobp.sweeps.record import EPOCHS, STATUS, TRIAL, best_column
    from autobp.sweeps.table import RANK, pruned_notes, rank_labels

    record, ranking, outcomes, order = context.record, context.record.ranking, context.outcomes, context.order
    names = [trial.trial for trial in record.trials]
    ranks = dict(zip((names[index] for index in order), rank_labels(record, outcomes, order)))
    rows = []
    for trial in context.ranked:
        link = html.escape(context.link(Path(trial.run.run_dir)))
        metrics = [format_number(ranking.shown(trial.outcome)), format_number(trial.outcome.best(record.monitor))]
        rows.append([ranks[trial.name], f'<a class="trial" href="{link}">{html.escape(trial.name)}</a>',
                     _badge(trial.outcome.status), *(_cell(trial.values.get(key)) for key in context.keys), *metrics,
                     str(trial.run.epochs)])  # fmt: skip
    headers = [RANK, TRIAL, STATUS, *context.keys, record.monitor, best_column(record.monitor), EPOCHS]
    notes = "<br>".join(html.escape(line) for line in pruned_notes(record, outcomes, order, names))
    return (f'<h1>{html.escape(record.name)} <span class="status completed">sweep</span></h1>'
            f"<p>{len(rows)} trials, {html.escape(ranking.describe())}. Each trial links to its own report.<br>"
            + (f'<span class="mix">{html.escape(record.mix[:1].upper() + record.mix[1:])}.</span><br>'
               if record.mix else "") +
            f"Sweep directory: <code>{html.escape(str(context.sweep_dir))}</code></p>"
            + table_html(headers, rows) + (f'<p class="pruned-notes">{notes}</p>' if notes else ""))  # fmt: skip


def _badge(status: str) -> str:
    status = html.escape(status)
    return f'<span class="status {status}">{status}</span>'


def _cell(value: Any) -> str:
    from autobp.common.text import format_number

    return html.escape(format_number(value) if isinstance(value, float) else str(value))


def _sweep_curves(context: SweepContext) -> str:
    go = plotly_objects()
    monitor, keys = context.record.monitor, context.keys
    curve = monitor if monitor.startswith("val_") else "val_loss"
    figure, traces = go.Figure(), []
    for trial, color in zip(context.ranked, layer_colors(len(context.ranked))):
        params = "<br>".join(f"{html.escape(key)} = {_cell(trial.values.get(key))}" for key in keys)
        name = html.escape(trial.name)
        figure.add_trace(go.Scatter(x=[row.get("epoch") for row in trial.metrics], y=clean([row.get(curve) for row in trial.metrics]),
                                    name=trial.name, mode="lines", line=dict(color=color, width=1.5),
                                    hovertemplate=f"<b>{name}</b><br>{params}<br>epoch %{{x}}: {curve} %{{y:.4g}}<extra></extra>"))  # fmt: skip
        traces.append({"source": f"{trial.name}/{rundir.METRICS_FILE}", "x": "epoch", "y": curve})
    log_first = curve.endswith("loss")
    figure.update_layout(height=420, margin=dict(t=60, b=40, l=60, r=20), xaxis_title="epoch", yaxis_title=curve,
                         yaxis_type="log" if log_first else "linear",
                         updatemenus=[log_toggle(["yaxis"], log_first=log_first)])  # fmt: skip
    return figure_html(figure, "sweep-curves", live_data(traces, context.marks))


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
    return figure_html(figure, "parallel")


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


SWEEP_SECTIONS: list[Section] = [
    Section("trials", "", _sweep_table),
    Section("sweep-curves", "Validation curves", _sweep_curves),
    Section("parallel", "Swept parameters against the result", _parallel),
]
