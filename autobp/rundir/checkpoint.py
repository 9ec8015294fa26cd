"""checkpoint.npz: everything a run needs to continue exactly where an epoch ended.

Parameters, optimizer state (moments, step count), the random generators' states, the early-stopping state and
the epoch and step counters, as plain arrays (RNG states as JSON text), written atomically so a kill at any
instant leaves the previous checkpoint intact. Resuming from it reproduces an uninterrupted run bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autobp.common import files
from autobp.common.errors import DataError
from autobp.common.files import load_npz

CHECKPOINT_FILE = "checkpoint.npz"
PREFIXES = ("param.", "optimizer.")  # the network's and the optimizer's arrays


@dataclass
class Checkpoint:
    """The resumable state of a run at the end of an epoch."""

    epoch: int
    step: int
    parameters: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    """The other owners' state dicts, merged (early stopping, random streams, clock): their keys do not overlap."""


def save(run_dir: Path, checkpoint: Checkpoint) -> None:
    """Write checkpoint.npz atomically (temporary file, fsync, rename)."""
    arrays = {"epoch": np.array(checkpoint.epoch), "step": np.array(checkpoint.step), **checkpoint.state}
    arrays.update({f"param.{k}": v for k, v in checkpoint.parameters.items()})
    arrays.update({f"optimizer.{k}": v for k, v in checkpoint.optimizer.items()})
    files.write_npz(run_dir / CHECKPOINT_FILE, arrays)


def load(run_dir: Path) -> Checkpoint | None:
    """The run's checkpoint, or None if it never wrote one; a damaged file is a clear DataError."""
    path = run_dir / CHECKPOINT_FILE
    if not path.exists():
        return None
    arrays = load_npz(path)
    missing = [key for key in ("epoch", "step") if key not in arrays]
    if missing:
        raise DataError(f"{path}: not an autobp checkpoint (missing {', '.join(missing)})")
    for key in ("epoch", "step"):
        if arrays[key].shape != () or arrays[key].dtype.kind not in "iu" or arrays[key] < 0:
            raise DataError(f"{path}: not an autobp checkpoint ({key} is {arrays[key].dtype} {arrays[key].shape}, "
                            "not a count)")  # fmt: skip
    return Checkpoint(
        epoch=int(arrays["epoch"]),
        step=int(arrays["step"]),
        parameters=_prefixed(arrays, "param."),
        optimizer=_prefixed(arrays, "optimizer."),
        state={k: v for k, v in arrays.items() if k not in ("epoch", "step") and not k.startswith(PREFIXES)},
    )


def _prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {key[len(prefix) :]: value for key, value in arrays.items() if key.startswith(prefix)}
