"""Sweeps that search: an Optuna study in the sweep directory that proposes `method: tpe` trials from the results
of the finished ones, and whose pruner stops losing trials at an epoch end (`early_terminate`).

The study is a journal of plain JSON lines, study.journal, beside sweep.yaml: `sweep --resume` reopens it, so the
sampler knows every trial that ended. Each sweep trial is one Optuna trial (user attribute `trial`: its folder);
a trial run again on resume is a new Optuna trial with the same values, and the one it replaces is marked failed.

Needs the `search` extra (Optuna); nothing here imports it until a study is opened.
"""

from __future__ import annotations

import importlib.util
import json
import math
import threading
from pathlib import Path
from typing import Any

from autobp.common import files
from autobp.common.errors import AutobpError, DataError
from autobp.common.text import shorten
from autobp.rundir.status import Status

PRUNERS = ("asha", "median", "hyperband")  # the early_terminate methods an Optuna pruner decides
INSTALL_HINT = "needs Optuna: pip install 'autobp[search]'"
JOURNAL_FILE = "study.journal"
STUDY_NAME = "sweep"  # fixed, so that a renamed sweep (Hyperband's brackets hash it) searches the same way
# What Optuna raises replaying a journal whose entries hold the wrong kinds of values (it trusts its own files).
REPLAY_ERRORS = (ValueError, KeyError, IndexError, TypeError, AttributeError, AssertionError, RecursionError)


def check_journal(directory: Path, parameters: dict[str, Any], notes: list[str]) -> None:
    """Read study.journal whole before the study reopens it: a last line cut mid-write (a sweep killed while
    writing, a full disk) is dropped with a note, as Optuna's own reader skips it (it would otherwise glue the next
    entry to it); anything else it cannot replay — text that is not a journal entry, an unknown operation, a value
    outside its parameter's range — is a DataError naming the file and line."""
    path = directory / JOURNAL_FILE
    if not path.exists():
        return
    files.check_regular_file(path)
    content = path.read_bytes()
    whole = content[: content.rfind(b"\n") + 1]
    problems = ((f"line {number}: ", _entry_problem(line, parameters))
                for number, line in enumerate(whole.splitlines(), start=1))  # fmt: skip
    where, problem = next(((where, problem) for where, problem in problems if problem), ("", ""))
    if len(whole) < len(content) and not problem:
        with open(path, "r+b") as handle:
            handle.truncate(len(whole))
    problem = problem or _replay_problem(path)
    if problem:
        raise DataError(f"{path}: {where}{problem}; the study cannot be reopened (the trials' own run directories "
                        "are intact: `autobp compare` reads them)")  # fmt: skip
    if len(whole) < len(content):
        kept = whole.count(b"\n")
        notes.append(f"{path}: its last line was cut mid-write and is dropped; the {kept:,} entries before it are kept")


def _entry_problem(line: bytes, parameters: dict[str, Any]) -> str:
    """What keeps one journal line from being replayed ('' when nothing does)."""
    from optuna.distributions import json_to_distribution
    from optuna.storages.journal._storage import JournalOperation

    try:
        entry = files.check_depth(json.loads(line), Path(JOURNAL_FILE))
    except (ValueError, RecursionError, AutobpError):
        return "not a journal entry (JSON object)"
    if not isinstance(entry, dict) or type(entry.get("op_code")) is not int:
        return "not a journal entry (no operation)"
    if entry["op_code"] == JournalOperation.SET_TRIAL_PARAM and not isinstance(entry.get("param_name"), str):
        return "a value without a parameter name"
    if entry["op_code"] not in {operation.value for operation in JournalOperation}:
        return f"unknown operation {entry['op_code']}"
    if entry["op_code"] == JournalOperation.SET_TRIAL_PARAM:
        name = entry.get("param_name")
        if name not in parameters:
            return f"a value for {shorten(repr(name))}, which the sweep does not search"
        try:
            distribution = json_to_distribution(entry["distribution"])
            inside = distribution._contains(entry["param_value_internal"])
        except (KeyError, ValueError, TypeError, AttributeError):
            return f"a damaged value of {name}"
        if distribution != _distribution(parameters[name]):
            return f"a value of {name} from another search space"
        if not inside:
            return f"a value of {name} outside its range ({shorten(repr(entry['param_value_internal']))})"
    return ""


def _replay_problem(path: Path) -> str:
    """Replay the whole journal in memory, as reopening the study does (reading only); what fails, or ''."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        storage = JournalStorage(JournalFileBackend(str(path)))
        for study in storage.get_all_studies():
            storage.get_all_trials(study._study_id, deepcopy=False)
    except REPLAY_ERRORS as exc:
        return f"it cannot be replayed ({shorten(str(exc) or type(exc).__name__, 200)})"
    return ""


def available() -> bool:
    """Whether Optuna is installed (without importing it)."""
    return importlib.util.find_spec("optuna") is not None


class Search:
    """The study of one sweep directory: proposes values, records reports and outcomes, decides what to prune.

    `settings` is the resolved sweep file (sweep.yaml's `settings`); `max_epochs` is the longest trial's
    training.epochs (Hyperband's full budget). Safe to call from the thread that answers trials' reports.
    """

    def __init__(self, directory: Path, settings: dict[str, Any], mode: str, max_epochs: int) -> None:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep prints its own progress
        self.settings = settings
        self.mode = mode
        self.parameters: dict[str, Any] = settings["parameters"]
        path = str(directory / JOURNAL_FILE)
        # One sweep process writes the journal; a lock left by a killed one is stale after a few seconds.
        self._running: dict[str, Any] = {}  # sweep trial name -> its Optuna trial
        self._lock = threading.Lock()
        try:  # check_journal refuses what it can tell; whatever else replaying finds wrong is the file's fault too
            storage = JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path, grace_period=5)))
            self.study = optuna.create_study(
                storage=storage, study_name=STUDY_NAME, load_if_exists=True, pruner=_pruner(settings, max_epochs),
                direction="minimize" if mode == "min" else "maximize",
            )  # fmt: skip
            self._fail_lost_trials()
        except REPLAY_ERRORS as exc:
            raise DataError(f"{path}: the study cannot be replayed ({shorten(str(exc) or type(exc).__name__, 200)}); "
                            "it is damaged") from None

    def _fail_lost_trials(self) -> None:
        """Trials left running (or enqueued, not yet asked) by a sweep that was killed: failed, so the sampler and
        pruners count only results and no stale values are handed out."""
        from optuna.trial import TrialState

        for _ in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            self.study.ask()  # takes the oldest waiting trial: it is running now, and failed below
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self.study.tell(trial.number, state=TrialState.FAIL)

    def start(self, name: str, index: int, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """Open the Optuna trial of sweep trial `name` (number `index`) and return its values: `values` as given
        (grid, random, a trial run again), else the sampler's proposal (tpe)."""
        with self._lock:
            if values is not None:
                self.study.enqueue_trial(_encode(self.parameters, values))
            self.study.sampler = self._sampler(index)
            trial = self.study.ask()
            trial.set_user_attr("trial", name)
            proposed = {key: _suggest(trial, key, parameter) for key, parameter in self.parameters.items()}
            self._running[name] = trial
            return proposed

    def _sampler(self, index: int) -> Any:
        """A sampler seeded by the sweep's seed and the trial's number, so that a proposal depends only on the
        results told before it: the same with --jobs 1 on every run, resumed or not."""
        from optuna.samplers import RandomSampler, TPESampler

        seed = int(self.settings["seed"]) * 1_000_003 + index
        return TPESampler(seed=seed) if self.settings["method"] == "tpe" else RandomSampler(seed=seed)

    def should_stop(self, name: str, epoch: int, value: float) -> bool:
        """Record a trial's monitored value at an epoch end; True if the pruner says it is losing."""
        with self._lock:
            trial = self._running.get(name)
            if trial is None:
                return False
            if not math.isfinite(value):  # nan or overflow: the worst value there is
                value = math.inf if self.mode == "min" else -math.inf
            trial.report(value, epoch)
            return trial.should_prune()

    def finish(self, name: str, status: Status, value: float | None) -> None:
        """Tell the study how a trial ended: its final monitored value, pruned (at its last report), or failed."""
        from optuna.trial import TrialState

        with self._lock:
            trial = self._running.pop(name, None)
            if trial is None:
                return
            if status == Status.PRUNED:
                self.study.tell(trial, state=TrialState.PRUNED)
            elif value is not None and status.finished:
                self.study.tell(trial, value)
            else:
                self.study.tell(trial, state=TrialState.FAIL)


def pruner_of(settings: dict[str, Any]) -> str | None:
    """The Optuna pruner a resolved sweep file's early_terminate names, or None (`health` is judged by each trial
    itself, see autobp.sweeps.executor.HealthCheck)."""
    early = settings.get("early_terminate") or {"method": []}
    return next((name for name in early["method"] if name in PRUNERS), None)


def _pruner(settings: dict[str, Any], max_epochs: int) -> Any:
    """The pruner `early_terminate` asks for; none (never prune) without it."""
    from optuna import pruners

    name = pruner_of(settings)
    if name is None:
        return pruners.NopPruner()
    early = settings["early_terminate"]
    first, factor = early["min_epochs"], early["reduction_factor"]
    if name == "median":
        return pruners.MedianPruner(n_warmup_steps=first)
    if name == "hyperband":
        return pruners.HyperbandPruner(min_resource=first, max_resource=max(max_epochs, first), reduction_factor=factor)
    return pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=factor)


def _distribution(parameter: Any) -> Any:
    """The Optuna distribution of one parameter: a list is a choice among its values, a range {min, max, log} a
    number (whole when both ends are)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(parameter, list):
        return CategoricalDistribution([json.dumps(value) for value in parameter])
    low, high, log = parameter["min"], parameter["max"], parameter.get("log", False)
    if isinstance(low, int) and isinstance(high, int):
        return IntDistribution(low, high, log=log)
    return FloatDistribution(low, high, log=log)


def _suggest(trial: Any, key: str, parameter: Any) -> Any:
    """The trial's value for one parameter, drawn from its distribution."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    distribution = _distribution(parameter)
    if isinstance(distribution, CategoricalDistribution):
        return _decode(parameter, trial.suggest_categorical(key, distribution.choices))
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(key, distribution.low, distribution.high, log=distribution.log)
    return trial.suggest_float(key, distribution.low, distribution.high, log=distribution.log)


def _encode(parameters: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    # Optuna's choices are scalars, so a list's values (which may be lists, e.g. model.hidden) travel as JSON.
    return {key: json.dumps(value) if isinstance(parameters[key], list) else value for key, value in values.items()}


def _decode(parameter: Any, value: Any) -> Any:
    return json.loads(value) if isinstance(parameter, list) else value
