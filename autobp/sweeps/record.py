"""The sweep directory: sweep.yaml (what the trials are and how they are ranked), trials.csv (how each trial ended:
its one schema and one writer), one run directory per trial, and the ranking every tool uses, so `sweep`, `runs` and
`compare` name the same best trial.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from autobp.common import files
from autobp.common.errors import AutobpError, ConfigError, DataError
from autobp.common.text import shorten
from autobp.rundir import layout as rundir
from autobp.rundir.reader import is_run_dir, status_of
from autobp.rundir.status import Status
from autobp.rundir.summary import Summary, read_summary
from autobp.config.catalog import metric_of, task_metric
from autobp.config.models import Monitor
from autobp.config.yamlfile import read_text

SWEEP_FILE = "sweep.yaml"
TRIALS_FILE = "trials.csv"
SETTLE_PATIENCE_SECONDS = 10.0  # how long an orphaned worker waits for the sweep directory's lock to settle trials.csv
# trials.csv's fixed columns; the swept keys and the metrics between them depend on the sweep (see TrialsCsv)
TRIAL, STATUS, EPOCHS, SECONDS, RUN_DIR, REASON = "trial", "status", "epochs", "seconds", "run_dir", "reason"

# autobp's own record, not a file people write: read back up to this size (a sweep at its 10,000-trial cap writes
# ~2 MB with four swept keys), and never written larger.
MAX_RECORD_BYTES = 32_000_000
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

Mode = Literal["min", "max"]
Stage = Literal["saved", "final", "best"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def is_sweep_dir(path: Path) -> bool:
    """A folder that `autobp sweep` made."""
    return path.is_dir() and any((path / name).is_file() for name in (SWEEP_FILE, TRIALS_FILE))


def trial_dirs(sweep: Path) -> list[Path]:
    """A sweep's trial run directories, in trial order."""
    return sorted(p for p in sweep.iterdir() if p.name.startswith("trial-") and is_run_dir(p))


@contextlib.contextmanager
def running_sweep(directory: Path) -> Iterator[None]:
    """The lock of a sweep about to run its trials; another process running this sweep is a ConfigError."""
    with files.exclusive(directory) as taken:
        if not taken:
            raise ConfigError(f"{directory}: another autobp process is running this sweep's trials; wait for it "
                              "to end, then resume")  # fmt: skip
        yield


def refuse_if_running(directory: Path) -> None:
    """ConfigError at once if another process is running this sweep's trials (checked again as they start)."""
    with running_sweep(directory):
        return


def settle(directory: Path) -> None:
    """Rewrite trials.csv so no trial reads `running` that no process runs: after the sweep's own process was killed
    outright, each orphaned worker calls this once its trial has ended. Skipped if a sweep holds the lock again (it
    rewrites the file itself); a trial whose summary.json is unreadable reads `interrupted`."""
    path = directory / TRIALS_FILE
    with files.exclusive(directory, patience=SETTLE_PATIENCE_SECONDS) as taken:  # other orphans settle at the same time
        if not taken or not path.is_file():
            return
        try:
            rows = files.read_rows(path)
        except AutobpError:
            return  # a damaged trials.csv: `sweep --resume` says so and rewrites it
        if not rows or STATUS not in rows[0]:
            return
        for row in rows:
            if row.get(STATUS) == Status.RUNNING:
                row[STATUS] = _ended_status(directory / str(row.get(TRIAL)))
        header = list(rows[0])
        write_trials_csv(directory, header, [[row[column] for column in header] for row in rows])


def _ended_status(trial_dir: Path) -> Status:
    """How a trial ended, by its summary.json; `running` only if it says so (its worker may still be ending)."""
    try:
        return read_summary(trial_dir / rundir.SUMMARY_FILE).status
    except AutobpError:
        return Status.INTERRUPTED


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
    rank: Stage = "saved"
    settings: dict[str, Any] | None
    mix: str | None = None
    """For a sweep of configs mixing losses or tasks, what its ranked tables say of it (not written otherwise)."""
    trials: list[TrialRecord]

    @property
    def ranking(self) -> Ranking:
        return Ranking(self.monitor, self.mode, self.rank)


def record_text(record: SweepRecord) -> str:
    """sweep.yaml's text; a record larger than read_record reads back is a ConfigError (refused before it is written)."""
    content = record.model_dump(mode="json", exclude={"mix"} if record.mix is None else None)
    text = yaml.dump(content, Dumper=_DUMPER, sort_keys=False)
    if len(text.encode()) > MAX_RECORD_BYTES:
        raise ConfigError(f"{SWEEP_FILE} of this sweep would take {len(text.encode()):,} bytes, more than the limit "
                          f"of {MAX_RECORD_BYTES:,}: sweep fewer trials or shorter values")  # fmt: skip
    return text


def load_record_yaml(text: str) -> Any:
    """sweep.yaml's plain values (libyaml's parser where PyYAML has it: a record of 10,000 trials is megabytes)."""
    return yaml.load(text, Loader=_LOADER)


def read_record(directory: Path) -> SweepRecord:
    """sweep.yaml of a sweep directory (ConfigError naming it if missing or damaged)."""
    path = directory / SWEEP_FILE
    if not path.is_file():
        raise ConfigError(f"{directory}: not a sweep directory (it has no {SWEEP_FILE})")
    try:
        return SweepRecord.model_validate(files.check_depth(load_record_yaml(read_text(path, MAX_RECORD_BYTES)), path))
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply; not a sweep record written by autobp sweep") from None
    except (yaml.YAMLError, ValidationError, AutobpError) as err:
        problem = shorten(str(err), 200)
        raise ConfigError(f"{path}: not a sweep record written by autobp sweep ({problem}); its trials are ordinary "
                          "run directories, which `autobp compare` and `autobp report` still read") from None


@dataclass
class Outcome:
    """How a trial ended, or that it has not: its status and summary.json (just the error if it left none)."""

    status: Status = Status.PENDING
    summary: Summary | None = None

    def __post_init__(self) -> None:
        self.status = Status(self.status)  # as trials.csv and a worker's plain result spell it

    @property
    def reason(self) -> str:
        """Why the trial did not complete, or ''."""
        if self.summary is None:
            return ""
        if self.status == Status.PRUNED:
            return self.summary.reason or f"stopped at epoch {self.summary.epochs} by early_terminate"
        if self.summary.diverged is not None:
            return self.summary.diverged.reason
        return self.summary.error or ""

    @property
    def epochs(self) -> int | None:
        return None if self.summary is None else self.summary.epochs

    @property
    def seconds(self) -> float | None:
        return None if self.summary is None else self.summary.seconds

    def value(self, metric: str, stage: str) -> float | None:
        """The metric at a stage of the trial: `saved` (the model it kept: its best epoch where early stopping
        restored it), `final` (the last epoch) or `best` (the best epoch); None if missing or not finite."""
        if self.summary is None:
            return None
        if stage == "best":
            best = self.summary.best.get(metric)
            return None if best is None else best.value
        value = (self.summary.saved or self.summary.final) if stage == "saved" else self.summary.final
        value = value.get(metric)
        return value if value is not None and math.isfinite(value) else None

    def final(self, metric: str) -> float | None:
        """The metric's value at the last epoch (None if missing or not finite)."""
        return self.value(metric, "final")

    def best(self, metric: str) -> float | None:
        """The metric's best value over the epochs."""
        return self.value(metric, "best")


@dataclass(frozen=True)
class Ranking:
    """How a sweep ranks its trials: by `monitor` at a stage (`saved`, `final` or `best`, see Outcome.value),
    `mode` min or max; equal values are broken by the loss of the same split (e.g. val_accuracy ties by val_loss),
    then by trial order. Trials that did not finish come last."""

    monitor: str
    mode: str
    stage: str = "saved"

    @property
    def tie_breaker(self) -> str | None:
        """The loss that breaks ties, or None when the monitor is itself a loss."""
        split = self.monitor.partition("_")[0]
        return None if metric_of(self.monitor) == "loss" else f"{split}_loss"

    def value(self, outcome: Outcome) -> float | None:
        """The value a trial is ranked by; None for a trial that did not finish."""
        return outcome.value(self.monitor, self.stage) if outcome.status.finished else None

    def shown(self, outcome: Outcome) -> float | None:
        """The value a trial shows in the ranked column: the ranked one, or for a pruned trial the last value it
        reported (at the epoch it was stopped), which it is not ranked by."""
        return outcome.final(self.monitor) if outcome.status == Status.PRUNED else self.value(outcome)

    def better(self, value: float, than: float) -> bool:
        return value < than if self.mode == "min" else value > than

    def order(self, outcomes: list[Outcome]) -> list[int]:
        """Trial indices, best first; then the pruned trials by the value they last reported; then the rest."""
        sign = 1.0 if self.mode == "min" else -1.0

        def key(index: int) -> tuple[int, float, float, int]:
            outcome = outcomes[index]
            shown = self.shown(outcome)
            tier = 0 if self.value(outcome) is not None else 1 if shown is not None else 2
            tie = None if self.tie_breaker is None else outcome.value(self.tie_breaker, self.stage)
            return tier, 0.0 if shown is None else sign * shown, math.inf if tie is None else tie, index

        return sorted(range(len(outcomes)), key=key)

    def describe(self) -> str:
        """`ranked by val_accuracy of the saved model, higher is better; ties broken by val_loss`."""
        stage = {"saved": "of the saved model (its best epoch where early stopping restored it)",
                 "final": "at the last epoch", "best": "at its best epoch"}[self.stage]  # fmt: skip
        text = f"ranked by {self.monitor} {stage}, {'lower' if self.mode == 'min' else 'higher'} is better"
        return text + (f"; ties broken by {self.tie_breaker}" if self.tie_breaker else "")


@dataclass(frozen=True)
class TrialsCsv:
    """trials.csv's columns: trial, status, the swept keys, the monitor at the ranked stage and at its best epoch
    (best_<monitor>), the saved model's other metrics, epochs, seconds, run_dir and reason."""

    keys: Sequence[str]
    monitor: str
    others: Sequence[str] = ()

    @classmethod
    def of(cls, keys: Sequence[str], monitor: str, tasks: Iterable[str]) -> TrialsCsv:
        """The columns of a sweep whose trials have these tasks: beside the monitored metric, the other metrics of the
        saved model: losses, then accuracy and/or R² as the tasks report them."""
        reported = sorted({task_metric(task) for task in tasks})
        metrics = [f"{split}_{measure}" for measure in ("loss", *reported) for split in ("train", "val")]
        return cls(keys, monitor, [metric for metric in metrics if metric != monitor])

    def header(self, run_dir: bool = True) -> list[str]:
        """The columns in order; without run_dir for the ranked table, which names the sweep directory below it."""
        ending = [EPOCHS, SECONDS, *([RUN_DIR] if run_dir else []), REASON]
        return [TRIAL, STATUS, *self.keys, self.monitor, best_column(self.monitor), *self.others, *ending]

    def row(self, trial: str, values: Iterable[Any], outcome: Outcome, stage: str, run_dir: Path) -> list[Any]:
        """A trial's cells, in the header's order."""
        saved = [outcome.value(metric, "saved") for metric in self.others]
        return [trial, outcome.status, *values, outcome.value(self.monitor, stage), outcome.best(self.monitor), *saved,
                outcome.epochs, outcome.seconds, run_dir, outcome.reason]  # fmt: skip


def best_column(monitor: str) -> str:
    """The column of a metric's best value over the epochs: best_val_loss."""
    return f"best_{monitor}"


def write_trials_csv(directory: Path, header: list[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write trials.csv atomically: the one writer of the file, for the sweep and for orphaned workers settling it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for cells in rows:
        writer.writerow([_csv_cell(cell) for cell in cells])
    files.write_atomic(directory / TRIALS_FILE, buffer.getvalue())


def _csv_cell(value: Any) -> Any:
    # The csv writer quotes what needs quoting; quoting here too would put literal quotes in the file.
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def check_trials_csv(directory: Path, notes: list[str]) -> None:
    """trials.csv is only a table of the trials' own summary.json files: a damaged one is a note, and rewritten."""
    path = directory / TRIALS_FILE
    if not path.exists():
        return
    try:
        rows = files.read_rows(path)
        if rows and TRIAL not in rows[0]:
            raise DataError(f"{path}: no trial column")
    except DataError as err:
        notes.append(f"{err}: rewritten from the trials' summary.json files")


def read_outcomes(directory: Path, record: SweepRecord, notes: list[str]) -> list[Outcome]:
    """How each trial of a sweep directory ended, from its summary.json, in trial order; a trial whose summary is
    missing is `unfinished`, one whose summary is damaged too, with a note; one that says `running` while nothing
    trains it is `killed`."""
    outcomes = []
    for trial in record.trials:
        path = directory / trial.trial / rundir.SUMMARY_FILE
        summary = None
        try:
            summary = read_summary(path) if path.is_file() else None
        except AutobpError as exc:
            notes.append(f"skipped {directory / trial.trial}: {exc}")
        outcomes.append(Outcome(status_of(directory / trial.trial, summary), summary))
    return outcomes
