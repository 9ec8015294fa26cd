"""`autobp doctor RUN_DIR`: retrain a run's config with its diagnosis's fix and each alternative, and say which cured.

    result = run_doctor(Path("runs/deep-sigmoid-20261205-200543"), epochs=20)
    print(format_doctor(result))

The trials are an ordinary sweep (autobp.sweeps.run) in RUN_DIR/doctor/, so `--jobs` and `--executor dask` work
as for `sweep`, and Ctrl-C or SIGTERM end them as they end a sweep's. A change cures the cause when its trial
finishes and the treated kind is no longer first in the trial's own judgement (its summary.json's health). The
verdict is written to RUN_DIR/doctor.json (autobp.rundir.doctor). Running doctor again resumes: trials that
finished with the same config are kept, the others run (again).
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from autobp.common.errors import EXIT_INTERRUPTED, EXIT_OK, ConfigError, DataError
from autobp.health import judge
from autobp.rundir import layout as rundir
from autobp.rundir.doctor import DOCTOR_DIR, DOCTOR_FILE, DoctorRecord, Treatment, write_doctor
from autobp.rundir.reader import is_training, read_numbers, read_run
from autobp.rundir.status import Status
from autobp.rundir.summary import Diagnosis, Summary, read_summary
from autobp.config.models import Config
from autobp.config.configfile import load_config
from autobp.config.overrides import override_arguments
from autobp.sweeps.executor import TrialExecutor, interrupted_once
from autobp.sweeps.plan import override, plan_changes
from autobp.sweeps.record import Outcome, refuse_if_running
from autobp.sweeps.run import SweepResult, run_in
from autobp.tools.report import verified_fix_lines

REQUIRED = (rundir.SUMMARY_FILE, rundir.CONFIG_FILE, rundir.GRADIENTS_FILE)


@dataclass
class DoctorResult:
    """What doctor did: the cause it treated (None: the run has no diagnosis) and doctor.json's content (None:
    nothing to try)."""

    run_dir: Path
    cause: Diagnosis | None
    record: DoctorRecord | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return self.record is not None and self.record.status == Status.INTERRUPTED

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.interrupted else EXIT_OK


def run_doctor(
    run_dir: str | Path, *, epochs: int | None = None, jobs: int | None = None, quiet: bool = True,
    executor: TrialExecutor | None = None,
) -> DoctorResult:  # fmt: skip
    """Treat the run's first diagnosis: one trial per change (`epochs` long, default the run's), `jobs` at a time."""
    run_dir = Path(run_dir).resolve()
    summary, config = _read_patient(run_dir)
    diagnoses = judge(read_run(run_dir)).diagnoses
    if not diagnoses:
        return DoctorResult(run_dir, None)
    cause = diagnoses[0]
    changes = _changes(cause)
    if not changes:  # the diagnosis says why no config change can help: nothing to try
        return DoctorResult(run_dir, cause)
    epochs = epochs or config.training.epochs
    monitor = _monitor(config)
    control = epochs != config.training.epochs or not summary.status.reproducible  # else the run is its own control
    roles = ["fix", *["alternative"] * (len(changes) - 1)] + ["control"] * control
    all_changes = [*changes, *[{}] * control]
    epochs_set = [override("training.epochs", epochs)] if epochs != config.training.epochs else []
    base = run_dir / rundir.CONFIG_FILE
    sweep, errors = plan_changes("doctor", base, all_changes, epochs_set, monitor)
    record = DoctorRecord(
        status=Status.RUNNING, run_dir=str(run_dir), config=str(base), cause=cause,
        monitor=monitor, mode=sweep.mode, epochs=epochs, before=None if control else _saved_value(summary, monitor),
        before_source="control" if control else "run",
    )  # fmt: skip
    if (run_dir / DOCTOR_DIR).is_dir():
        refuse_if_running(run_dir / DOCTOR_DIR)  # before doctor.json is touched (run_in checks again as it starts)
    with interrupted_once():
        result = None
        try:
            write_doctor(run_dir, _verdict(record, roles, all_changes, errors, sweep.trials, None, epochs_set))
            result = run_in(run_dir / DOCTOR_DIR, sweep, jobs=jobs, quiet=quiet, executor=executor)
        except KeyboardInterrupt:  # before the trials started: none ran
            record = record.model_copy(update={"status": Status.INTERRUPTED})
        record = _verdict(record, roles, all_changes, errors, sweep.trials, result, epochs_set)
        write_doctor(run_dir, record)
    return DoctorResult(run_dir, cause, record, sweep.notes)


def _read_patient(run_dir: Path) -> tuple[Summary, Config]:
    """The run's summary and config; a missing or damaged file it needs is a DataError naming it."""
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such run directory; `autobp runs` lists the run directories")
    for name in REQUIRED:
        if not (run_dir / name).is_file():
            raise DataError(f"{run_dir / name}: missing; doctor needs a run directory made by `autobp train` "
                            f"(with {', '.join(REQUIRED)})")  # fmt: skip
    summary = read_summary(run_dir / rundir.SUMMARY_FILE)
    try:
        config = load_config(run_dir / rundir.CONFIG_FILE)
    except ConfigError as err:
        raise DataError(f"{run_dir / rundir.CONFIG_FILE}: not a config autobp can train: {err}") from None
    read_numbers(run_dir / rundir.GRADIENTS_FILE)  # its problems are errors here, not notes as in `report`
    if summary.status == Status.RUNNING and is_training(run_dir):
        raise ConfigError(f"{run_dir}: still training; run doctor once it has ended")
    return summary, config


def _monitor(config: Config) -> str:
    """The metric the run watches: early stopping's, else the validation loss (training loss without one)."""
    if config.training.early_stopping is not None:
        return config.training.early_stopping.monitor
    return "val_loss" if config.data.val_fraction > 0 else "train_loss"


def _changes(cause: Diagnosis) -> list[dict]:
    """The fix, then each alternative, each once."""
    changes: list[dict] = []
    for change in [cause.fix, *cause.alternatives]:
        if change and change not in changes:
            changes.append(change)
    return changes


def _saved_value(summary: Summary, monitor: str) -> float | None:
    """The monitored metric of a run's saved model, as a sweep ranks it (None if missing or not finite)."""
    return Outcome(summary.status, summary).value(monitor, "saved")


def _verdict(
    record: DoctorRecord, roles: list[str], changes: list[dict], errors: list[str | None], trials: list,
    result: SweepResult | None, overrides: list[str],
) -> DoctorRecord:  # fmt: skip
    """doctor.json's content: every change with its trial's outcome, best first (`result` None: none ran, all
    pending, with `record`'s status)."""
    outcomes = iter(result.outcomes if result is not None else [Outcome() for _ in trials])
    names = iter(trial.name for trial in trials)
    treatments = []
    for role, change, error in zip(roles, changes, errors):
        if error is not None:
            treatments.append(Treatment(trial=None, role=role, change=change, status=Status.INVALID, error=error))
            continue
        treatments.append(_treatment(next(names), role, change, next(outcomes), record.cause.kind, record.monitor))
    control = next((t for t in treatments if t.role == "control"), None)
    before = record.before if control is None else control.value
    ordered = sorted(treatments, key=lambda t: _rank(t, record.mode))
    best = ordered[0] if ordered and ordered[0].cured else None
    status = record.status if result is None else Status.INTERRUPTED if result.interrupted else Status.COMPLETED
    return record.model_copy(update={
        "status": status, "before": before, "treatments": ordered, "best": best.trial if best else None,
        "command": _command(record.config, best.change, overrides) if best else None,
    })  # fmt: skip


def _treatment(trial: str, role: str, change: dict, outcome: Outcome, cause: str, monitor: str) -> Treatment:
    summary = outcome.summary
    health = summary.health if summary is not None else None
    first = health.diagnoses[0].kind if health is not None and health.diagnoses else None
    cured = outcome.status.finished and health is not None and first != cause and role != "control"
    return Treatment(trial=trial, role=role, change=change, status=outcome.status,
                     value=outcome.value(monitor, "saved"), diagnosis=first, cured=cured,
                     error=outcome.reason or None)  # fmt: skip


def _rank(treatment: Treatment, mode: str) -> tuple[int, float]:
    group = 2 if treatment.role == "control" else 0 if treatment.cured else 1
    value = treatment.value
    score = math.inf if value is None else value if mode == "min" else -value
    return group, score


def _command(config: str, change: dict, overrides: list[str]) -> str:
    """`autobp train CONFIG --set …` reproducing a trial: doctor's own overrides (its epochs), then the change, as
    the trial had them (a change of training.epochs wins)."""
    sets = [*overrides, *override_arguments(change)]
    return " ".join(["autobp train", shlex.quote(config), *(f"--set {shlex.quote(o)}" for o in sets)])


# --- the printed verdict ------------------------------------------------------------------------------------------


def format_doctor(result: DoctorResult) -> str:
    """What doctor found: the cause, each change with the metric before and after, best first, and the command."""
    if result.cause is None:
        return f"{result.run_dir}: no diagnosis — every check passed, nothing to treat"
    cause = result.cause
    where = f" ({cause.layer})" if cause.layer else ""
    lines = [f"cause: {cause.kind}{where}: {cause.message}"]
    if result.record is None:
        return "\n".join([*lines, f"nothing to try: {cause.suggestion}"])
    lines += verified_fix_lines(result.record)
    lines.append(f"trials: {result.run_dir / DOCTOR_DIR}; verdict: {result.run_dir / DOCTOR_FILE}")
    return "\n".join(lines)
