"""doctor.json: what `autobp doctor` tried on a run, and which changes cured its diagnosed cause.

Written into the run directory, beside the folder `doctor/` that holds the trials (a sweep directory: sweep.yaml,
trials.csv, one run directory per trial). `report` reads it to show the verified fixes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from autobp.common import files
from autobp.rundir.reader import is_training, read_status
from autobp.rundir.status import Status
from autobp.rundir.summary import Diagnosis, read_record

DOCTOR_FILE = "doctor.json"
DOCTOR_DIR = "doctor"


class _Record(BaseModel):
    # As summary.json's records: built on first use, `[]` and `{}` copied for each record.
    model_config = ConfigDict(extra="ignore", defer_build=True)


class Treatment(_Record):
    """One retraining of the run's config with a change, and what its own judgement says."""

    trial: str | None
    """Its folder in doctor/ (None for a change that could not be tried)."""
    role: Literal["fix", "alternative", "control"]
    """The diagnosis's `fix`, one of its `alternatives`, or the config unchanged (same epochs, for `before`)."""
    change: dict[str, Any] = {}
    """Dotted config keys to values, as `--set` takes them; empty for the control."""
    status: Status
    """The trial's status (completed, diverged, …), `pending` or `running` while doctor runs, `invalid` if the
    change does not validate against the config."""
    value: float | None = None
    """The monitored metric of the trial's saved model (None if it has none, e.g. diverged)."""
    diagnosis: str | None = None
    """The first diagnosis (cause) of the trial's own judgement; None when it has none."""
    cured: bool = False
    """The trial finished (completed or stopped early) and the treated cause is no longer its first diagnosis."""
    error: str | None = None
    """Why the change could not be tried, or how the trial failed."""


class DoctorRecord(_Record):
    """The content of doctor.json."""

    status: Literal[Status.RUNNING, Status.COMPLETED, Status.INTERRUPTED]
    """`running` while doctor runs (and after a kill that left it no chance to write more; `as_seen` shows such a
    record as `killed`)."""
    run_dir: str
    config: str
    """The run's config.yaml, the base of every trial."""
    cause: Diagnosis
    """The diagnosis treated: the run's first (its cause), as `report` shows it."""
    monitor: str
    mode: Literal["min", "max"]
    epochs: int
    """training.epochs of every trial."""
    before: float | None
    """The monitored metric without a change: the run's own, or the control trial's when the trials are shorter
    than the run (or the run did not end)."""
    before_source: Literal["run", "control"]
    treatments: list[Treatment] = []
    """Best first: the cures by their monitored value, then the rest, the control last."""
    best: str | None = None
    """The trial of the best cure; None if no change cured the cause."""
    command: str | None = None
    """The `autobp train` command that reproduces the best cure."""

    @property
    def cures(self) -> list[Treatment]:
        return [treatment for treatment in self.treatments if treatment.cured]


def write_doctor(run_dir: Path, record: DoctorRecord) -> None:
    """Write doctor.json atomically."""
    files.write_json(run_dir / DOCTOR_FILE, record.model_dump(mode="json"))


def read_doctor(run_dir: Path) -> DoctorRecord | None:
    """doctor.json of a run directory, None if it has none (DataError naming it if damaged)."""
    path = run_dir / DOCTOR_FILE
    return read_record(path, DoctorRecord) if path.is_file() else None


def as_seen(run_dir: Path, record: DoctorRecord) -> DoctorRecord:
    """The record as `report` shows it: one left `running` by a doctor no process runs (killed outright) reads
    `killed`, and each trial it left unsettled the status of its own folder, decided as `runs` decides a run's."""
    trials = run_dir / DOCTOR_DIR
    if record.status != Status.RUNNING or is_training(trials):
        return record
    treatments = [treatment.model_copy(update={"status": read_status(trials / treatment.trial)})
                  if treatment.trial and treatment.status in (Status.PENDING, Status.RUNNING)
                  and (trials / treatment.trial).is_dir() else treatment
                  for treatment in record.treatments]  # fmt: skip
    return record.model_copy(update={"status": Status.KILLED, "treatments": treatments})
