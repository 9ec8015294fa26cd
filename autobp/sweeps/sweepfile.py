"""The sweep file: its models (what a sweep file may say) and reading it; its messages, which point at its
lines, come from the config's problem reporter (autobp.config.problems).

    spec = validate_sweep_file(path, *parse_yaml(read_text(path), str(path)))
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from yaml.nodes import Node

from autobp.common.errors import ConfigError
from autobp.config.models import Monitor, check_name, raise_problems
from autobp.config.problems import Positions, validate
from autobp.config.yamlfile import duplicate_key_problems
from autobp.sweeps import search
from autobp.sweeps.record import Mode, Stage

Method = Literal["grid", "random", "tpe"]
HEALTH = "health"  # the trial's own gradient-health judgement, decided in the trial's process
Terminator = Literal[(HEALTH, *search.PRUNERS)]  # search.PRUNERS: Optuna's pruners, decided in the sweep's process


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


def _parameter_kind(value: Any) -> str | None:
    if isinstance(value, list):
        return "values"
    return "range" if isinstance(value, (dict, Range)) else None  # a dict when read, a Range when written


# A callable discriminator: a list or a range is told apart by its type, so an error names only the one meant
# (and anything else, what a parameter takes).
Parameter = Annotated[
    Union[Annotated[list[Any], Field(min_length=1), Tag("values")], Annotated[Range, Tag("range")]],
    Discriminator(_parameter_kind, custom_error_type="parameter_type",
                  custom_error_message="expected a list of values or a range {min, max, log}"),
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


def is_sweep_file(raw: Any) -> bool:
    """Whether a parsed YAML file is a sweep file rather than a config."""
    # Configs have neither key, so a file with either is a sweep file (and one lacking the other is told so).
    return isinstance(raw, dict) and bool({"base", "parameters"} & raw.keys())


def validate_sweep_file(path: Path, root: Node, raw: dict) -> SweepFile:
    """The sweep file as a model, or a ConfigError listing every problem with its line, as for configs."""
    positions = Positions(str(path), root)
    spec = validate(SweepFile, raw, positions, list(duplicate_key_problems(root, positions)))
    if (spec.method == "tpe" or search.pruner_of(spec.model_dump(mode="json"))) and not search.available():
        key, what = (("method",), "'tpe' ") if spec.method == "tpe" else (("early_terminate",), "")
        raise ConfigError(positions.problem(key, f"{what}{search.INSTALL_HINT}").text)
    if not (path.parent / spec.base).is_file():
        message = f"{path.parent / spec.base} not found (the base config is relative to the sweep file's folder)"
        raise ConfigError(positions.problem(("base",), message).text)
    return spec
