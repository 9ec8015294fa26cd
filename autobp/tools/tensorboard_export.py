"""`autobp export RUN_OR_SWEEP --format tensorboard`: a run's logs, or every trial of a sweep, as TensorBoard events.

Per run: each column of metrics.csv as `metrics/<column>` at the step that ended the epoch, each column of
gradients.csv as `<layer>/<column>` at its logged step (TensorBoard groups the charts by layer), and the config as
hyperparameters with the final metrics for the HParams view; where the run has histograms.npz, its distributions as
histograms `<layer>/distribution/<quantity>`; where it has instruments.csv, each of its values as
`instruments/<block>/<column>` at its step. A sweep's trials become one TensorBoard run each,
with the config keys that differ between trials as their hyperparameters, so the trials compare there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autobp.common import files
from autobp.common.errors import ConfigError, DataError, WriteError
from autobp.common.text import flatten
from autobp.rundir.histograms import QUANTITIES, bin_edges
from autobp.rundir.histograms import read as read_histograms
from autobp.rundir.logs import STEP, measured_in
from autobp.rundir.reader import RunLog, is_run_dir, read_run
from autobp.sweeps.record import is_sweep_dir, trial_dirs
from autobp.tools.compare import differing_keys

EXPORT_DIR = "tensorboard"
EVENTS_PREFIX = "events.out.tfevents."
METRICS_GROUP = "metrics"
INSTALL_HINT = "--format tensorboard needs tensorboardX: pip install 'autobp[export]'"


@dataclass
class TensorboardExport:
    """What an export wrote: the log directory, its runs (relative folders) and how many scalars in all."""

    directory: Path
    runs: list[str]
    scalars: int


def export_tensorboard(source: Path, out: Path | None = None) -> TensorboardExport:
    """Write a run's (or each trial's) events into `out` (default SOURCE/tensorboard), replacing an earlier export.
    A failed write is a WriteError (exit 1); SIGTERM ends it as Ctrl-C does; either way no staging folder is left."""
    _tensorboardx()
    shown = out if out is not None else source / EXPORT_DIR
    target = files.through_link(out) if out is not None else shown  # the default, inside SOURCE: never followed
    runs = _runs(source)
    _check_destination(target, shown)
    files.remove_orphans(target.parent)
    staging = target.with_name(files.temporary_name(target, str(time.time_ns())))
    try:
        with _terminate_as_interrupt():
            staging.mkdir()  # not tempfile.mkdtemp: the export keeps the folder, so it gets the usual permissions
            scalars = sum(_write_run(staging / folder, log, hparams) for folder, log, hparams in runs)
            _replace(target, staging)
    except OSError as exc:
        raise WriteError(f"{shown}: cannot write the TensorBoard export ({exc.strerror or exc}); "
                         "nothing was replaced") from None  # fmt: skip
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return TensorboardExport(shown, [folder for folder, _, _ in runs], scalars)


def _tensorboardx() -> None:
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (kill, timeout) raises KeyboardInterrupt while the block runs, so it cleans up as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Events:
    """One TensorBoard run's event file, written in the calling thread (tensorboardX's SummaryWriter writes from a
    thread of its own, which hangs the process when a write fails): a failed write is an OSError right here."""

    def __init__(self, directory: Path) -> None:
        from tensorboardX.event_file_writer import EventsWriter

        directory.mkdir(parents=True, exist_ok=True)
        self._file = EventsWriter(str(directory / "events"))

    def add(self, summary: Any, step: int | None = None) -> None:
        from tensorboardX.proto.event_pb2 import Event

        event = Event(summary=summary, wall_time=time.time())
        if step is not None:
            event.step = int(step)
        self._file.write_event(event)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboardX.summary import scalar

        self.add(scalar(tag, value), step)

    def close(self) -> None:
        self._file.close()


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


def _write_run(directory: Path, log: RunLog, hparams: dict[str, Any]) -> int:
    """Write one run's scalars and hyperparameters into `directory`; returns the number of scalars."""
    writer = _Events(directory)
    try:
        count = _add_metrics(writer, log) + _add_gradients(writer, log) + _add_instruments(writer, log)
        _add_distributions(writer, log)
        _add_hparams(writer, log, hparams)
    finally:
        writer.close()
    return count


def _add_metrics(writer: _Events, log: RunLog) -> int:
    count = 0
    for row in log.metrics:
        step = row.get(STEP)
        for column, value in row.items():
            if step is not None and column != STEP and value is not None:
                writer.add_scalar(f"{METRICS_GROUP}/{column}", value, step)
                count += 1
    return count


def _add_gradients(writer: _Events, log: RunLog) -> int:
    return _add_columns(writer, log.layers, "")


def _add_instruments(writer: _Events, log: RunLog) -> int:
    return _add_columns(writer, log.instruments.blocks if log.instruments is not None else [], "instruments/")


def _add_columns(writer: _Events, logs: Any, prefix: str) -> int:
    """Every value of each log's columns (a layer's or an instruments block's) as `<prefix><name>/<column>`."""
    count = 0
    for log in logs:
        for column, values in log.columns.items():
            for step, value in zip(log.steps, values):
                if value is not None:
                    writer.add_scalar(f"{prefix}{log.name}/{column}", value, step)
                    count += 1
    return count


def _add_distributions(writer: _Events, log: RunLog) -> int:
    """histograms.npz, where the run has one, as TensorBoard histograms `<layer>/distribution/<quantity>`: the same
    fixed bins (the open outer bins end at one decade past the last edge), the empty ends left out."""
    from tensorboardX.summary import histogram_raw

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
                writer.add(histogram_raw(
                    f"{layer}/distribution/{quantity}", min=float(lows[first]), max=float(limits[last - 1]),
                    num=int(counts.sum()), sum=float(counts @ centers), sum_squares=float(counts @ centers**2),
                    bucket_limits=limits[first:last].tolist(), bucket_counts=counts[first:last].tolist(),
                ), step)  # fmt: skip
                written += 1
    return written


def _add_hparams(writer: _Events, log: RunLog, hparams: dict[str, Any]) -> None:
    """The HParams view shows each metric tag's last value: the final metrics, from the curves already written."""
    from tensorboardX.summary import hparams as hparams_summaries

    metrics = {f"{METRICS_GROUP}/{name}": None for name in _metric_columns(log)}
    for summary in hparams_summaries(hparams, metrics):
        writer.add(summary)


def _metric_columns(log: RunLog) -> list[str]:
    return measured_in(log.metrics[0]) if log.metrics else []


def _check_destination(target: Path, shown: Path) -> None:
    """The export goes to a new folder, or replaces an earlier export: a folder holding only TensorBoard event files
    (never a file, a named pipe, a device or a folder of anything else)."""
    if not target.parent.is_dir():
        raise ConfigError(f"-o {shown}: the folder {target.parent} does not exist")
    try:  # the named path's own stat follows /proc's links too: /dev/stdout leads to a pipe that has no path
        mode = shown.stat().st_mode
    except OSError:
        return  # absent: a new folder
    if not stat.S_ISDIR(mode):
        what = files.kind(mode) if not stat.S_ISREG(mode) else "file"
        raise ConfigError(f"-o {shown}: a {what}, not a folder; the export is a folder of event files: choose a "
                          "new folder or an earlier export")  # fmt: skip
    found = [path for path in target.rglob("*") if path.is_symlink() or not path.is_dir()]
    if any(path.is_symlink() or not path.name.startswith(EVENTS_PREFIX) for path in found):
        raise ConfigError(f"-o {shown}: exists and holds other files than TensorBoard events; choose another folder")


def _replace(out: Path, staging: Path) -> None:
    """Put the staged export in place; an earlier export is swapped out first, so readers never see a mix."""
    if not out.exists():
        os.replace(staging, out)
        return
    old = out.with_name(files.temporary_name(out, "old"))
    os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(old, out)  # the earlier export back in place
        raise
    shutil.rmtree(old, ignore_errors=True)
