"""The one way to get a run ready: load and validate the config, load its data, resolve the config against the
data, and check everything else that can be wrong (`model.init_from`, sizes) before any run directory exists.

`train`, `--resume`, `validate`, `gradcheck`, sweep planning (every trial, before the first starts) and the workers
that run trials all prepare through `prepare`, so a config that one of them accepts, all of them accept.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from autobp.common.errors import ConfigError, DataError
from autobp.common.text import format_number, plural, shorten
from autobp.model.dataset import Dataset, load_dataset
from autobp.model.network import build_network
from autobp.config.catalog import LOSSES
from autobp.config.models import MAX_PARAMETERS, Config
from autobp.config.configfile import config_from_dict, load_config

DatasetCache = dict[str, Dataset]


def prepare(
    config: Config | dict | str | Path, overrides: Sequence[str] = (), *, datasets: DatasetCache | None = None
) -> tuple[Config, Dataset]:
    """The resolved config and its data; any problem is a ConfigError or DataError naming the config file.

    `datasets` shares loaded data between configs that differ only outside `data`, `loss` and `seed` (sweeps)."""
    source = "<config>"
    if isinstance(config, Config):
        config = config.model_dump(mode="json")
    if isinstance(config, dict):
        config = config_from_dict(config, overrides)
    else:
        source = str(config)
        config = load_config(config, overrides)
    try:
        dataset = _load(config, {} if datasets is None else datasets)
        resolved = resolve_config(config, dataset)
        if resolved.model.init_from:
            build_network(resolved, dataset.n_features, np.random.default_rng(0))  # loads and checks the file
        return resolved, dataset
    except (ConfigError, DataError) as err:
        raise type(err)(f"{source}: {err}") from None


def _load(config: Config, datasets: DatasetCache) -> Dataset:
    # The data depends only on data, loss and seed.
    key = json.dumps([config.data.model_dump(mode="json"), config.loss, config.seed])
    if key not in datasets:
        datasets[key] = load_dataset(config)
    return datasets[key]


def resolve_config(config: Config, dataset: Dataset) -> Config:
    """A copy of the config with data.task and the output layer's units filled in from the data."""
    last_index = len(config.model.layers) - 1
    last = config.model.layers[last_index]
    single_output = LOSSES[config.loss].outputs == "one"
    if single_output and dataset.n_classes != 2:
        raise ConfigError(
            f"loss: '{config.loss}' needs exactly 2 classes, but the data has {dataset.n_classes} — use cross_entropy"
        )
    units = 1 if single_output else dataset.n_outputs
    if last.units not in (None, units):
        what = plural(units, "class", "classes") if dataset.task == "classification" else plural(units, "target")
        raise ConfigError(
            f"model.layers.{last_index}.units: {last.units} output units, but the data has {what} (loss {config.loss})"
        )
    layers = [*config.model.layers[:-1], last.model_copy(update={"units": units})]
    widths = [dataset.n_features] + [layer.units for layer in layers]
    parameters = sum((fan_in + 1) * fan_out for fan_in, fan_out in itertools.pairwise(widths))
    if parameters > MAX_PARAMETERS:
        raise ConfigError(
            f"model: {parameters:,} parameters for {plural(dataset.n_features, 'input feature')}, more than the "
            f"limit of {MAX_PARAMETERS:,} — use fewer or narrower layers"
        )
    return config.model_copy(update={
        "data": config.data.model_copy(update={"task": dataset.task}),
        "model": config.model.model_copy(update={"layers": layers}),
    })


def findings(config: Config, dataset: Dataset) -> list[str]:
    """What `autobp validate` found, as YAML comment lines: the data's size and shape, its classes with their
    counts (or its targets), the split and the network's parameter count, ending with `ok`."""
    train, val = len(dataset.X_train), len(dataset.X_val)
    network = build_network(config, dataset.n_features, np.random.default_rng(0))
    widths = [dataset.n_features, *(layer.shape[1] for layer in network.layers)]
    activations = ", ".join(layer.activation for layer in network.layers)
    parameters = sum(p.data.size for p in network.parameters())
    return [
        f"# rows: {train + val:,} ({train:,} for training, {val:,} for validation)",
        f"# features: {dataset.n_features:,} ({shorten(', '.join(dataset.feature_names), 80)})",
        _classes_or_targets(dataset),
        f"# network: {' → '.join(map(str, widths))} ({activations}), {parameters:,} parameters",
        "# ok",
    ]


def _classes_or_targets(dataset: Dataset) -> str:
    if dataset.class_names is not None:
        labels = np.concatenate([dataset.y_train, dataset.y_val])
        counts = np.bincount(labels, minlength=len(dataset.class_names))
        listed = ", ".join(f"{name}: {count:,}" for name, count in zip(dataset.class_names, counts.tolist()))
        return f"# classes: {len(dataset.class_names)} ({shorten(listed, 100)})"
    y = np.concatenate([dataset.y_train, dataset.y_val])
    if dataset.y_mean is not None:
        y = y * dataset.y_std + dataset.y_mean  # back to the data's units
    ranges = [f"{name} {format_number(float(low))} to {format_number(float(high))}"
              for name, low, high in zip(dataset.target_names, y.min(axis=0), y.max(axis=0))]  # fmt: skip
    return f"# targets: {len(dataset.target_names)} ({shorten(', '.join(ranges), 100)})"
