"""summary.json: how a run ended and what it reached. One model, used by the trainer that writes it and by every
reader (report, compare, runs, sweeps, resume, the Dask client).

Unknown keys are ignored when reading, so files written by a newer autobp still load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from autobp.common import files
from autobp.common.errors import DataError
from autobp.rundir.status import Status


class _Record(BaseModel):
    # Built on first use: a training run needs these models only when it ends, not before its first step. Lists and
    # dicts default to `[]` and `{}`, which pydantic copies for each record: `default_factory=list` would cost a
    # parse of the builtin's text signature at every start.
    model_config = ConfigDict(extra="ignore", defer_build=True)


class Divergence(_Record):
    """The step and first layer whose gradient went non-finite (layer None: the loss itself)."""

    step: int
    epoch: int | None = None
    layer: str | None = None
    reason: str = ""


class EarlyStop(_Record):
    """What early stopping kept: the monitored metric's best value and its epoch, whose weights were restored."""

    monitor: str
    best_epoch: int
    best_value: float
    restored: bool = True
    """Whether the best epoch's weights were put back into model.npz: not when the last epoch was the best (they
    are already there), nor after an interruption, a divergence or a failure."""


class Best(_Record):
    value: float
    epoch: int


class LayerVerdict(_Record):
    """One layer's gradient health, judged against the output layer's signal (see autobp.health)."""

    layer: str
    activation: str | None
    verdict: str
    signal: float | None
    """Median ‖∂L/∂f‖ over the logged steps (finite values only)."""
    relative: float | None
    """`signal` over the output layer's."""


class Diagnosis(_Record):
    """A problem the logs show: what, where, the numbers, and what to change."""

    kind: str
    layer: str | None
    layers: list[str] = []
    evidence: dict[str, Any] = {}
    message: str
    suggestion: str
    """Prose written from `fix` and `alternatives` (autobp.health), so the three never disagree."""
    fix: dict[str, Any] = {}
    """The change to try first: dotted config keys to values, as `--set` takes them, valid for the run's config."""
    alternatives: list[dict[str, Any]] = []
    """Further changes of the same form, best first."""


class InstrumentVerdict(_Record):
    """One training instrument's recent value, trend and verdict (see autobp.health, block "instruments")."""

    instrument: str
    """An instruments.csv column, read on its `total` rows."""
    value: float | None
    """Its median over the judged window (the last third of the instrumented steps, or as `window` says)."""
    trend: str
    """rising, falling or flat over the window (a straight-line fit's change relative to the value)."""
    verdict: str
    """ok, or the problem in a few words."""
    threshold: float
    """The value the verdict was decided against."""
    window: str = ""
    message: str = ""


class Health(_Record):
    """The one gradient-health judgement of a run, as `train` printed it and `report` shows it."""

    layers: list[LayerVerdict] = []
    diagnoses: list[Diagnosis] = []
    instruments: list[InstrumentVerdict] = []


class Summary(_Record):
    """The content of summary.json."""

    status: Status
    diverged: Divergence | None = None
    error: str | None = None
    reason: str | None = None
    """Why a pruned run was stopped, when its stopper said (a fatal diagnosis of `early_terminate: health`)."""
    name: str = ""
    run_dir: str = ""
    task: str | None = None
    epochs: int = 0
    """The epoch the run was in when it ended."""
    epochs_completed: int = 0
    steps: int = 0
    seconds: float = 0.0
    steps_per_second: float | None = None
    samples_per_second: float | None = None
    final: dict[str, float | int | None] = {}
    """The last row of metrics.csv, less its time column."""
    saved: dict[str, float | int | None] = {}
    """The metrics of the model model.npz holds: the best epoch's row when early stopping restored its weights,
    else the same as `final`."""
    best: dict[str, Best] = {}
    early_stopping: EarlyStop | None = None
    started: str | None = None
    resumed: list[str] = []
    ended: str | None = None
    versions: dict[str, str] = {}
    health: Health | None = None

    @field_validator("status")
    @classmethod
    def _recorded(cls, status: Status) -> Status:
        if not status.recorded:
            raise ValueError(f"`{status}` is what a reader infers, not a status a run records")
        return status

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (what summary.json holds); `diverged`, `error`, `reason` and `health` only where they
        apply."""
        optional = {key for key in ("diverged", "error", "reason", "health") if getattr(self, key) is None}
        return self.model_dump(mode="json", exclude=optional)


def write_summary(path: Path, summary: Summary) -> None:
    """Write summary.json atomically."""
    files.write_json(path, summary.to_dict())


def read_summary(path: Path) -> Summary:
    """summary.json as a Summary (DataError naming the file if it is not valid JSON or not a summary)."""
    return read_record(path, Summary)


R = TypeVar("R", bound=BaseModel)


def read_record(path: Path, model: type[R]) -> R:
    """A JSON file of the run directory as its model (DataError naming the file if unreadable or unexpected)."""
    try:
        return model.model_validate(files.read_json(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise DataError(f"{path}: unexpected content ({where}: {first['msg']})") from None


def summary_from_dict(content: dict[str, Any]) -> Summary:
    """A Summary from plain data shipped between processes (what `to_dict` made)."""
    return Summary.model_validate(content)
