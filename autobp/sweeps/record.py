"""The sweep directory: sweep.yaml (what the trials are and how they are ranked), one run directory per trial, and
the ranking every tool uses, so `sweep`, `runs` and `compare` name the same best trial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from autobp.common.errors import ConfigError
from autobp.rundir.reader import is_run_dir
from autobp.rundir.summary import Status, Summary
from autobp.spec.config import Monitor

SWEEP_FILE = "sweep.yaml"
TRIALS_FILE = "trials.csv"
FINISHED = tuple(str(status) for status in Status if status.finished)  # trials that need no second run
KEPT = (*FINISHED, str(Status.PRUNED))  # what a resumed sweep does not run again: pruned trials stay pruned
PENDING, RUNNING = "pending", "running"  # trials.csv statuses of trials that have not ended (yet)

Mode = Literal["min", "max"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def is_sweep_dir(path: Path) -> bool:
    """A folder that `autobp sweep` made."""
    return path.is_dir() and any((path / name).is_file() for name in (SWEEP_FILE, TRIALS_FILE))


def trial_dirs(sweep: Path) -> list[Path]:
    """A sweep's trial run directories, in trial order."""
    return sorted(p for p in sweep.iterdir() if p.name.startswith("trial-") and is_run_dir(p))


class TrialRecord(_Record):
    trial: str
    values: dict[str, Any]
    identity: str


class SweepRecord(_Record):
    """sweep.yaml: where the trials come from, how they are ranked, and each trial's values and identity."""

    name: str
    sources: list[str]
    overrides: list[str]
    monitor: Monitor
    mode: Mode
    settings: dict[str, Any] | None
    trials: list[TrialRecord]


def read_record(directory: Path) -> SweepRecord:
    """sweep.yaml of a sweep directory (ConfigError naming it if missing or damaged)."""
    path = directory / SWEEP_FILE
    if not path.is_file():
        raise ConfigError(f"{directory}: not a sweep directory (it has no {SWEEP_FILE})")
    try:
        return SweepRecord.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (yaml.YAMLError, ValidationError) as err:
        raise ConfigError(f"{path}: not a sweep record written by autobp sweep ({err})") from None


@dataclass
class Outcome:
    """How a trial ended, or that it has not: its status and summary.json (just the error if it left none)."""

    status: str = PENDING
    summary: Summary | None = None

    @property
    def reason(self) -> str:
        """Why the trial did not complete, or ''."""
        if self.summary is None:
            return ""
        if self.status == Status.PRUNED:
            return f"stopped at epoch {self.summary.epochs} by early_terminate"
        if self.summary.diverged is not None:
            return self.summary.diverged.reason
        return self.summary.error or ""

    @property
    def epochs(self) -> int | None:
        return None if self.summary is None else self.summary.epochs

    @property
    def seconds(self) -> float | None:
        return None if self.summary is None else self.summary.seconds

    def final(self, metric: str) -> float | None:
        """The metric's value at the last epoch (None if missing or not finite)."""
        value = None if self.summary is None else self.summary.final.get(metric)
        return value if value is not None and math.isfinite(value) else None

    def best(self, metric: str) -> float | None:
        """The metric's best value over the epochs."""
        best = None if self.summary is None else self.summary.best.get(metric)
        return None if best is None else best.value


def rank(monitor: str, mode: str, outcomes: list[Outcome]) -> list[int]:
    """Trial indices, best first: trials that completed by their final monitored value, then the others in order."""
    sign = 1.0 if mode == "min" else -1.0

    def key(index: int) -> tuple[bool, float, int]:
        value = ranked_value(outcomes[index], monitor)
        return value is None, 0.0 if value is None else sign * value, index

    return sorted(range(len(outcomes)), key=key)


def ranked_value(outcome: Outcome, monitor: str) -> float | None:
    """The value a trial is ranked by; None for a trial that did not finish."""
    return outcome.final(monitor) if outcome.status in FINISHED else None
