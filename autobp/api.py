"""The Python API over runs and sweeps, for notebooks and scripts (re-exported by `autobp`).

    run = autobp.load_run("runs/iris-20261126-054705")
    run.metrics["val_loss"], run.gradients[run.gradients["layer"] == "layer0"]["out_grad_norm"]
    run.instruments[run.instruments["block"] == "total"]["noise_scale_smoothed"]
    run.predict(X)["prediction"], [d.kind for d in run.report().diagnoses]

Everything is read through the same readers the commands use, so the numbers are the commands' numbers and an
error is the exception (with the message) that the command would print. Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autobp.common import files
from autobp.common.errors import AutobpError, DataError
from autobp.model.network import MODEL_FILE
from autobp.rundir import layout as rundir

if TYPE_CHECKING:
    from autobp.rundir.doctor import DoctorRecord
    from autobp.rundir.reader import RunLog
    from autobp.rundir.status import Status
    from autobp.rundir.summary import Summary
    from autobp.config.models import Config
    from autobp.tools.predict import TrainedModel
    from autobp.tools.report import Report


@dataclass
class Run:
    """A run directory, read: the resolved config, summary.json, and the logs as numpy record arrays."""

    path: Path
    config: Config | None  # None when config.yaml cannot be read (see notes)
    summary: Summary | None  # summary.json (status `running` while the run goes, or if it was killed); None if unread
    metrics: np.recarray  # metrics.csv: one record per epoch, columns as in the file
    status: Status  # as `autobp runs` shows it: the summary's status, `killed`, or `unfinished` without a summary
    notes: list[str] = field(default_factory=list)  # files that could not be read

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def gradients(self) -> np.recarray:
        """gradients.csv: one record per logged step and layer, columns as in the file."""
        from autobp.rundir.reader import read_numbers

        path = self.path / rundir.GRADIENTS_FILE
        return records(read_numbers(path) if path.exists() else [])

    @cached_property
    def instruments(self) -> np.recarray:
        """instruments.csv (runs with `training.instruments`): one record per instrumented step and block."""
        from autobp.rundir.instruments import INSTRUMENTS_FILE
        from autobp.rundir.reader import read_numbers

        path = self.path / INSTRUMENTS_FILE
        return records(read_numbers(path) if path.exists() else [])

    @cached_property
    def model(self) -> dict[str, np.ndarray]:
        """model.npz: `layer{i}.weight`, `layer{i}.bias` and the arrays prediction needs."""
        from autobp.common.files import load_npz

        return load_npz(self.path / MODEL_FILE)

    @cached_property
    def _trained(self) -> TrainedModel:
        from autobp.tools.predict import load_model

        return load_model(self.path)

    def predict(self, data: np.ndarray | str | Path) -> np.recarray:
        """Predictions with the columns and numbers of `autobp predict`, for an array of features in the data's
        units (n × features, in training order) or a CSV/.npz file."""
        from autobp.tools.predict import evaluate, network_inputs, prediction_table, read_examples

        model = self._trained
        if isinstance(data, (str, Path)):
            X, _ = read_examples(model, Path(data))
        else:
            X = network_inputs(model, _feature_array(data, model.data.n_features))
        outputs, _ = evaluate(model, X, None)
        header, rows = prediction_table(model, outputs)
        return records([dict(zip(header, row)) for row in rows], header)

    def report(self) -> Report:
        """The report of `autobp report` as data: series, layers and `diagnoses` (see autobp.tools.report.Report)."""
        from autobp.rundir.reader import read_run
        from autobp.tools.report import build_report

        return build_report(read_run(self.path))


def _feature_array(data: Any, n_features: int) -> np.ndarray:
    X = np.asarray(data)
    if X.ndim != 2 or len(X) == 0 or X.shape[1] != n_features or X.dtype.kind not in "biuf" or not np.isfinite(X).all():
        raise DataError(f"predict: X must be a finite numeric array of shape (n, {n_features}), n ≥ 1; "
                        f"got {X.dtype} {X.shape}")  # fmt: skip
    return X.astype(np.float64)


def load_run(path: str | Path) -> Run:
    """Read a run directory (DataError if it is not one); files that cannot be read are listed in `notes`."""
    from autobp.rundir.reader import read_run

    log = read_run(Path(path), with_gradients=False)
    return _run(log)


def _run(log: RunLog) -> Run:
    return Run(log.path, log.config, log.summary, records(log.metrics), log.status, log.notes)


@dataclass
class Sweep:
    """A sweep directory, read: its trials as runs, in trial order, and trials.csv as a record array."""

    path: Path
    trials: list[Run]
    table: np.recarray  # trials.csv: trial, status, the swept keys, metrics, epochs, seconds, run_dir, reason

    @property
    def name(self) -> str:
        return self.path.name


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep directory made by `autobp sweep` (DataError if it is not one)."""
    from autobp.sweeps.record import SWEEP_FILE, TRIALS_FILE, is_sweep_dir, trial_dirs

    path = Path(path)
    if not is_sweep_dir(path):
        raise DataError(f"{path}: not a sweep directory (it has neither {SWEEP_FILE} nor {TRIALS_FILE}); "
                        "`autobp runs` lists the sweep directories")  # fmt: skip
    trials = [load_run(trial) for trial in trial_dirs(path)]
    table_path = path / TRIALS_FILE
    rows = files.read_rows(table_path) if table_path.is_file() else []
    return Sweep(path, trials, records([{key: _cell(value) for key, value in row.items()} for row in rows]))


def _cell(text: str | None) -> int | float | str | None:
    """A trials.csv cell: a number where it is one, else its text; empty is None."""
    if not text:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def validate(config: Config | dict | str | Path, overrides: Sequence[str] = ()) -> Config:
    """The resolved config, as `autobp validate` prints it (ConfigError/DataError listing the problems)."""
    from autobp.model.prepare import prepare

    resolved, _ = prepare(config, overrides)
    return resolved


def sweep(
    sources: str | Path | Sequence[str | Path], overrides: Sequence[str] = (), *, name: str | None = None,
    output: str | Path | None = None, jobs: int | None = None, max_failures: int | None = None, quiet: bool = True,
) -> Sweep:  # fmt: skip
    """Run a sweep file, or several configs, as `autobp sweep` does (quiet unless asked), and read the result.
    AutobpError, naming the sweep directory, if trials failed because their worker processes could not start.

    Safe from a script without an `if __name__ == "__main__":` guard, from `python -` and from notebooks: the
    worker processes never run the caller's main module."""
    from autobp.sweeps.run import run_sweep

    paths = [sources] if isinstance(sources, (str, Path)) else list(sources)
    result = run_sweep(paths, overrides, name=name, output=output, jobs=jobs, max_failures=max_failures, quiet=quiet)
    if result.unstarted:
        reason = next(o.reason for t, o in zip(result.sweep.trials, result.outcomes) if t.name in result.unstarted)
        raise AutobpError(f"{result.directory}: {len(result.unstarted)} of {len(result.outcomes)} trials did not "
                          f"run: {reason}; `autobp sweep --resume {result.directory}` runs them again")  # fmt: skip
    return load_sweep(result.directory)


def doctor(
    run_dir: str | Path, *, epochs: int | None = None, jobs: int | None = None, quiet: bool = True
) -> DoctorRecord | None:  # fmt: skip
    """Verify a run's diagnosis as `autobp doctor` does, and return doctor.json's content (None: no diagnosis, or
    one that proposes no change).
    Its `cures` are the changes that cured the cause, best first; `command` reproduces the best."""
    from autobp.tools.doctor import run_doctor

    return run_doctor(run_dir, epochs=epochs, jobs=jobs, quiet=quiet).record


def records(rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> np.recarray:
    """Rows of values as a record array: whole-number columns as int64, numeric ones as float64 (None as nan),
    others as text (None as '')."""
    names = list(columns if columns is not None else (rows[0] if rows else {}))
    arrays = [_column([row.get(name) for row in rows]) for name in names]
    return np.rec.fromarrays(arrays, names=names) if names else np.recarray(len(rows), dtype=[])


def _column(values: list[Any]) -> np.ndarray:
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.int64)
    if all(v is None or (isinstance(v, (int, float, np.number)) and not isinstance(v, bool)) for v in values):
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.array(["" if v is None else str(v) for v in values], dtype=str)
