"""Reading a config: its YAML, then the `--set` overrides, then validation with every problem at its position;
and writing it back as YAML."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from autobp.common.errors import ConfigError
from autobp.config.models import FILE_PATH_KEYS, Config
from autobp.config.overrides import apply_overrides
from autobp.config.problems import Positions, Problem, show, validate
from autobp.config.yamlfile import Dumper, load_document, read_text


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read, override and validate a config file; raise ConfigError listing every problem with its position."""
    path = Path(path)
    source = str(path)
    root, raw, problems = load_document(read_text(path), source)
    applied, override_problems = apply_overrides(raw, overrides)
    positions = Positions(source, root, applied)
    return _validate(raw, positions, path.parent, problems + override_problems)


def config_from_dict(
    raw: dict, overrides: Sequence[str] = (), *, source: str = "<dict>", base_dir: Path | None = None
) -> Config:
    """Validate a config given as a dict, after `--set`-style overrides; errors name `source`, relative paths
    resolve against `base_dir`. The dict itself is not changed."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a config must be a mapping, got {show(raw)}")
    raw = copy.deepcopy(raw)
    applied, problems = apply_overrides(raw, overrides)
    return _validate(raw, Positions(source, None, applied), base_dir, problems)


def dump_config(config: Config) -> str:
    """The config as YAML with every default filled in; `load_config` reads it back to an equal config."""
    return yaml.dump(config.model_dump(mode="json"), Dumper=Dumper, sort_keys=False, allow_unicode=True)


def _validate(raw: dict, positions: Positions, base_dir: Path | None, problems: list[Problem]) -> Config:
    return _with_absolute_paths(validate(Config, raw, positions, problems), base_dir or Path.cwd())


def _with_absolute_paths(config: Config, base_dir: Path) -> Config:
    """The config with every FILE_PATH_KEYS path resolved against `base_dir` (absolute paths stay as they are)."""
    sections: dict[str, Any] = {}
    for section, key in FILE_PATH_KEYS:
        part = sections.get(section) or getattr(config, section)
        sections[section] = part.model_copy(update={key: _absolute(getattr(part, key), base_dir)})
    return config.model_copy(update=sections)


def _absolute(path: str | None, base_dir: Path) -> str | None:
    return None if path is None else os.path.abspath(base_dir / Path(path).expanduser())
