"""Turning a sweep file, or several configs, into trials: the values of each, its resolved config and identity.

    sweep = plan_sweep(["configs/sweep_spirals.yaml"])

Every trial is expanded and validated (config, data, monitored metric) before the first one starts. A trial is known
by a hash of its resolved config, so a resumed sweep runs again exactly the trials whose config has changed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autobp.common.errors import ConfigError, DataError
from autobp.config.catalog import lower_is_better, task_metric
from autobp.config.models import FILE_PATH_KEYS, Config, check_name, monitor_problem
from autobp.config.overrides import override_arguments, override_value
from autobp.config.yamlfile import parse_yaml, read_text
from autobp.model.prepare import DatasetCache, prepare
from autobp.sweeps import search
from autobp.sweeps.record import Ranking
from autobp.sweeps.sweepfile import HEALTH, Range, SweepFile, is_sweep_file, validate_sweep_file
from autobp.sweeps.table import cell
from autobp.training.entry import estimated_size


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
    return f"{name} ({', '.join(f'{key}={cell(value)}' for key, value in values.items())})"


@dataclass
class Sweep:
    """Trials expanded and validated, with what is needed to expand them again on resume."""

    name: str
    sources: list[str]  # absolute paths: the sweep file, or the configs
    overrides: list[str]  # --set (and --output-dir as output.dir) for every trial
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
    sweep_files = [path for path, _, raw in files if is_sweep_file(raw)]
    if len(files) == 1 and sweep_files:
        path, root, raw = files[0]
        return _plan_sweep_file(path, validate_sweep_file(path, root, raw), overrides, name)
    if len(sweep_files) == len(files):
        raise ConfigError(f"{sweep_files[1]}: a sweep file runs on its own — give one sweep file at a time")
    # A shell glob such as configs/*.yaml also matches sweep files: compare the configs, and say what was left out.
    notes = [f"skipped {path}: a sweep file runs on its own (autobp sweep {path})" for path in sweep_files]
    configs = [path for path, _, raw in files if not is_sweep_file(raw)]
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
