"""`autobp export RUN_OR_SWEEP --format tensorboard`: a run's logs, or every trial of a sweep, as TensorBoard events.

Per run: each column of metrics.csv as `metrics/<column>` at the step that ended the epoch, each column of
gradients.csv as `<layer>/<column>` at its logged step (TensorBoard groups the charts by layer), and the config as
hyperparameters with the final metrics for the HParams view; where the run has histograms.npz, its distributions as
histograms `<layer>/distribution/<quantity>`; where it has instruments.csv, each of its values as
`instruments/<block>/<column>` at its step. A sweep's trials become one TensorBoard run each,
with the config keys that differ between trials as their hyperparameters, so the trials compare there.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autobp.common.errors import ConfigError, DataError
from autobp.common.text import flatten
from autobp.rundir.histograms import QUANTITIES, bin_edges
from autobp.rundir.histograms import read as read_histograms
from autobp.rundir.reader import RunLog, is_run_dir, read_run
from autobp.sweeps.record import is_sweep_dir, trial_dirs
from autobp.tools.compare import differing_keys

EXPORT_DIR = "tensorboard"
EVENTS_PREFIX = "events.out.tfevents."
METRICS_GROUP = "metrics"
NOT_METRICS = ("epoch", "step", "lr", "seconds")  # columns of metrics.csv that the HParams view does not rank by
INSTALL_HINT = "--format tensorboard needs tensorboardX: pip install 'autobp[export]'"


@dataclass
class TensorboardExport:
    """What an export wrote: the log directory, its runs (relative folders) and how many scalars in all."""

    directory: Path
    runs: list[str]
    scalars: int


def export_tensorboard(source: Path, out: Path | None = None) -> TensorboardExport:
    """Write a run's (or each trial's) events into `out` (default SOURCE/tensorboard), replacing an earlier export."""
    writer_class = _summary_writer()
    out = out if out is not None else source / EXPORT_DIR
    runs = _runs(source)
    _check_destination(out)
    staging = out.with_name(f".{out.name}.{os.getpid()}.{time.time_ns()}.tmp")
    staging.mkdir()  # not tempfile.mkdtemp: the export keeps the folder, so it gets the user's usual permissions
    try:
        scalars = sum(_write_run(writer_class, staging / folder, log, hparams) for folder, log, hparams in runs)
        _replace(out, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return TensorboardExport(out, [folder for folder, _, _ in runs], scalars)


def _summary_writer() -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return SummaryWriter


def _runs(source: Path) -> list[tuple[str, RunLog, dict[str, Any]]]:
    """(folder, log, hyperparameters) per TensorBoard run: the run itself, or each trial of a sweep."""
    if is_sweep_dir(source):
        trials = trial_dirs(source)
        if not trials:
            raise DataError(f"{source}: a sweep directory without trial run directories yet")
        logs = [read_run(trial) for trial in trials]
        configs = [_flat_config(log) for log in logs]
        differing = differing_keys(configs)
        return [(log.name, log, {key: config.get(key) for key in differing}) for log, config in zip(logs, configs)]
    if is_run_dir(source):
        log = read_run(source)
        return [(".", log, _flat_config(log))]
    raise DataError(f"{source}: neither a run directory nor a sweep directory; `autobp runs` lists them")


def _flat_config(log: RunLog) -> dict[str, Any]:
    return flatten(log.config.model_dump(mode="json")) if log.config is not None else {}


def _write_run(writer_class: Any, directory: Path, log: RunLog, hparams: dict[str, Any]) -> int:
    """Write one run's scalars and hyperparameters into `directory`; returns the number of scalars."""
    writer = writer_class(logdir=str(directory), max_queue=1000, flush_secs=3600)
    try:
        count = _add_metrics(writer, log) + _add_gradients(writer, log) + _add_instruments(writer, log)
        _add_distributions(writer, log)
        _add_hparams(writer, log, hparams)
    finally:
        writer.close()
    return count


def _add_metrics(writer: Any, log: RunLog) -> int:
    count = 0
    for row in log.metrics:
        step = row.get("step")
        for column, value in row.items():
            if step is not None and column != "step" and value is not None:
                writer.add_scalar(f"{METRICS_GROUP}/{column}", value, step)
                count += 1
    return count


def _add_gradients(writer: Any, log: RunLog) -> int:
    return _add_columns(writer, log.layers, "")


def _add_instruments(writer: Any, log: RunLog) -> int:
    return _add_columns(writer, log.instruments.blocks if log.instruments is not None else [], "instruments/")


def _add_columns(writer: Any, logs: Any, prefix: str) -> int:
    """Every value of each log's columns (a layer's or an instruments block's) as `<prefix><name>/<column>`."""
    count = 0
    for log in logs:
        for column, values in log.columns.items():
            for step, value in zip(log.steps, values):
                if value is not None:
                    writer.add_scalar(f"{prefix}{log.name}/{column}", value, step)
                    count += 1
    return count


def _add_distributions(writer: Any, log: RunLog) -> int:
    """histograms.npz, where the run has one, as TensorBoard histograms `<layer>/distribution/<quantity>`: the same
    fixed bins (the open outer bins end at one decade past the last edge), the empty ends left out."""
    histograms = read_histograms(log.path)
    if histograms is None:
        return 0
    edges = bin_edges()
    limits = edges[1:].copy()
    limits[-1] = edges[-2] * 10.0
    centers = np.concatenate([[edges[1] * 10.0], (edges[1:-2] + edges[2:-1]) / 2.0, [limits[-1]]])
    written = 0
    for s, step in enumerate(histograms.steps.tolist()):
        for l, layer in enumerate(histograms.layers):
            for q, quantity in enumerate(QUANTITIES):
                counts = histograms.counts[s, l, q].astype(np.float64)
                used = np.flatnonzero(counts)
                if not used.size:
                    continue
                first, last = used[0], used[-1] + 1
                lows = np.where(np.isfinite(edges[:-1]), edges[:-1], limits[0] * 10.0)
                writer.add_histogram_raw(
                    f"{layer}/distribution/{quantity}", min=float(lows[first]), max=float(limits[last - 1]),
                    num=int(counts.sum()), sum=float(counts @ centers), sum_squares=float(counts @ centers**2),
                    bucket_limits=limits[first:last].tolist(), bucket_counts=counts[first:last].tolist(),
                    global_step=step,
                )  # fmt: skip
                written += 1
    return written


def _add_hparams(writer: Any, log: RunLog, hparams: dict[str, Any]) -> None:
    """The HParams view shows each metric tag's last value: the final metrics, from the curves already written."""
    from tensorboardX.summary import hparams as hparams_summaries

    metrics = {f"{METRICS_GROUP}/{name}": None for name in _metric_columns(log)}
    for summary in hparams_summaries(hparams, metrics):
        writer.file_writer.add_summary(summary)


def _metric_columns(log: RunLog) -> list[str]:
    return [name for name in (log.metrics[0] if log.metrics else {}) if name not in NOT_METRICS]


def _check_destination(out: Path) -> None:
    """`out` may be new, or an earlier export: a folder holding only TensorBoard event files."""
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: the folder {out.parent} does not exist")
    if not out.exists():
        return
    files = [path for path in out.rglob("*") if not path.is_dir()] if out.is_dir() else [out]
    if any(not path.name.startswith(EVENTS_PREFIX) for path in files):
        raise ConfigError(f"--out {out}: exists and holds other files than TensorBoard events; choose another folder")


def _replace(out: Path, staging: Path) -> None:
    """Put the staged export in place; an earlier export is swapped out first, so readers never see a mix."""
    if not out.exists():
        os.replace(staging, out)
        return
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old)
