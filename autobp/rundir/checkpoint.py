"""checkpoint.npz: everything a run needs to continue exactly where an epoch ended.

Parameters, optimizer state (moments, step count), the random generators' states, the early-stopping state and
the epoch and step counters, as plain arrays (RNG states as JSON text), written atomically so a kill at any
instant leaves the previous checkpoint intact. Resuming from it reproduces an uninterrupted run bit for bit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autobp.common import files
from autobp.common.files import load_npz
from autobp.common.errors import DataError

CHECKPOINT_FILE = "checkpoint.npz"


@dataclass
class Checkpoint:
    """The resumable state of a run at the end of an epoch."""

    epoch: int
    step: int
    seconds: float  # training time up to this point, so the `seconds` column continues
    started: str  # when the run first started (ISO time)
    parameters: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    rngs: dict[str, dict]  # bit-generator states by stream name
    best_value: float | None
    best_epoch: int | None
    waited: int
    best_parameters: dict[str, np.ndarray] | None


def save(run_dir: Path, checkpoint: Checkpoint) -> None:
    """Write checkpoint.npz atomically (temporary file, fsync, rename)."""
    arrays: dict[str, np.ndarray] = {
        "epoch": np.array(checkpoint.epoch),
        "step": np.array(checkpoint.step),
        "seconds": np.array(checkpoint.seconds),
        "started": np.array(checkpoint.started),
        "rngs": np.array(json.dumps(checkpoint.rngs)),  # 128-bit generator states do not fit numeric arrays
        "best_value": np.array(np.nan if checkpoint.best_value is None else checkpoint.best_value),
        "best_epoch": np.array(-1 if checkpoint.best_epoch is None else checkpoint.best_epoch),
        "waited": np.array(checkpoint.waited),
    }
    arrays.update({f"param.{k}": v for k, v in checkpoint.parameters.items()})
    arrays.update({f"optimizer.{k}": v for k, v in checkpoint.optimizer.items()})
    arrays.update({f"best.{k}": v for k, v in (checkpoint.best_parameters or {}).items()})
    files.write_npz(run_dir / CHECKPOINT_FILE, arrays)


def load(run_dir: Path) -> Checkpoint | None:
    """The run's checkpoint, or None if it never wrote one; a damaged file is a clear DataError."""
    path = run_dir / CHECKPOINT_FILE
    if not path.exists():
        return None
    arrays = load_npz(path)
    missing = [key for key in ("epoch", "step", "seconds", "started", "rngs", "best_value", "best_epoch", "waited") if key not in arrays]
    if missing:
        raise DataError(f"{path}: not an autobp checkpoint (missing {', '.join(missing)})")
    best_epoch = int(arrays["best_epoch"])
    best = _prefixed(arrays, "best.")
    return Checkpoint(
        epoch=int(arrays["epoch"]),
        step=int(arrays["step"]),
        seconds=float(arrays["seconds"]),
        started=str(arrays["started"]),
        parameters=_prefixed(arrays, "param."),
        optimizer=_prefixed(arrays, "optimizer."),
        rngs=json.loads(str(arrays["rngs"])),
        best_value=None if best_epoch < 0 else float(arrays["best_value"]),
        best_epoch=None if best_epoch < 0 else best_epoch,
        waited=int(arrays["waited"]),
        best_parameters=best or None,
    )


def _prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {key[len(prefix) :]: value for key, value in arrays.items() if key.startswith(prefix)}
