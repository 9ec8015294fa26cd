"""The run directory: a fresh folder per run, files written so a crash never leaves one half-written.

Whole files (config.yaml, summary.json, model.npz) are written to a temporary name, flushed to disk and renamed
over the target, so a reader sees the old file or the new one, never a mix. Logs (metrics.csv, gradients.csv)
are appended row by row and flushed as training goes, so a killed run keeps its history.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from autobp.common import files
from autobp.common.errors import ConfigError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
GRADIENTS_FILE = "gradients.csv"
SUMMARY_FILE = "summary.json"
# model.npz's name is autobp.model.network.MODEL_FILE: the model layer reads and writes weights files.


def ensure_output_dir(output: Path) -> None:
    """Create the output folder if needed; one that cannot be created or written is a clear ConfigError."""
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"output directory {output}: cannot create it ({exc.strerror}); choose another with --output-dir") from None
    if not os.access(output, os.W_OK):
        raise ConfigError(f"output directory {output}: not writable; choose another with --output-dir")


def create_run_dir(output: Path, name: str, first: Mapping[str, str] | None = None, now: datetime | None = None) -> Path:
    """Make `<output>/<name>-<YYYYmmdd-HHMMSS>`, appending -2, -3, … rather than ever reusing a folder.

    The `first` files (name → text) are written into a hidden temporary folder that is then renamed into place, so
    a process killed at start-up leaves either no run directory or one holding them, never an empty one."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    ensure_output_dir(output)
    base = output.resolve() / f"{name}-{stamp}"
    if base.parent != output.resolve():
        raise ConfigError(f"name {name!r}: a run name cannot leave the output directory")
    files.remove_orphans(output)  # staged folders of runs killed while starting
    staging = _staged(base, first) if first else None
    for attempt in range(1, 10_000):
        path = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        try:
            _claim(path, staging)
        except (FileExistsError, _Taken):
            continue
        return path
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)
    raise ConfigError(f"output directory {output}: too many runs named {name!r} in one second")


class _Taken(Exception):
    """The name is another folder's already."""


def _staged(base: Path, first: Mapping[str, str]) -> Path:
    """A hidden folder beside `base` holding the first files, named as files.remove_orphans expects."""
    staging = base.with_name(files.temporary_name(base, "new"))
    staging.mkdir()
    try:
        for file_name, text in first.items():
            try:
                files.write_atomic(staging / file_name, text)
            except OSError as exc:  # named where the user will look for it
                raise files.naming_the_file(exc, base / file_name) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _claim(path: Path, staging: Path | None) -> None:
    """Take the name `path`: an empty new folder, or the staged one renamed there (never over another folder)."""
    if staging is None:
        path.mkdir()
        return
    if path.exists():
        raise _Taken
    try:
        os.rename(staging, path)  # a folder holding files is never renamed over: the first files keep it non-empty
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise _Taken from None
        raise


def check_free_space(output: Path, needed: int) -> None:
    """Refuse to start a run that would fill the disk: a clear error now beats a failed run later."""
    free = files.free_bytes(output)
    if free is not None and free < needed:
        raise ConfigError(
            f"output directory {output}: {free / 1e6:.1f} MB free, but this run writes about {needed / 1e6:.1f} MB; "
            "free some space or choose another with --output-dir"
        )
