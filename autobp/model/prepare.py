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
from autobp.model.data import Dataset, load_dataset, resolve_config
from autobp.model.network import build_network
from autobp.spec.config import Config
from autobp.spec.configfile import config_from_dict, load_config

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
