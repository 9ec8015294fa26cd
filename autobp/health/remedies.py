"""The config changes a diagnosis proposes: the fix to try first and its alternatives, as dotted keys to values
(exactly what `--set` takes), and the prose written from them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from autobp.config.overrides import override_value
from autobp.config.models import MAX_EPOCHS, Config, TrainingConfig
from autobp.health.layers import squashing
from autobp.health.thresholds import (
    ADAPTIVE, CLIP_GRAD_NORM, EPOCHS_FACTOR, HEALTHY_LARGEST_STEP, HEALTHY_UPDATE_RATIO, LR_STEP, MAX_LR_CUT,
)
from autobp.model.network import fitting_init
from autobp.rundir.summary import Diagnosis

_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(\w+)$")
NO_CONFIG = "config.yaml could not be read, so no change can be proposed for it"


@dataclass
class Remedy:
    """What to change for a diagnosis: the fix to try first, the alternatives best first, and why they help."""

    fix: dict[str, Any]
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""

    def suggestion(self) -> str:
        """The prose, written from the fix and the alternatives so that it cannot say anything else."""
        if not self.fix:
            return f"no config change can be proposed: {self.reason}"
        text = f"set {describe_change(self.fix)}" + (f" ({self.reason})" if self.reason else "")
        return text + "".join(f"; {'else' if i == 0 else 'or'} try {describe_change(change)}"
                              for i, change in enumerate(self.alternatives))  # fmt: skip


def describe_change(change: dict[str, Any]) -> str:
    """A change as the user reads it: `key: value` pairs, per-layer keys with one value grouped by layer range."""
    parts: dict[tuple[str, str], list[int]] = {}
    for key, value in change.items():
        match = _LAYER_KEY.match(key)
        if match:
            parts.setdefault((f"model.layers.{{}}.{match[2]}", override_value(value)), []).append(int(match[1]))
        else:
            parts[(key, override_value(value))] = []
    return ", ".join(f"`{key.format(_index_range(indexes))}: {value}`" for (key, value), indexes in parts.items())


def _index_range(indexes: list[int]) -> str:
    if len(indexes) > 2 and indexes == list(range(indexes[0], indexes[-1] + 1)):
        return f"{indexes[0]}–{indexes[-1]}"
    return ",".join(map(str, indexes))


def diagnosis(kind: str, layer: str | None, message: str, evidence: dict[str, Any], remedy: Remedy,
              layers: Sequence[str] = ()) -> Diagnosis:  # fmt: skip
    """A diagnosis whose suggestion is its remedy's prose."""
    return Diagnosis(kind=kind, layer=layer, layers=list(layers), evidence=evidence, message=message,
                     suggestion=remedy.suggestion(), fix=remedy.fix, alternatives=remedy.alternatives)  # fmt: skip


def _rounded(value: float) -> float:
    return float(f"{value:.1g}")


def hidden_layers(config: Config) -> range:
    return range(len(config.model.layers) - 1)


def each(indexes: Iterable[int], key: str, value: Any) -> dict[str, Any]:
    return {f"model.layers.{index}.{key}": value for index in indexes}


def _init_change(config: Config) -> dict[str, Any]:
    """Every layer whose initialisation does not fit its activation moved to the one that does."""
    return {f"model.layers.{index}.init": fitting_init(layer.activation)
            for index, layer in enumerate(config.model.layers) if layer.init != fitting_init(layer.activation)}  # fmt: skip


def lr_change(config: Config, factor: float) -> dict[str, Any]:
    return {"optimizer.lr": _rounded(config.optimizer.lr * factor)}


def adaptive_change(config: Config) -> list[dict[str, Any]]:
    """Adam at its usual rate, as an alternative for the optimizers without a per-weight step size."""
    if config.optimizer.name in ("adam", "adamw", "rmsprop"):
        return []
    return [{"optimizer.name": ADAPTIVE["name"], "optimizer.lr": ADAPTIVE["lr"]}]


def longer(config: Config) -> dict[str, Any]:
    """Train longer: without the step budget if one ended the run, else EPOCHS_FACTOR times the epochs, and at least
    the default number of epochs."""
    training = config.training
    if training.max_steps is not None:
        return {"training.max_steps": None}
    epochs = max(training.epochs * EPOCHS_FACTOR, TrainingConfig.model_fields["epochs"].default)
    return {"training.epochs": min(epochs, MAX_EPOCHS)}


def _without_empty(changes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [change for change in changes if change]


def remedy_from(config: Config | None, reason: str, changes: Any) -> Remedy:
    """A remedy from `changes(config)`, a list of changes best first; none without a readable config."""
    if config is None:
        return Remedy({}, [], NO_CONFIG)
    found = _without_empty(changes(config))
    return Remedy(found[0], found[1:], reason) if found else Remedy({}, [], reason)


def init_remedy(config: Config | None) -> Remedy:
    def changes(config: Config) -> list[dict[str, Any]]:
        clip = [] if config.optimizer.clip_grad_norm else [{"optimizer.clip_grad_norm": CLIP_GRAD_NORM}]
        return [_init_change(config), *clip]

    return remedy_from(config, "weights scaled to their layer's width keep the signal's size from layer to layer",
                       changes)


def vanishing_remedy(config: Config | None) -> Remedy:
    def changes(config: Config) -> list[dict[str, Any]]:
        hidden = hidden_layers(config)
        if any(squashing(config.model.layers[i].activation) for i in hidden):
            relu = {**each(hidden, "activation", "relu"), **each(hidden, "init", "he")}
            return [relu, _init_change(config), *adaptive_change(config)]
        return [_init_change(config), each(hidden, "activation", "leaky_relu"), *adaptive_change(config)]

    return remedy_from(config, "a signal that keeps its size through every layer reaches the first ones", changes)


def dead_remedy(config: Config | None) -> Remedy:
    def changes(config: Config) -> list[dict[str, Any]]:
        standardize = [] if config.data.standardize else [{"data.standardize": True}]
        relu = [i for i in hidden_layers(config) if config.model.layers[i].activation == "relu"]
        return [*standardize, each(relu, "activation", "leaky_relu"), _init_change(config),
                lr_change(config, 1 / LR_STEP)]  # fmt: skip

    return remedy_from(config, "a unit whose pre-activation is negative for every input never learns again", changes)


def saturated_remedy(config: Config | None) -> Remedy:
    def changes(config: Config) -> list[dict[str, Any]]:
        standardize = [] if config.data.standardize else [{"data.standardize": True}]
        hidden = hidden_layers(config)
        relu = {**each(hidden, "activation", "relu"), **each(hidden, "init", "he")}
        return [*standardize, _init_change(config), relu]

    return remedy_from(config, "a unit pinned at ±1 (or 0 and 1) passes almost no gradient", changes)


def lower_rate_remedy(config: Config | None, typical: float | None, largest: float | None) -> Remedy:
    """A learning rate lowered to bring the steps to a healthy size, by at least LR_STEP."""

    def changes(config: Config) -> list[dict[str, Any]]:
        # ‖ΔW‖ scales about linearly with the learning rate for every optimizer autobp has.
        wanted = [HEALTHY_UPDATE_RATIO / typical if typical else 1.0, HEALTHY_LARGEST_STEP / largest if largest else 1.0]
        factor = min(max(min(wanted), 1 / MAX_LR_CUT), 1 / LR_STEP)
        clip = [] if config.optimizer.clip_grad_norm else [{"optimizer.clip_grad_norm": CLIP_GRAD_NORM}]
        return [lr_change(config, factor), lr_change(config, factor / LR_STEP), *clip]

    return remedy_from(config, "smaller steps stay inside the minimum the loss is looking for", changes)
