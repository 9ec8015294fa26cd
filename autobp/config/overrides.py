"""`--set key.path=value` overrides: applying them to a config's plain data, and writing changes as them."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from autobp.common.errors import ConfigError
from autobp.common.text import shorten
from autobp.config.models import FILE_PATH_KEYS
from autobp.config.problems import AFTER_FILE, KeyPath, Problem, report_problems
from autobp.config.yamlfile import Loader, load_plain


def apply_overrides(raw: dict, overrides: Sequence[str]) -> tuple[list[tuple[int, KeyPath, str]], list[Problem]]:
    """Apply `key.path=value` overrides in order; returns (index, key path, text) of each applied one and the
    problems of the others."""
    applied, problems = [], []
    for index, text in enumerate(overrides):
        try:
            applied.append((index, _apply_override(raw, text), text))
        except ConfigError as err:
            problems.append(Problem((AFTER_FILE, index), f"--set {shorten(text, 100)}: {err}"))
    return applied, problems


def _apply_override(raw: dict, text: str) -> KeyPath:
    key, equals, value_text = text.partition("=")
    parts = key.strip().split(".")
    if not equals or not all(parts):
        raise ConfigError("expected key.path=value, e.g. --set optimizer.lr=1e-3")
    try:
        _, value, duplicates = load_plain(value_text, "the value")
    except yaml.YAMLError as err:
        raise ConfigError(f"the value is not valid YAML ({getattr(err, 'problem', None) or err})") from None
    except RecursionError:
        raise ConfigError("the value is nested too deeply") from None
    if duplicates:
        raise ConfigError(report_problems("the value", duplicates))
    container: Any = raw
    path: KeyPath = ()
    for part, next_part in zip(parts, parts[1:]):
        step = _override_step(container, part, path)
        path = (*path, step)
        if isinstance(container, dict) and container.get(step) is None:
            if next_part.isdigit():
                raise ConfigError(f"{'.'.join(map(str, path))} is not in the config, so it has no item {next_part}")
            container[step] = {}  # a missing or empty section receives its first key
        container = container[step]
    step = _override_step(container, parts[-1], path)
    if (*path, step) in FILE_PATH_KEYS and isinstance(value, str):
        # A path typed on the command line means what it means in the shell: relative to the current folder
        # (a path written in a config file is relative to that file instead).
        value = os.path.abspath(Path(value).expanduser())
    container[step] = value
    return (*path, step)


def override_arguments(changes: dict[str, Any]) -> list[str]:
    """The `--set` arguments (`key.path=value`) that make `changes`, a mapping of dotted keys to plain values; each
    value is written so that `--set` reads it back equal (a string that would read as a number or a boolean is
    quoted)."""
    return [f"{key}={override_value(value)}" for key, value in changes.items()]


def override_value(value: Any) -> str:
    """A plain value as `--set` reads it back: JSON (which is YAML flow) unless a bare string reads back as itself."""
    if isinstance(value, str) and value and yaml.load(value, Loader=Loader) == value:
        return value
    return json.dumps(value)


def _override_step(container: Any, part: str, path: KeyPath) -> str | int:
    """The key or list index that `part` names inside `container`."""
    where = ".".join(map(str, path)) or "the top level"
    if isinstance(container, dict):
        return part
    if isinstance(container, list):
        if part.isdigit() and int(part) < len(container):
            return int(part)
        items = f"{len(container)} item" + ("" if len(container) == 1 else "s")
        raise ConfigError(f"{where} has {items}, so '{part}' is not an index of it (0-based)")
    raise ConfigError(f"{where} is a single value, not a section with keys")
