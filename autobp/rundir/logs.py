"""metrics.csv and gradients.csv: their columns, one owner each. The trainer writes both and a resumed run cuts them
back through `MetricsColumns` and `GRADIENT_COLUMNS`; the reader, report, health, the exports and the pages name
their columns through the constants here. README "The run directory" defines every column.

metrics.csv has one row per epoch: `epoch`, `step`, each split's loss and task metric (`train_loss`, `val_loss`,
`train_accuracy`, … — the metric names are the catalog's, `config.catalog.METRICS`), the epoch's `lr` and the
training `seconds` so far. gradients.csv has one row per logged step and layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autobp.common import files
from autobp.config.catalog import lower_is_better
from autobp.rundir import layout
from autobp.rundir.summary import Best

EPOCH, STEP, LR, SECONDS = "epoch", "step", "lr", "seconds"
METRICS_BOOKKEEPING = (EPOCH, STEP, LR, SECONDS)  # metrics.csv's columns that are not a split's loss or metric
SPLITS = ("train", "val")
LOSS = "loss"  # the catalog's metric every task reports beside its own

LAYER = "layer"
GRAD_NORM_W, GRAD_NORM_B, WEIGHT_NORM, UPDATE_RATIO = "grad_norm_w", "grad_norm_b", "weight_norm", "update_ratio"
OUT_GRAD_NORM, GRAD_MEAN, GRAD_STD = "out_grad_norm", "grad_mean", "grad_std"
DEAD_FRACTION, SATURATED_FRACTION = "dead_fraction", "saturated_fraction"
GRADIENT_KEYS = (STEP, EPOCH, LAYER)  # what a gradients.csv row is of; the other columns are measured
GRADIENT_VALUES = (GRAD_NORM_W, GRAD_NORM_B, WEIGHT_NORM, UPDATE_RATIO, OUT_GRAD_NORM, GRAD_MEAN, GRAD_STD,
                   DEAD_FRACTION, SATURATED_FRACTION)  # fmt: skip
GRADIENT_COLUMNS = [*GRADIENT_KEYS, *GRADIENT_VALUES]


@dataclass(frozen=True)
class MetricsColumns:
    """metrics.csv's columns for a task whose metric beside the loss is `metric` (catalog.task_metric)."""

    metric: str

    @property
    def measured(self) -> list[str]:
        """Each split's loss, then each split's metric: `train_loss`, `val_loss`, `train_accuracy`, `val_accuracy`."""
        return [f"{split}_{name}" for name in (LOSS, self.metric) for split in SPLITS]

    @property
    def columns(self) -> list[str]:
        return [EPOCH, STEP, *self.measured, LR, SECONDS]

    def row(self, epoch: int, step: int, train: dict[str, Any], val: dict[str, Any], lr: float,
            seconds: float) -> dict[str, Any]:  # fmt: skip
        """An epoch's row from its training and validation results (keyed by metric name)."""
        splits = dict(zip(SPLITS, (train, val)))
        measured = {f"{split}_{name}": splits[split][name] for name in (LOSS, self.metric) for split in SPLITS}
        return {EPOCH: epoch, STEP: step, **measured, LR: lr, SECONDS: round(seconds, 6)}

    def best(self, history: list[dict[str, Any]]) -> dict[str, Best]:
        """Each measured column's best finite value over the rows and the epoch that reached it."""
        best = {}
        for key in self.measured:
            rows = [row for row in history if row[key] is not None and math.isfinite(row[key])]
            if not rows:
                continue
            pick = min if lower_is_better(key) else max
            row = pick(rows, key=lambda r: r[key])
            best[key] = Best(value=row[key], epoch=row[EPOCH])
        return best

    def open_log(self, run_dir: Path) -> files.CsvLog:
        """The log the trainer appends to (its header written if the file is new)."""
        return files.CsvLog(run_dir / layout.METRICS_FILE, self.columns)

    def rewrite(self, run_dir: Path, rows: list[dict[str, str]]) -> None:
        files.rewrite_rows(run_dir / layout.METRICS_FILE, self.columns, rows)


def untimed(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics.csv row less its time column (what summary.json keeps of it)."""
    return {key: value for key, value in row.items() if key != SECONDS}


def measured_in(row: dict[str, Any]) -> list[str]:
    """The loss and metric columns of a metrics.csv row as read, in file order (whatever the run's task)."""
    return [name for name in row if name not in METRICS_BOOKKEEPING]


def open_gradient_log(run_dir: Path) -> files.CsvLog:
    """gradients.csv as the trainer appends to it (its header written if the file is new)."""
    return files.CsvLog(run_dir / layout.GRADIENTS_FILE, GRADIENT_COLUMNS)


def rewrite_gradients(run_dir: Path, rows: list[dict[str, str]]) -> None:
    files.rewrite_rows(run_dir / layout.GRADIENTS_FILE, GRADIENT_COLUMNS, rows)
