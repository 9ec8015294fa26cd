"""`autobp sweep`: run many trials (the values of a sweep file, or several configs) in parallel, and rank them.

    result = run_sweep(["configs/sweep_spirals.yaml"], jobs=2)
    print(format_ranking(result))

Every trial is expanded and validated (config, data, monitored metric) before the first one starts. Each trial is
an ordinary run in `<output>/sweeps/<name>-<YYYYmmdd-HHMMSS>/trial-NNN`; beside them, sweep.yaml records the
sweep and trials.csv, rewritten as trials end, records how each ended. A trial is known by a hash of its resolved
config, so `resume_sweep` runs again exactly the trials that did not complete or whose config has changed.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import math
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator
from yaml.nodes import Node

from autobp.common import files
from autobp.common.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SWEEP_INCOMPLETE, ConfigError, DataError
from autobp.common.text import format_number, format_table
from autobp.model.prepare import DatasetCache, prepare
from autobp.rundir import layout as rundir
from autobp.rundir.status import Status
from autobp.rundir.summary import Summary, read_summary, summary_from_dict
from autobp.config.catalog import lower_is_better, task_metric
from autobp.config.models import FILE_PATH_KEYS, Config, Monitor, check_name, monitor_problem, raise_problems
from autobp.config.configfile import (
    Positions,
    Problem,
    duplicate_key_problems,
    override_arguments,
    override_value,
    parse_yaml,
    problems_from,
    read_text,
    report_problems,
    show,
    suggest,
    written_path,
)
from autobp.sweeps import search
from autobp.sweeps.executor import (
    LocalExecutor,
    TrialExecutor,
    available_cores,
    interrupted_once,
    open_reports,
    run_trial,
)
from autobp.sweeps.record import (
    SWEEP_FILE,
    TRIALS_FILE,
    Mode,
    Outcome,
    Ranking,
    Stage,
    SweepRecord,
    TrialRecord,
    read_record,
    record_text,
    refuse_if_running,
    running_sweep,
    trial_dirs,
)
from autobp.training.progress import SweepProgress
from autobp.training.entry import estimated_size

Method = Literal["grid", "random", "tpe"]
HEALTH = "health"  # the trial's own gradient-health judgement, decided in the trial's process
Terminator = Literal[(HEALTH, *search.PRUNERS)]  # search.PRUNERS: Optuna's pruners, decided in the sweep's process
_CHOICES = {"method": get_args(Method), "monitor": get_args(Monitor), "mode": get_args(Mode),
            "early_terminate": get_args(Terminator)}  # fmt: skip


# --- the sweep file -----------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Range(_Strict):
    """A range to draw from in a random sweep: floats, or integers when min and max are both integers."""

    min: int | float
    max: int | float
    log: bool = False
    """Uniform in log space: each decade is drawn equally often (needs min > 0)."""

    @field_validator("min", "max", mode="before")
    @classmethod
    def _check_number(cls, value: object) -> object:
        # One clear message instead of one per member of the `int | float` union.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError("expected a finite number")
        return value

    @model_validator(mode="after")
    def _check_bounds(self) -> Range:
        problems = []
        if self.max <= self.min:
            problems.append((("max",), f"must be > min ({self.min})"))
        if self.log and self.min <= 0:
            problems.append((("min",), "must be > 0 with log: true"))
        raise_problems(*problems)
        return self

    def draw(self, rng: np.random.Generator) -> int | float:
        """A uniform (or log-uniform) draw from [min, max]. Integer ranges draw a real number from [min, max + 1)
        and round it down, so each integer owns an interval of width 1 (log: of width log((k + 1) / k))."""
        integers = isinstance(self.min, int) and isinstance(self.max, int)
        low, high = self.min, self.max + 1 if integers else self.max
        value = math.exp(rng.uniform(math.log(low), math.log(high))) if self.log else rng.uniform(low, high)
        if integers:
            return min(math.floor(value), self.max)
        return min(max(value, self.min), self.max)  # exp(log(x)) may round a hair past either bound


def _parameter_kind(value: Any) -> str:
    return "range" if isinstance(value, (dict, Range)) else "values"  # a dict when read, a Range when written


# A callable discriminator: a list or a range is told apart by its type, so an error names only the one meant.
Parameter = Annotated[
    Union[Annotated[list[Any], Field(min_length=1), Tag("values")], Annotated[Range, Tag("range")]],
    Discriminator(_parameter_kind),
]


class EarlyTerminate(_Strict):
    """Stop trials at an epoch end: broken ones by their own health judgement, losing ones by an Optuna pruner to
    which each reports its monitored metric."""

    method: Annotated[list[Terminator], Field(min_length=1)]
    """health (a fatal diagnosis of the trial's logs), asha (successive halving), median (below the median of
    earlier trials at that epoch) or hyperband; one name, or a list of health and at most one pruner."""
    min_epochs: Annotated[int, Field(ge=1)] = 1
    """No trial is stopped before this epoch."""
    reduction_factor: Annotated[int, Field(ge=2)] = 3
    """asha and hyperband: about 1 in reduction_factor trials goes on at each rung (min_epochs × factor^k)."""

    @field_validator("method", mode="before")
    @classmethod
    def _one_or_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_methods(self) -> EarlyTerminate:
        if len(set(self.method)) < len(self.method):
            raise_problems((("method",), "lists a method twice"))
        if len([name for name in self.method if name != HEALTH]) > 1:
            raise_problems((("method",), f"combine health with at most one of {', '.join(search.PRUNERS)}"))
        return self


MAX_TRIALS = 10_000  # trials one sweep may expand to (each is a run directory of its own)


class SweepFile(_Strict):
    """A sweep file: a base config and the values to try in it."""

    base: str
    """The base config, relative to the sweep file's folder."""
    name: str | None = None
    """Sweep name, the prefix of its folder; default the sweep file's name."""
    method: Method = "grid"
    """grid: every combination of the lists; random: n_trials seeded draws; tpe: n_trials proposed by a Bayesian
    sampler (Optuna's TPE) told the results of the trials that ended."""
    n_trials: Annotated[int, Field(ge=1)] | None = None
    """random and tpe: number of trials."""
    seed: Annotated[int, Field(ge=0)] = 0
    """Seed of the random draws and of the tpe sampler (the trials keep the base's seed; sweep `seed` to vary it)."""
    parameters: Annotated[dict[str, Parameter], Field(min_length=1)]
    """Dotted config keys, as with --set, each with a list of values or (random) a range {min, max, log}."""
    monitor: Monitor = "val_loss"
    """The metric that ranks the trials."""
    mode: Mode | None = None
    """min or max; default min for losses, max for accuracy and R²."""
    rank: Stage = "saved"
    """Which value of the monitor ranks a trial: the saved model's (its best epoch when early stopping restored it),
    the last epoch's (final) or the best epoch's (best). Ties are broken by the loss of the same split."""
    early_terminate: EarlyTerminate | None = None
    """Stop losing trials early (any method); they end `pruned`."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None:
            check_name(value)
        return value

    @model_validator(mode="after")
    def _check_method(self) -> SweepFile:
        problems = [
            (("parameters", key), "a range needs method: random or tpe (a grid takes lists of values)")
            for key, parameter in self.parameters.items()
            if self.method == "grid" and isinstance(parameter, Range)
        ]
        problems += [
            (("parameters", key), "expected a dotted config key such as optimizer.lr")
            for key in self.parameters
            if not all(key.split("."))
        ]
        if self.method != "grid" and self.n_trials is None:
            problems.append((("n_trials",), f"required with method: {self.method}"))
        if self.method == "grid" and self.n_trials is not None:
            problems.append((("n_trials",), "only used with method: random or tpe (a grid runs every combination)"))
        raise_problems(*problems)
        grid = self.method == "grid"
        count = math.prod(map(len, self.parameters.values())) if grid else self.n_trials
        if count > MAX_TRIALS:  # counted, not expanded: a grid of 10⁸ points must not be built to be refused
            where = ("parameters",) if grid else ("n_trials",)
            raise_problems((where, f"{count:,} trials is more than the limit of {MAX_TRIALS:,}; sweep fewer values "
                                   "or split the sweep"))  # fmt: skip
        return self


def expand(spec: SweepFile) -> list[dict[str, Any]]:
    """The swept values of each trial: every combination in file order (grid), or n_trials seeded draws (random);
    none ahead for tpe, whose trials the study proposes as the sweep runs."""
    if spec.method == "tpe":
        return []
    if spec.method == "grid":
        keys = list(spec.parameters)
        return [dict(zip(keys, values)) for values in itertools.product(*spec.parameters.values())]
    rng = np.random.default_rng(spec.seed)
    return [{key: draw(parameter, rng) for key, parameter in spec.parameters.items()} for _ in range(spec.n_trials)]


def probes(spec: SweepFile) -> list[dict[str, Any]]:
    """Values that try every choice and both ends of every range: each parameter's first value (a range's min),
    then each of its other values in turn with the others at their first."""
    ends = {key: [p.min, p.max] if isinstance(p, Range) else p for key, p in spec.parameters.items()}
    first = {key: values[0] for key, values in ends.items()}
    return [first, *(first | {key: value} for key, values in ends.items() for value in values[1:])]


def draw(parameter: list[Any] | Range, rng: np.random.Generator) -> Any:
    """One random value: an item of a list, each equally likely, or a number from a range."""
    if isinstance(parameter, Range):
        return parameter.draw(rng)
    return parameter[int(rng.integers(len(parameter)))]


def _is_sweep_file(raw: Any) -> bool:
    # Configs have neither key, so a file with either is a sweep file (and one lacking the other is told so).
    return isinstance(raw, dict) and bool({"base", "parameters"} & raw.keys())


def _validate_sweep_file(path: Path, root: Node, raw: dict) -> SweepFile:
    """The sweep file as a model, or a ConfigError listing every problem with its line, as for configs."""
    positions = Positions(str(path), root)
    problems = list(duplicate_key_problems(root, positions))
    try:
        spec = SweepFile.model_validate(raw)
    except ValidationError as err:
        problems += [problem for error in err.errors() for problem in _sweep_file_problems(error, raw, positions)]
    if problems:
        raise ConfigError(report_problems(str(path), problems))
    if (spec.method == "tpe" or search.pruner_of(spec.model_dump(mode="json"))) and not search.available():
        key, what = (("method",), "'tpe' ") if spec.method == "tpe" else (("early_terminate",), "")
        raise ConfigError(positions.problem(key, f"{what}{search.INSTALL_HINT}").text)
    if not (path.parent / spec.base).is_file():
        message = f"{path.parent / spec.base} not found (the base config is relative to the sweep file's folder)"
        raise ConfigError(positions.problem(("base",), message).text)
    return spec


def _sweep_file_problems(error: dict, raw: dict, positions: Positions) -> Iterator[Problem]:
    """A pydantic error as problems at the keys the user wrote; the config's wording wherever it applies."""
    kind, loc, given = error["type"], error["loc"], error.get("input")
    path = written_path(raw, loc, missing=kind == "missing")
    if kind == "extra_forbidden":
        model = {"parameters": Range, "early_terminate": EarlyTerminate}.get(loc[0], SweepFile)
        yield positions.problem(path, "unknown key" + suggest(path[-1], list(model.model_fields)), at_key=True)
    elif kind == "literal_error":
        allowed = suggest(given, _CHOICES[loc[0]], list_all=True)
        yield positions.problem(path, f"{show(given)} is not allowed{allowed}")
    elif kind == "list_type" and loc[0] == "parameters":
        yield positions.problem(path, f"expected a list of values or a range {{min, max, log}}, got {show(given)}")
    else:
        yield from problems_from(error, raw, positions)


# --- expanding and validating the trials --------------------------------------------------------------------------


@dataclass
class Trial:
    """One run of a sweep: its swept values and the resolved config its worker trains."""

    name: str  # trial-000, trial-001, ...: its folder in the sweep directory
    values: dict[str, Any]  # swept key -> value; a sweep of configs has the one key `config`
    config: dict[str, Any]  # the resolved config as plain data
    identity: str  # hash of the config without name and output: equal identities, equal training
    size: int  # about how many bytes its run directory takes

    @property
    def label(self) -> str:
        return _label(self.name, self.values)


def _label(name: str, values: dict[str, Any]) -> str:
    """How errors and messages name a trial: `trial-003 (optimizer.lr=0.01, seed=2)`."""
    return f"{name} ({', '.join(f'{key}={_cell(value)}' for key, value in values.items())})"


@dataclass
class Sweep:
    """Trials expanded and validated, with what is needed to expand them again on resume."""

    name: str
    sources: list[str]  # absolute paths: the sweep file, or the configs
    overrides: list[str]  # --set (and --output as output.dir) for every trial
    monitor: str
    mode: str
    trials: list[Trial]
    settings: dict[str, Any] | None = None  # the sweep file, resolved; None for a sweep of configs
    stage: str = "saved"  # which value of the monitor ranks the trials (see Ranking)
    notes: list[str] = field(default_factory=list)  # files left out, for the user
    probes: list[Trial] = field(default_factory=list)  # random, tpe: the configs that checked every value
    mix: str | None = None  # a sweep of configs mixing losses or tasks: what the ranked table's header says of it

    @property
    def ranking(self) -> Ranking:
        return Ranking(self.monitor, self.mode, self.stage)

    @property
    def method(self) -> str:
        return "grid" if self.settings is None else self.settings["method"]

    @property
    def searching(self) -> bool:
        """Whether an Optuna study runs beside the trials: tpe proposes them, an early_terminate pruner prunes them."""
        return self.method == "tpe" or self.pruner is not None

    @property
    def pruner(self) -> str | None:
        """The Optuna pruner of early_terminate, if it has one."""
        return None if self.settings is None else search.pruner_of(self.settings)

    @property
    def health_from(self) -> int | None:
        """The epoch from which trials judge their own health and stop on a fatal cause (early_terminate: health)."""
        early = (self.settings or {}).get("early_terminate")
        return early["min_epochs"] if early and HEALTH in early["method"] else None

    @property
    def size(self) -> int:
        """How many trials the sweep runs in all (a tpe sweep's are proposed as it goes)."""
        return self.settings["n_trials"] if self.method == "tpe" else len(self.trials)

    @property
    def keys(self) -> list[str]:
        """The swept keys, the columns of the trial tables (a sweep of configs: `config`, of changes: `change`)."""
        if self.settings:
            return list(self.settings["parameters"])
        return list(self.trials[0].values) if self.trials else ["config"]

    def new_trial(self, index: int, values: dict[str, Any]) -> Trial:
        """Trial number `index` of a tpe sweep, with the values the study proposed (ConfigError/DataError)."""
        base = Path(self.settings["base"])
        overrides = _variant_overrides(values, self.overrides, Path(self.sources[0]).parent)
        return _trials([(values, base, overrides)], self.monitor, same=None,
                       first=index)[0]  # fmt: skip


def plan_sweep(
    paths: Sequence[str | Path], overrides: Sequence[str] = (), *, name: str | None = None,
    output: str | Path | None = None,
) -> Sweep:  # fmt: skip
    """Expand a sweep file, or a list of configs, into trials and validate every one (ConfigError/DataError)."""
    if not paths:
        raise ConfigError("give a sweep file, or config files to compare")
    try:
        if name is not None:
            check_name(name)
    except ValueError as err:
        raise ConfigError(f"--name {name!r}: {err}") from None
    overrides = [*overrides, *([override("output.dir", os.path.abspath(output))] if output is not None else [])]
    files = [(Path(path), *parse_yaml(read_text(Path(path)), str(path))) for path in paths]
    sweep_files = [path for path, _, raw in files if _is_sweep_file(raw)]
    if len(files) == 1 and sweep_files:
        path, root, raw = files[0]
        return _plan_sweep_file(path, _validate_sweep_file(path, root, raw), overrides, name)
    if len(sweep_files) == len(files):
        raise ConfigError(f"{sweep_files[1]}: a sweep file runs on its own — give one sweep file at a time")
    # A shell glob such as configs/*.yaml also matches sweep files: compare the configs, and say what was left out.
    notes = [f"skipped {path}: a sweep file runs on its own (autobp sweep {path})" for path in sweep_files]
    configs = [path for path, _, raw in files if not _is_sweep_file(raw)]
    variants = [({"config": str(path.resolve())}, path, overrides) for path in configs]
    trials = _trials(variants, "val_loss", same="two of the files describe the same training")
    sources = [trial.values["config"] for trial in trials]
    monitor, mix = _shared_monitor(trials)
    mode = "min" if lower_is_better(monitor) else "max"
    return Sweep(name or "sweep", sources, overrides, monitor, mode, trials, notes=notes, mix=mix)


def _shared_monitor(trials: list[Trial]) -> tuple[str, str | None]:
    """What a sweep of configs ranks by, and what its header says of a mix: val_loss when the trials share a loss;
    when they mix the losses of one task, that task's validation metric (accuracy or R²), which compares them."""
    losses = sorted({trial.config["loss"] for trial in trials})
    tasks = sorted({trial.config["data"]["task"] for trial in trials})
    if len(losses) == 1:
        return "val_loss", None
    if len(tasks) == 1:
        metric = f"val_{task_metric(tasks[0])}"
        return metric, f"the trials mix losses ({', '.join(losses)}): their val_loss values do not compare"
    return "val_loss", (f"the trials mix losses ({', '.join(losses)}) and tasks ({', '.join(tasks)}): no metric they "
                        "share compares them, so this ranking compares val_loss values of different losses")


def plan_changes(
    name: str, base: Path, changes: Sequence[dict[str, Any]], overrides: Sequence[str], monitor: str
) -> tuple[Sweep, list[str | None]]:  # fmt: skip
    """A sweep of `changes` to one config file, each a mapping of dotted keys to values as --set takes them (each
    trial's value `change` is its --set text, see `change_arguments`). Returns the sweep and, per change, None if
    it is a trial or the error that leaves it out (it does not validate). `overrides` come before each change, so a
    change of the same key wins; two changes may train the same config."""
    trials: list[Trial] = []
    errors: list[str | None] = []
    for change in changes:
        values = {"change": change_arguments(change)}
        try:
            trial = _trials([(values, base, [*overrides, *override_arguments(change)])], monitor, same=None,
                            first=len(trials))[0]  # fmt: skip
        except (ConfigError, DataError) as err:
            errors.append(str(err))
            continue
        trials.append(trial)
        errors.append(None)
    mode = "min" if lower_is_better(monitor) else "max"
    return Sweep(name, [str(base)], list(overrides), monitor, mode, trials), errors


def change_arguments(change: dict[str, Any]) -> str:
    """A change as its --set arguments, `optimizer.lr=0.01 model.init=he`, or `(none)` for no change."""
    return " ".join(override_arguments(change)) or "(none)"


def _plan_sweep_file(path: Path, spec: SweepFile, overrides: list[str], name: str | None) -> Sweep:
    base = (path.parent / spec.base).resolve()
    variants = [(values, base, _variant_overrides(values, overrides, path.parent)) for values in expand(spec)]
    # Equal grid points mean a swept key changes nothing; random draws from short lists may repeat by chance.
    same = "a swept key changes nothing (is it set more specifically, e.g. per layer in model.layers?)"
    trials = _trials(variants, spec.monitor, same=same if spec.method == "grid" else None)
    checks = [] if spec.method == "grid" else probes(spec)  # a grid's trials already try every value
    checked = _trials([(values, base, _variant_overrides(values, overrides, path.parent)) for values in checks], spec.monitor,
                      same=None, prefix="check")  # fmt: skip
    mode = spec.mode or ("min" if lower_is_better(spec.monitor) else "max")
    settings = spec.model_dump(mode="json") | {"base": str(base), "mode": mode}
    sweep_name = name or spec.name or path.stem
    return Sweep(sweep_name, [str(path.resolve())], overrides, spec.monitor, mode, trials, settings, stage=spec.rank,
                 probes=checked)


def _variant_overrides(values: dict[str, Any], overrides: list[str], base: Path) -> list[str]:
    """--set overrides for one trial's values; a file path written in the sweep file is relative to its folder."""
    return [*(override(key, value, base) for key, value in values.items()), *overrides]


def override(key: str, value: Any, base: Path | None = None) -> str:
    """`key=value` for --set; a file path written in the sweep file is relative to the sweep file's folder."""
    if base is not None and tuple(key.split(".")) in FILE_PATH_KEYS and isinstance(value, str):
        value = os.path.abspath(base / Path(value).expanduser())
    return f"{key}={override_value(value)}"


def _trials(
    variants: list[tuple[dict[str, Any], Path, list[str]]], monitor: str, *, same: str | None, first: int = 0,
    prefix: str = "trial",
) -> list[Trial]:  # fmt: skip
    """Load and resolve each (values, config file, overrides) variant, named <prefix>-<first + i>; the first error
    stops, naming its trial. Two trials that train the same config are an error explained by `same`, unless None."""
    datasets: DatasetCache = {}
    trials: list[Trial] = []
    seen: dict[str, Trial] = {}
    for index, (values, path, overrides) in enumerate(variants, start=first):
        name = trial_name(index, prefix)
        try:
            config, dataset = prepare(path, overrides, datasets=datasets)
            _check_monitor(config, monitor)
        except (ConfigError, DataError) as err:
            raise type(err)(f"{_label(name, values)}: {err}") from None
        trial = Trial(name, values, config.model_dump(mode="json"), _identity(config), estimated_size(config, dataset))
        if same is not None and trial.identity in seen:
            raise ConfigError(f"{trial.label} trains the same config as {seen[trial.identity].label}: {same}")
        seen[trial.identity] = trial
        trials.append(trial)
    return trials


def trial_name(index: int, prefix: str = "trial") -> str:
    """A trial's folder name: trial-000, trial-001, ..."""
    return f"{prefix}-{index:03d}"


def _check_monitor(config: Config, monitor: str) -> None:
    problem = monitor_problem(monitor, config.data.task, config.data.val_fraction)
    if problem:
        raise ConfigError(f"monitor {problem}")


def _identity(config: Config) -> str:
    """sha256 of what the resolved config trains: without its name and output folder, and without model.activation
    and model.init, defaults already copied into each layer."""
    trained = config.model_dump(mode="json", exclude={"name": True, "output": True, "model": {"activation", "init"}})
    return hashlib.sha256(json.dumps(trained, sort_keys=True).encode()).hexdigest()


# --- the sweep directory ------------------------------------------------------------------------------------------


def _record(sweep: Sweep) -> str:
    """sweep.yaml's text (a ConfigError if it would be larger than it can be read back)."""
    return record_text(SweepRecord(
        name=sweep.name, sources=sweep.sources, overrides=sweep.overrides, monitor=sweep.monitor, mode=sweep.mode,
        rank=sweep.stage, settings=sweep.settings,
        trials=[TrialRecord(trial=t.name, values=t.values, identity=t.identity) for t in sweep.trials],
    ))  # fmt: skip


def _write_record(directory: Path, text: str) -> None:
    files.write_atomic(directory / SWEEP_FILE, text)


def _other_metrics(sweep: Sweep) -> list[str]:
    """The final metrics trials.csv shows beside the monitored one: losses, then accuracy and/or R² as the tasks
    in the sweep report them."""
    reported = sorted({task_metric(trial.config["data"]["task"]) for trial in [*sweep.trials, *sweep.probes]})
    metrics = [f"{split}_{measure}" for measure in ("loss", *reported) for split in ("train", "val")]
    return [metric for metric in metrics if metric != sweep.monitor]


def _write_trials_csv(directory: Path, sweep: Sweep, outcomes: list[Outcome]) -> None:
    monitor, others = sweep.monitor, _other_metrics(sweep)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", "status", *sweep.keys, monitor, f"best_{monitor}", *others, "epochs",
                     "seconds", "run_dir", "reason"])  # fmt: skip
    for trial, outcome in zip(sweep.trials, outcomes):
        saved = [outcome.value(metric, "saved") for metric in others]
        cells = [trial.name, outcome.status, *trial.values.values(), outcome.value(monitor, sweep.stage),
                 outcome.best(monitor), *saved, outcome.epochs, outcome.seconds, directory / trial.name,
                 outcome.reason]  # fmt: skip
        writer.writerow([_csv_cell(cell) for cell in cells])
    files.write_atomic(directory / TRIALS_FILE, buffer.getvalue())


def _csv_cell(value: Any) -> Any:
    # The csv writer quotes what needs quoting; quoting here too would put literal quotes in the file.
    return json.dumps(value) if isinstance(value, (list, dict)) else value


# --- running the trials -------------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """A sweep that has run (or was interrupted): its directory, trials and how each ended."""

    directory: Path
    sweep: Sweep
    outcomes: list[Outcome]
    seconds: float
    interrupted: bool = False
    unstarted: list[str] = field(default_factory=list)  # trials that failed because their worker never ran them

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if all(o.status.kept for o in self.outcomes) else EXIT_SWEEP_INCOMPLETE

    def ranking(self) -> list[int]:
        """Trial indices, best first (see Ranking)."""
        return self.sweep.ranking.order(self.outcomes)


def run_sweep(
    paths: Sequence[str | Path], overrides: Sequence[str] = (), *, name: str | None = None,
    output: str | Path | None = None, jobs: int | None = None, max_failures: int | None = None, quiet: bool = True,
    executor: TrialExecutor | None = None,
) -> SweepResult:  # fmt: skip
    """Validate every trial, make the sweep directory and run the trials, `jobs` at a time (default: one per core).

    A tpe sweep asks its study for each next trial as a worker frees up; with early_terminate, trials report each
    epoch's monitored metric and a losing one ends `pruned`. `max_failures` stops launching trials once that many
    have failed or diverged. Trials run in local worker processes unless an `executor` is given (it is shut down
    only if the sweep is interrupted).
    """
    sweep = plan_sweep(paths, overrides, name=name, output=output)
    sweeps = Path([*sweep.trials, *sweep.probes][0].config["output"]["dir"]) / "sweeps"
    outcomes = [Outcome() for _ in sweep.trials]
    rundir.ensure_output_dir(sweeps)
    _check_free_space(sweeps, sweep, outcomes)
    record = _record(sweep)  # refused before the sweep directory exists
    directory = rundir.create_run_dir(sweeps, sweep.name, {SWEEP_FILE: record})  # never a sweep without its record
    return _run(sweep, directory, outcomes, jobs, max_failures, quiet, executor)


def resume_sweep(
    directory: str | Path, *, jobs: int | None = None, max_failures: int | None = None, quiet: bool = True,
    executor: TrialExecutor | None = None,
) -> SweepResult:  # fmt: skip
    """Run again, in place, the trials of a sweep directory that did not complete or whose config has changed."""
    directory = Path(directory).resolve()
    record = read_record(directory)
    refuse_if_running(directory)  # before anything is written
    sweep = plan_sweep(record.sources, record.overrides, name=record.name)
    if sweep.method == "tpe":  # its trials are the ones the study proposed so far, as sweep.yaml lists them
        sweep.trials = [sweep.new_trial(index, old.values) for index, old in enumerate(record.trials)]
    if len(sweep.trials) != len(record.trials):
        raise ConfigError(f"{directory}: the sweep now has {len(sweep.trials)} trials, not {len(record.trials)} "
                          "— start a new sweep instead")  # fmt: skip
    _check_trials_csv(directory, sweep.notes)
    outcomes = [_earlier_outcome(directory, trial, old, sweep.notes) for trial, old in zip(sweep.trials, record.trials)]
    _check_free_space(directory, sweep, outcomes)
    record = _record(sweep)
    if sweep.searching:
        search.check_journal(directory, sweep.settings["parameters"], sweep.notes)
    files.remove_orphans(directory)  # temporaries of a sweep killed mid-write
    _write_record(directory, record)
    return _run(sweep, directory, outcomes, jobs, max_failures, quiet, executor)


def run_in(
    directory: Path, sweep: Sweep, *, jobs: int | None = None, quiet: bool = True,
    executor: TrialExecutor | None = None,
) -> SweepResult:  # fmt: skip
    """Run a planned sweep in a fixed `directory` (made if needed), for tools whose trials live beside what they
    study. Trials that an earlier sweep there finished with the same config are kept; other trial folders go."""
    rundir.ensure_output_dir(directory)
    refuse_if_running(directory)
    earlier: dict[str, TrialRecord] = {}
    if (directory / SWEEP_FILE).is_file():
        try:
            earlier = {old.trial: old for old in read_record(directory).trials}
        except ConfigError as err:
            sweep.notes.append(f"{err}: its trials run again")
    outcomes = [_earlier_outcome(directory, trial, earlier[trial.name], sweep.notes) if trial.name in earlier
                else Outcome() for trial in sweep.trials]  # fmt: skip
    planned = {trial.name for trial in sweep.trials}
    for stale in trial_dirs(directory):
        if stale.name not in planned:
            shutil.rmtree(stale)
    _check_free_space(directory, sweep, outcomes)
    _write_record(directory, _record(sweep))
    return _run(sweep, directory, outcomes, jobs, None, quiet, executor)


def _check_trials_csv(directory: Path, notes: list[str]) -> None:
    """trials.csv is only a table of the trials' own summary.json files: a damaged one is a note, and rewritten."""
    path = directory / TRIALS_FILE
    if not path.exists():
        return
    try:
        rows = files.read_rows(path)
        if rows and "trial" not in rows[0]:
            raise DataError(f"{path}: no trial column")
    except DataError as err:
        notes.append(f"{err}: rewritten from the trials' summary.json files")


def _earlier_outcome(directory: Path, trial: Trial, old: TrialRecord, notes: list[str]) -> Outcome:
    """The outcome kept from the earlier run if its summary.json says it finished the same config; else a pending
    trial (one whose summary.json cannot be read runs again, with a note)."""
    summary = directory / trial.name / rundir.SUMMARY_FILE
    if old.identity != trial.identity or not summary.exists():
        return Outcome()
    try:
        content = read_summary(summary)
    except DataError as err:
        notes.append(f"{err}: {trial.name} runs again")
        return Outcome()
    return Outcome(content.status, content) if content.status.kept else Outcome()


def _check_free_space(directory: Path, sweep: Sweep, outcomes: list[Outcome]) -> None:
    needed = sum(trial.size for trial, outcome in zip(sweep.trials, outcomes) if not outcome.status.kept)
    unasked = sweep.size - len(sweep.trials)  # tpe trials still to propose: the largest configs checked, each
    needed += unasked * max((probe.size for probe in sweep.probes), default=0)
    rundir.check_free_space(directory, needed)


def _run(
    sweep: Sweep, directory: Path, outcomes: list[Outcome], jobs: int | None, max_failures: int | None,
    quiet: bool, executor: TrialExecutor | None,
) -> SweepResult:  # fmt: skip
    to_run = sum(not outcome.status.kept for outcome in outcomes) + sweep.size - len(sweep.trials)
    jobs = max(1, min(jobs or available_cores(), to_run))
    started = time.perf_counter()
    with running_sweep(directory), interrupted_once():
        local = LocalExecutor(jobs) if executor is None else contextlib.nullcontext(executor)
        with local as pool, contextlib.ExitStack() as stack:
            study = _open_search(sweep, directory)
            reports = None
            if study is not None and sweep.pruner is not None:
                reports = stack.enter_context(open_reports(pool, study.should_stop))
            progress = SweepProgress(to_run, sweep.name, quiet)
            limit = math.inf if max_failures is None else max_failures
            scheduler = _Scheduler(sweep, directory, outcomes, pool, jobs, limit, progress, study, reports)
            interrupted = scheduler.run()
    seconds = time.perf_counter() - started
    return SweepResult(directory, sweep, outcomes, seconds, interrupted, sorted(scheduler.unstarted))


def _open_search(sweep: Sweep, directory: Path) -> search.Search | None:
    """The sweep's study (study.journal), if it searches or prunes."""
    if not sweep.searching:
        return None
    epochs = max(trial.config["training"]["epochs"] for trial in [*sweep.trials, *sweep.probes])
    return search.Search(directory, sweep.settings, sweep.mode, epochs)


class _Scheduler:
    """Launches trials as workers free up, records how each ends and rewrites trials.csv as they do.

    With a study, each trial is opened in it as it launches (a tpe trial is proposed then) and told how it ended;
    with reports, each trial gets a reporter through which the study may prune it.

    When a worker process dies, every trial then running fails with it, not only the one that killed it; so a
    trial that fails that way while others ran beside it is run once more, alone, and fails only if it dies again.
    """

    def __init__(
        self, sweep: Sweep, directory: Path, outcomes: list[Outcome], executor: TrialExecutor, jobs: int,
        max_failures: float, progress: SweepProgress, study: search.Search | None = None, reports: Any = None,
    ) -> None:  # fmt: skip
        self.sweep = sweep
        self.study = study
        self.reports = reports
        self.directory = directory
        self.outcomes = outcomes
        self.executor = executor
        self.jobs = jobs
        self.max_failures = max_failures
        self.progress = progress
        self.queue = deque(index for index, outcome in enumerate(outcomes) if not outcome.status.kept)
        self.queue.extend(range(len(outcomes), sweep.size))  # tpe trials not proposed yet
        self.running: dict[Future, int] = {}
        self.shared: set[int] = set()  # running trials that have had others beside them
        self.alone: set[int] = set()  # trials to run again with nothing beside them
        self.done = self.failed = 0
        self.unstarted: set[str] = set()

    def run(self) -> bool:
        """Run the queued trials; True if interrupted by Ctrl-C (running trials end `interrupted`)."""
        try:
            while True:
                self._launch()
                if not self.running:
                    return False
                finished, _ = wait(self.running, return_when=FIRST_COMPLETED)
                for future in finished:
                    self._finish(future)
        except KeyboardInterrupt:
            self._interrupt()
            return True
        except OSError:  # trials.csv could not be written: end the trials now rather than run them unrecorded
            self._interrupt()
            raise
        finally:
            for index in self.running.values():  # only if interrupted again while stopping
                self.outcomes[index] = Outcome(Status.INTERRUPTED)
            self.progress.close()
            _write_trials_csv(self.directory, self.sweep, self.outcomes)

    def _may_launch(self) -> bool:
        if not self.queue or self.failed >= self.max_failures or self.alone & set(self.running.values()):
            return False
        if self.queue[0] in self.alone:
            return not self.running
        return len(self.running) < self.jobs

    def _launch(self) -> None:
        while self._may_launch():
            index = self.queue.popleft()
            trial = self._open(index)
            reporter = None if self.reports is None else self.reports.reporter(trial.name, self.sweep.monitor)
            extra = () if reporter is None and self.sweep.health_from is None else (reporter, self.sweep.health_from)
            future = self.executor.submit(run_trial, trial.config, str(self.directory / trial.name), *extra)
            if self.running:
                self.shared.update([index, *self.running.values()])
            self.running[future] = index
            self.outcomes[index] = Outcome(Status.RUNNING)
        _write_trials_csv(self.directory, self.sweep, self.outcomes)
        self.show()

    def _open(self, index: int) -> Trial:
        """Trial `index`, opened in the study if there is one; a tpe trial not proposed yet is proposed now."""
        if self.study is None:
            return self.sweep.trials[index]
        known = index < len(self.sweep.trials)
        values = self.study.start(trial_name(index), index, self.sweep.trials[index].values if known else None)
        if not known:
            self.sweep.trials.append(self.sweep.new_trial(index, values))
            self.outcomes.append(Outcome())
            _write_record(self.directory, _record(self.sweep))
        return self.sweep.trials[index]

    def _finish(self, future: Future) -> None:
        index = self.running.pop(future)
        error = future.exception()  # the worker died, or the executor could not run the trial
        if error is not None and self.study is not None:  # run again (below) or failed: a new Optuna trial if again
            self.study.finish(self.sweep.trials[index].name, Status.FAILED, None)
        if error is not None and index in self.shared:
            self.shared.discard(index)
            self.alone.add(index)
            self.queue = deque(sorted([index, *self.queue]))  # retries first (they precede the queue), in order
            self.outcomes[index] = Outcome()
            return
        if error is not None:
            outcome = Outcome(Status.FAILED, Summary(status=Status.FAILED, error=self._failure(index, error)))
        else:
            outcome = _outcome(future.result())
        self.shared.discard(index)
        self.alone.discard(index)
        self.outcomes[index] = outcome
        if self.study is not None:
            self.study.finish(self.sweep.trials[index].name, outcome.status, outcome.final(self.sweep.monitor))
        self.done += 1
        self.failed += not outcome.status.kept
        self.show(self.sweep.trials[index], outcome)

    def _failure(self, index: int, error: BaseException) -> str:
        """Why a trial whose worker failed did not run; a worker that started it made its folder first (run_trial)."""
        trial = self.sweep.trials[index].name
        if (self.directory / trial).exists():
            return f"{type(error).__name__}: {error}"
        self.unstarted.add(trial)
        return f"its worker process ended before the trial started ({type(error).__name__}: {error})"

    def _interrupt(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        for future, index in self.running.items():
            ended = future.done() and not future.cancelled() and future.exception() is None
            self.outcomes[index] = _outcome(future.result()) if ended else Outcome(Status.INTERRUPTED)
        self.running.clear()

    def show(self, trial: Trial | None = None, outcome: Outcome | None = None) -> None:
        monitor = self.sweep.monitor
        best = _best_text(self.sweep, self.outcomes) or "-"
        counts = {"done": self.done, "failed": self.failed, "running": len(self.running)}
        finished = None
        if trial is not None and outcome is not None:
            finished = f"{trial.name} {outcome.status} {monitor} {_cell(outcome.final(monitor))}"
        self.progress.show(counts, best, finished)


def _outcome(result: dict[str, Any]) -> Outcome:
    """The outcome `run_trial` reports."""
    return Outcome(result["status"], summary_from_dict(result["summary"]))


# --- the ranked table ---------------------------------------------------------------------------------------------


def format_ranking(result: SweepResult) -> str:
    """The trials ranked best first, then the path of the best trial's config and the sweep directory."""
    sweep, outcomes = result.sweep, result.outcomes
    monitor = sweep.monitor
    statuses = ", ".join(f"{count} {status}" for status, count in Counter(o.status for o in outcomes).items())
    lines = [f"sweep {sweep.name}: {len(outcomes)} trials ({statuses}) in {result.seconds:.1f} s; "
             f"{sweep.ranking.describe()}", *([sweep.mix] if sweep.mix else [])]  # fmt: skip
    keys = sweep.keys
    rows = [["rank", "trial", "status", *keys, monitor, f"best_{monitor}", "epochs", "seconds", "reason"]]
    ranking = result.ranking()
    beaten = _pruned_winners(sweep, outcomes, ranking)
    for place, index in enumerate(ranking, start=1):
        trial, outcome = sweep.trials[index], outcomes[index]
        rank = place if sweep.ranking.value(outcome) is not None else "-*" if index in beaten else "-"
        rows.append([
            rank, trial.name, outcome.status, *trial.values.values(), sweep.ranking.shown(outcome),
            outcome.best(monitor), outcome.epochs, outcome.seconds, outcome.reason,
        ])  # fmt: skip
    lines += format_table(rows[0], [[_cell(cell) for cell in row] for row in rows[1:]])
    if any(outcome.status == Status.PRUNED for outcome in outcomes):
        lines.append(f"pruned trials (rank -) show the {monitor} they last reported, at the epoch in `epochs`")
    winner = outcomes[ranking[0]]
    for index in beaten:
        trial, outcome = sweep.trials[index], outcomes[index]
        lines.append(f"* {trial.name} was pruned at epoch {outcome.epochs}, but its best_{monitor} "
                     f"{_cell(outcome.best(monitor))} beats the winner's {monitor} {_cell(sweep.ranking.value(winner))}"
                     f" ({sweep.trials[ranking[0]].name}): early_terminate stopped it before it could finish")  # fmt: skip
    best = _best_text(sweep, outcomes)
    if best is None:
        lines.append(f"best: none — no trial completed with a {monitor}")
    else:
        config = result.directory / sweep.trials[ranking[0]].name / rundir.CONFIG_FILE
        lines.append(f"best: {best}, config {config}")
    lines.append(f"sweep directory: {result.directory}")
    return "\n".join(lines)


def _pruned_winners(sweep: Sweep, outcomes: list[Outcome], ranking: list[int]) -> list[int]:
    """Pruned trials, in table order, whose best value beats the value the winner is ranked by."""
    winner = sweep.ranking.value(outcomes[ranking[0]])
    return [
        index for index in ranking
        if winner is not None and outcomes[index].status == Status.PRUNED
        and (best := outcomes[index].best(sweep.monitor)) is not None and sweep.ranking.better(best, winner)
    ]  # fmt: skip


def _best_text(sweep: Sweep, outcomes: list[Outcome]) -> str | None:
    """`val_loss 0.0123 (trial-004)` for the best trial so far, or None while no trial has completed."""
    best = sweep.ranking.order(outcomes)[0]
    value = sweep.ranking.value(outcomes[best])
    return None if value is None else f"{sweep.monitor} {_cell(value)} ({sweep.trials[best].name})"


def _cell(value: Any) -> str:
    """A value as the table shows it: numbers to 4 significant digits, lists as YAML writes them inline."""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return format_number(value) if value is None or isinstance(value, float) else str(value)
