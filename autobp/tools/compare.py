"""Several runs side by side (`autobp compare`), and the runs and sweeps in a folder (`autobp runs`).

A sweep directory (sweep.yaml or trials.csv, with trial-NNN run directories inside) stands for its trials.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from autobp.common.errors import AutobpError, ConfigError, DataError
from autobp.common.files import signature
from autobp.common.text import flatten, format_number, format_table, format_wide_table, to_json
from autobp.rundir import layout as rundir
from autobp.rundir.reader import is_run_dir, read_run, read_status, run_date
from autobp.config.catalog import METRICS, lower_is_better
from autobp.sweeps.record import is_sweep_dir, read_outcomes, read_record, trial_dirs
from autobp.tools.report import Report, build_report, summarize_series

# The run column already shows the name, and where a run was written says nothing about how it trained.
IGNORED_KEYS = ("name", "output.dir")
# The metric that stands for a run in `autobp runs`: the first one it has, by its best value.
HEADLINE_METRICS = tuple(f"{split}_{metric}" for split in ("val", "train") for metric in sorted(METRICS, key="loss".__eq__))
SIGNAL_RATIO = "signal_ratio"
RUN_COLUMNS = ("status", "epochs", SIGNAL_RATIO, "diagnoses")  # besides metrics and config keys
FOLDABLE_COLUMNS = ("status", "epochs")  # by default shown only when they differ; else named once below the table
TABLE_WIDTH = 120  # the text table's width off a terminal
LAYER_PREFIX = "model.layers."


@dataclass
class ComparedRun:
    """One row of the comparison."""

    label: str
    run_dir: str
    status: str
    epochs: int
    config: dict[str, Any]  # the resolved config, flattened, its layers folded back (see fold_layers)
    metrics: dict[str, float | None]
    signal_ratio: float | None
    diagnoses: list[str]
    unfolded: dict[str, Any] = field(default_factory=dict)  # the resolved config, flattened, every layer key kept

    def value(self, column: str) -> Any:
        if column == SIGNAL_RATIO:
            return self.signal_ratio
        if column in ("status", "epochs"):
            return getattr(self, column)
        if column == "diagnoses":
            return ", ".join(dict.fromkeys(self.diagnoses)) or None
        if column in self.metrics:
            return self.metrics[column]
        # A per-layer key is folded away where the layer agrees with the defaults; its real value is still there.
        return self.config[column] if column in self.config else self.unfolded.get(column)


@dataclass
class Comparison:
    """Runs sorted by `sort`; `differing` are the config keys whose values are not the same in every run;
    `columns` are the ones the table shows after the run's label, `shared` the default ones left out because
    every run has the same value."""

    sort: str
    differing: list[str]
    metrics: list[str]
    runs: list[ComparedRun]
    notes: list[str]
    columns: list[str]
    shared: dict[str, Any]


def compare_runs(paths: Sequence[Path], sort: str | None = None, columns: Sequence[str] | None = None) -> Comparison:
    """Compare run directories (a sweep directory counts as its trials), sorted by a metric or config key
    (default val_loss, or train_loss when no run has a validation split), showing `columns` (default: status and
    epochs unless every run has the same, the differing keys, validation metrics, signal ratio and diagnoses)."""
    runs, notes = [], []
    for label, path in _expand(paths):
        log = read_run(path)
        notes += [f"{label}: {note}" for note in log.notes]
        runs.append(_compared(label, build_report(log), log.config))
    differing = differing_keys([run.config for run in runs])
    metrics = list(dict.fromkeys(name for run in runs for name in run.metrics))
    per_layer = [key for key in differing_keys([run.unfolded for run in runs]) if key.startswith(LAYER_PREFIX)]
    sortable = [*metrics, SIGNAL_RATIO, "epochs", *dict.fromkeys([*differing, *per_layer])]
    sort = sort or ("val_loss" if "val_loss" in metrics else "train_loss")
    if sort not in sortable:
        raise ConfigError(f"--sort {sort}: not a column of this comparison; choose one of {', '.join(sortable)}")
    runs.sort(key=lambda run: _sort_key(run.value(sort), descending=not lower_is_better(sort)))
    shared = {}
    if columns is None:
        shared = {c: runs[0].value(c) for c in FOLDABLE_COLUMNS if len(runs) > 1 and _same(runs, c)}
        # Each run trained its training.epochs, a differing key: an `epochs` column would repeat that column.
        repeated = "training.epochs" in differing and all(run.epochs == run.value("training.epochs") for run in runs)
        columns = [c for c in _default_columns(sort, metrics, differing) if c not in shared]
        columns = [c for c in columns if not (repeated and c == "epochs")]
    else:
        _check_columns(columns, [*RUN_COLUMNS, *metrics], {key for run in runs for key in [*run.config, *run.unfolded]})
    return Comparison(sort, differing, metrics, runs, notes, [c for c in columns if c != "run"], shared)


def _same(runs: list[ComparedRun], column: str) -> bool:
    return len({json.dumps(run.value(column)) for run in runs}) == 1


def _default_columns(sort: str, metrics: list[str], differing: list[str]) -> list[str]:
    """What fits a terminal: the differing keys, the final losses and metrics of one split, and the sort key."""
    split = "val_" if "val_loss" in metrics else "train_"
    headline = [name for name in metrics if name.startswith(split)]
    shown = ["status", "epochs", *differing, *headline]
    return [*shown, *[sort] * (sort not in shown and sort != SIGNAL_RATIO), SIGNAL_RATIO, "diagnoses"]


def _check_columns(columns: Sequence[str], named: list[str], config_keys: set[str]) -> None:
    unknown = [column for column in columns if column not in (*named, "run") and column not in config_keys]
    if unknown:
        raise ConfigError(f"--columns {','.join(unknown)}: not a column of these runs; choose from "
                          f"{', '.join(named)} or a config key (model.hidden, optimizer.lr, …)")  # fmt: skip


def _expand(paths: Sequence[Path]) -> Iterator[tuple[str, Path]]:
    for path in paths:
        if is_sweep_dir(path):
            trials = trial_dirs(path)
            if not trials:
                raise DataError(f"{path}: a sweep directory without trial run directories yet")
            yield from ((f"{path.name}/{trial.name}", trial) for trial in trials)
        elif is_run_dir(path):
            yield path.name, path
        else:
            raise DataError(f"{path}: neither a run directory nor a sweep directory; `autobp runs` lists them")


def _compared(label: str, report: Report, config: Any) -> ComparedRun:
    metrics: dict[str, float | None] = {}
    for series in report.series:
        metrics[series.name] = series.final
        metrics[f"best_{series.name}"] = series.best
    layers = report.layers
    first, last = (layers[0].out_grad_norm_median, layers[-1].out_grad_norm_median) if layers else (None, None)
    unfolded = flatten(config.model_dump(mode="json")) if config is not None else {}
    return ComparedRun(
        label=label,
        run_dir=report.run_dir,
        status=report.status,
        epochs=report.epochs,
        config=fold_layers(unfolded),
        metrics=metrics,
        signal_ratio=first / last if first is not None and last else None,
        diagnoses=[diagnosis.kind for diagnosis in report.diagnoses],
        unfolded=unfolded,
    )


def fold_layers(config: dict[str, Any]) -> dict[str, Any]:
    """A flat resolved config with its layers written as a user would: `model.hidden`, with `model.activation` and
    `model.init` where the layers agree, and a per-layer key only where a layer differs from those defaults.
    The output layer's units are left out: the data sets them."""
    layers = _layers(config)
    if not layers:
        return config
    folded = {key: value for key, value in config.items() if not key.startswith(LAYER_PREFIX)}
    *hidden, output = layers
    folded["model.hidden"] = [layer.pop("units") for layer in hidden]
    output.pop("units", None)
    folded.update(_agreed("model.activation", [layer["activation"] for layer in hidden]))
    folded.update(_agreed("model.init", [layer["init"] for layer in layers]))
    defaults = {"activation": folded["model.activation"], "init": folded["model.init"], "dropout": 0.0}
    for index, layer in enumerate(layers):
        own = {**defaults, "activation": "identity"} if layer is output else defaults
        folded.update({f"{LAYER_PREFIX}{index}.{field}": value for field, value in layer.items()
                       if field not in own or value != own[field]})  # fmt: skip
    return folded


def _layers(config: dict[str, Any]) -> list[dict[str, Any]]:
    layers: dict[int, dict[str, Any]] = {}
    for key, value in config.items():
        if key.startswith(LAYER_PREFIX):
            index, field = key[len(LAYER_PREFIX) :].split(".", 1)
            layers.setdefault(int(index), {})[field] = value
    return [layers[index] for index in sorted(layers)]


def _agreed(key: str, values: list[Any]) -> dict[str, Any]:
    """{key: the value} when every layer has the same one, else nothing (the config's default stays)."""
    return {key: values[0]} if values and all(value == values[0] for value in values) else {}


def differing_keys(configs: list[dict[str, Any]]) -> list[str]:
    """The flattened config keys whose values are not the same in every config (the ignored keys aside)."""
    keys = dict.fromkeys(key for config in configs for key in config if key not in IGNORED_KEYS)
    return [key for key in keys if len({json.dumps(config.get(key)) for config in configs}) > 1]


def _sort_key(value: Any, *, descending: bool) -> tuple:
    # Numbers first (best first), then other values in text order, then runs without a usable value.
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return (0, -value if descending else value, "")
    if value is None or isinstance(value, float):
        return (2, 0, "")
    return (1, 0, str(value))


def render_comparison(comparison: Comparison, fmt: str, width: int = TABLE_WIDTH) -> str:
    """The comparison as `text` (no wider than `width`: further columns continue below), `markdown` or `json`."""
    if fmt == "json":
        return to_json({
            "sort": comparison.sort,
            "differing_keys": comparison.differing,
            "runs": [
                {"label": run.label, "run_dir": run.run_dir, "status": run.status, "epochs": run.epochs,
                 "config": {key: run.config.get(key) for key in comparison.differing}, "metrics": run.metrics,
                 "signal_ratio": run.signal_ratio, "diagnoses": run.diagnoses}
                for run in comparison.runs
            ],
        })  # fmt: skip
    headers = ["run", *comparison.columns]
    rows = [[run.label, *(_cell(run.value(column)) for column in comparison.columns)] for run in comparison.runs]
    if fmt == "markdown":
        lines = format_table(headers, rows, markdown=True)
    else:
        lines = format_wide_table(headers, rows, width)
    shared = "".join(f", {column} {_cell(value)}" for column, value in comparison.shared.items())
    footer = f"sorted by {comparison.sort}" + (f"; every run:{shared[1:]}" if shared else "")
    return "\n".join([*lines, "", footer])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_cell, value)) + "]"
    return "-" if value is None else str(value)


# --- runs -------------------------------------------------------------------------------------------------------


@dataclass
class ListedRun:
    """One line of `autobp runs`: a run or a sweep directory."""

    name: str
    kind: str
    status: str
    date: datetime
    epochs: int | None
    best: str
    path: str


def list_runs(directory: Path, cache: dict[Path, tuple[Any, ListedRun]] | None = None) -> tuple[list[ListedRun], list[str]]:
    """Run and sweep directories in `directory` (and one level down, e.g. `sweeps/`), newest first; notes name
    the directories skipped because they could not be read. A `cache` kept between calls spares reading again the
    runs whose files and status did not change."""
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory; pass the folder your runs are in (output.dir)")
    listed, notes = [], []
    for path in _candidates(directory, notes):
        try:
            name = str(path.relative_to(directory))
            listed.append(_sweep_entry(path, name, notes) if is_sweep_dir(path) else _cached(path, name, cache))
        except (OSError, AutobpError) as exc:
            notes.append(f"skipped {path}: {exc}")
    listed.sort(key=lambda entry: entry.date, reverse=True)
    return listed, notes


def _candidates(directory: Path, notes: list[str], depth: int = 1) -> Iterator[Path]:
    try:
        children = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        notes.append(f"skipped {directory}: {exc.strerror or exc}")
        return
    for child in children:
        try:
            recognised = is_run_dir(child) or is_sweep_dir(child)
        except OSError as exc:
            notes.append(f"skipped {child}: {exc.strerror or exc}")
            continue
        if recognised:
            yield child
        elif depth > 0:
            yield from _candidates(child, notes, depth - 1)


def _cached(path: Path, name: str, cache: dict[Path, tuple[Any, ListedRun]] | None) -> ListedRun:
    if cache is None:
        return _run_entry(path, name)
    files = (rundir.SUMMARY_FILE, rundir.METRICS_FILE, rundir.CONFIG_FILE)  # what a line of the list is read from
    token = [*(signature(path / file) for file in files), read_status(path)]
    if path not in cache or cache[path][0] != token:
        cache[path] = token, _run_entry(path, name)
    return cache[path][1]


def _run_entry(path: Path, name: str) -> ListedRun:
    log = read_run(path, with_gradients=False)
    if log.notes:
        raise DataError("; ".join(log.notes))
    metric, best = _headline(log.metrics)
    best_text = "-" if metric is None else f"{metric} {format_number(best)}"
    return ListedRun(name, "run", log.status, run_date(path), len(log.metrics), best_text, str(path))


def _sweep_entry(path: Path, name: str, notes: list[str]) -> ListedRun:
    """A sweep's line: its trials' statuses and its best trial, ranked as the sweep itself ranks them."""
    record = read_record(path)
    outcomes = read_outcomes(path, record, notes)
    if not outcomes:
        return ListedRun(name, "sweep, 0 trials", "no trials yet", run_date(path), None, "-", str(path))
    best = record.ranking.order(outcomes)[0]
    value = record.ranking.value(outcomes[best])
    best_text = "-" if value is None else f"{record.monitor} {format_number(value)} ({record.trials[best].trial})"
    statuses = Counter(outcome.status for outcome in outcomes)
    status = ", ".join(f"{count} {name}" for name, count in statuses.most_common())
    return ListedRun(name, f"sweep, {len(outcomes)} trials", status, run_date(path), None, best_text, str(path))


def _headline(metrics: list[dict[str, float | None]]) -> tuple[str | None, float | None]:
    series = {s.name: s for s in summarize_series(metrics)}
    name = next((name for name in HEADLINE_METRICS if name in series and series[name].best is not None), None)
    return name, None if name is None else series[name].best


def render_listing(listed: list[ListedRun], fmt: str) -> str:
    """`autobp runs` as `text`, `markdown` or `json`."""
    if fmt == "json":
        return to_json([
            {"name": e.name, "kind": e.kind, "status": e.status, "date": e.date.isoformat(timespec="seconds"),
             "epochs": e.epochs, "best": e.best, "path": e.path}
            for e in listed
        ])  # fmt: skip
    if not listed:
        return "no runs"
    headers = ["name", "kind", "status", "date", "epochs", "best"]
    rows = [
        [e.name, e.kind, e.status, e.date.strftime("%Y-%m-%d %H:%M"), "-" if e.epochs is None else str(e.epochs),
         e.best]
        for e in listed
    ]  # fmt: skip
    return "\n".join(format_table(headers, rows, markdown=fmt == "markdown"))
