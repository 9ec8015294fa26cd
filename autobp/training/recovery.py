"""Reading a run back to resume it: its summary and checkpoint, checked before anything is written, and its logs
cut back to the checkpoint, rows damaged by a kill or a failed write dropped with a note."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autobp.common import files
from autobp.common.errors import ConfigError, DataError
from autobp.common.text import plural
from autobp.config.models import Config
from autobp.rundir import checkpoint
from autobp.rundir import layout as rundir
from autobp.rundir.histograms import Histograms
from autobp.rundir.histograms import read as read_histograms
from autobp.rundir.logs import EPOCH, GRADIENT_COLUMNS, STEP, MetricsColumns, rewrite_gradients
from autobp.rundir.summary import Summary, read_summary


@dataclass
class KeptLogs:
    """The rows of metrics.csv and gradients.csv (text as read) up to the checkpoint, and how many logged epochs
    came after it."""

    metrics: list[dict[str, str]] = field(default_factory=list)
    gradients: list[dict[str, str]] = field(default_factory=list)
    dropped: int = 0

    def history(self) -> list[dict[str, Any]]:
        """The kept metrics rows as numbers."""
        return [{k: files.parse_cell(k, v) for k, v in row.items()} for row in self.metrics]


def kept_logs(run_dir: Path, columns: MetricsColumns, epoch: int, step: int, notes: list[str]) -> KeptLogs:
    """The whole log rows up to `epoch` (metrics) and `step` (gradients), read without writing anything."""
    logged = intact_rows(run_dir / rundir.METRICS_FILE, columns.columns, notes)
    metrics = [r for r in logged if int(r[EPOCH]) <= epoch]
    gradients = intact_rows(run_dir / rundir.GRADIENTS_FILE, GRADIENT_COLUMNS, notes)
    gradients = [r for r in gradients if int(r[STEP]) <= step]
    return KeptLogs(metrics, gradients, len(logged) - len(metrics))


def cut_logs(run_dir: Path, columns: MetricsColumns, kept: KeptLogs) -> None:
    """Rewrite metrics.csv and gradients.csv with the rows `kept_logs` kept (the ones up to the checkpoint)."""
    columns.rewrite(run_dir, kept.metrics)
    rewrite_gradients(run_dir, kept.gradients)


def earlier_histograms(run_dir: Path, notes: list[str]) -> Histograms | None:
    try:
        return read_histograms(run_dir)
    except DataError as err:
        notes.append(f"{err}: its earlier snapshots are dropped")
        return None


def dropped(count: int) -> str:
    return f" ({plural(count, 'later logged epoch')} dropped)" if count else ""


def previous_summary(path: Path, notes: list[str]) -> Summary | None:
    """summary.json of the run being resumed; a damaged one is a note (the checkpoint says where the run is)."""
    if not path.exists():
        return None
    try:
        return read_summary(path)
    except DataError as err:
        notes.append(f"{err}: ignored, the checkpoint says where the run is")
        return None


def load_checkpoint(run_dir: Path) -> checkpoint.Checkpoint | None:
    """The checkpoint to resume from (None: none); a damaged one stops the resume before anything is written."""
    try:
        return checkpoint.load(run_dir)
    except DataError as err:
        raise DataError(f"{err}; --resume cannot continue from it (move it away to train this run again from "
                        "epoch 1)") from None


def check_extension(run_dir: Path, config: Config, state: checkpoint.Checkpoint | None) -> None:
    """A run can be extended, never shortened: a shorter run is a new run (nothing is changed when refused)."""
    if state is None:
        return
    training = config.training
    if training.epochs < state.epoch:
        raise ConfigError(f"--resume {run_dir}: training.epochs={training.epochs}, but the run has already trained "
                          f"{plural(state.epoch, 'epoch')}; a run can be extended, not shortened (start a new run)")
    if training.max_steps is not None and training.max_steps < state.step:
        raise ConfigError(f"--resume {run_dir}: training.max_steps={training.max_steps}, but the run has already "
                          f"taken {plural(state.step, 'step')}; a run can be extended, not shortened (start a new run)")


def intact_rows(path: Path, columns: list[str], notes: list[str]) -> list[dict[str, str]]:
    """A log's rows (text as read) that are whole: a row cut short by a kill or a failed write, or otherwise
    damaged, is dropped with a note; an unreadable log is a note and no rows (both are rewritten from here)."""
    if not path.exists():
        return []
    try:
        rows = files.read_rows(path)
    except DataError as err:
        notes.append(f"{err}: rewritten from the checkpoint on")
        return []
    if rows and not files.ends_a_line(path):
        rows[-1] = {}  # cut mid-write: even a last number that parses may be missing digits
    required = (EPOCH, STEP) if STEP in columns else (EPOCH,)
    intact = [row for row in rows if files.whole_row(row, columns, required)]
    if len(intact) < len(rows):
        notes.append(f"{path.name}: {plural(len(rows) - len(intact), 'damaged row')} dropped")
    return intact
