"""The end of a run: what it leaves (`RunResult`), its gradient-health verdict in summary.json, and the text printed
at the end of `autobp train`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autobp.common import files
from autobp.common.text import format_number, plural
from autobp.config.models import Config
from autobp.health import describe, judge
from autobp.model.dataset import Dataset
from autobp.model.network import MODEL_FILE, Network
from autobp.rundir import layout as rundir
from autobp.rundir.logs import STEP
from autobp.rundir.reader import read_run
from autobp.rundir.status import Status
from autobp.rundir.summary import Summary, write_summary


@dataclass
class RunResult:
    """What a finished run leaves: its directory, final status and summary (summary.json's content)."""

    run_dir: Path
    status: Status
    summary: Summary
    nothing_to_do: bool = False  # --resume of a run that had already finished

    @property
    def exit_code(self) -> int:
        return self.status.exit_code


def save_model(run_dir: Path, network: Network, data: Dataset) -> None:
    """model.npz: the weights and what prediction needs of the data (standardization, names)."""
    arrays = network.state_dict()
    extras = {
        "x_mean": data.x_mean, "x_std": data.x_std, "y_mean": data.y_mean, "y_std": data.y_std,
        "feature_names": np.array(data.feature_names, dtype=str),
        "target_names": np.array(data.target_names, dtype=str),
        "class_names": None if data.class_names is None else np.array(data.class_names, dtype=str),
    }  # fmt: skip
    arrays.update({key: value for key, value in extras.items() if value is not None})
    files.write_npz(run_dir / MODEL_FILE, arrays)


def conclude(run_dir: Path, summary: Summary, *, config: Config | None = None, gradient_rows: list[list] | None = None
             ) -> None:  # fmt: skip
    """Judge the run's gradient health from the logs it left (as `autobp report` will) and write summary.json.
    `config` (what config.yaml holds) and `gradient_rows` (all the rows gradients.csv holds, as the trainer wrote
    them) spare reading those files back."""
    summary.health = judge(read_run(run_dir, summary=summary, config=config, gradient_rows=gradient_rows))
    write_summary(run_dir / rundir.SUMMARY_FILE, summary)


def format_summary(result: RunResult) -> str:
    """The end-of-run report: status, final and best metrics, speed, each layer's gradient verdict, the diagnoses
    with their suggestions (the same judgement as `autobp report`), and the path."""
    summary = result.summary
    lines = [f"{summary.name}: {summary.status} after {trained(summary)}, {plural(summary.steps, 'step')} in "
             f"{summary.seconds:.2f} s ({summary.steps_per_second or 0:,.0f} steps/s)"]
    if summary.diverged is not None:
        diverged = summary.diverged
        lines.append(f"  diverged at step {diverged.step} (epoch {diverged.epoch}): {diverged.reason}")
    if summary.error is not None:
        lines.append(f"  error: {summary.error}")
    stop = summary.early_stopping
    restored = stop is not None and stop.restored
    if restored:
        lines.append(f"  model.npz holds epoch {stop.best_epoch}, the best by {stop.monitor} (early stopping restored "
                     "its weights); the values below are that model's")  # fmt: skip
    label = f"epoch {stop.best_epoch}" if restored else "final"
    for key, best in summary.best.items():
        value = format_number((summary.saved if restored else summary.final).get(key))
        lines.append(f"  {key:<16} {label} {value:<10}  best {format_number(best.value):<10} (epoch {best.epoch})")
    health = summary.health
    if health is not None and health.layers:
        lines.append("gradients (median ‖∂L/∂f_i‖ over logged steps):")
        lines += [f"  {describe(verdict)}" for verdict in health.layers]
    if health is not None and health.diagnoses:
        lines.append("diagnoses (most likely cause first):")
        for diagnosis in health.diagnoses:
            where = f" ({diagnosis.layer})" if diagnosis.layer else ""
            lines.append(f"  {diagnosis.kind}{where}: {diagnosis.message}; suggestion: {diagnosis.suggestion}")
        lines.append(f"  details: autobp report {result.run_dir}")
    lines.append(f"run directory: {result.run_dir}")
    if summary.status.resumable:
        lines.append(f"continue it with: autobp train --resume {result.run_dir}")
    return "\n".join(lines)


def trained(summary: Summary) -> str:
    """`723 epochs and 1 batch`: the epochs finished, and the batches of an epoch cut short (Ctrl-C, max_steps)."""
    batches = summary.steps - int(summary.final.get(STEP) or 0)  # the last finished epoch's row ends at its step
    text = plural(summary.epochs_completed, "epoch")
    return text + (f" and {plural(batches, 'batch', 'batches')}" if batches > 0 else "")
