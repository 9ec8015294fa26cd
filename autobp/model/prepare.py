"""The one way to get a run ready: load and validate the config, load its data, resolve the config against the
data, and check everything else that can be wrong (`model.init_from`, sizes) before any run directory exists.

`train`, `--resume`, `validate`, `gradcheck`, sweep planning (every trial, before the first starts) and the workers
that run trials all prepare through `prepare`, so a config that one of them accepts, all of them accept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from autobp.common.errors import ConfigError, DataError
from autobp.common.text import format_number, shorten
from autobp.model.data import Dataset, load_dataset, resolve_config
from autobp.model.network import build_network
from autobp.config.models import Config
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
