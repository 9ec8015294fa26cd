"""histograms.npz: how ∂L/∂W_i, W_i and the pre-activations z_i of every layer are distributed over training.

At up to MAX_SNAPSHOTS evenly spaced steps, the trainer counts each quantity of each layer into fixed bins on a
symmetric log scale (BINS_PER_DECADE bins per decade of |v| from 1e-12 to 1e4, one bin for |v| < 1e-12, the
outermost bins open-ended), so every layer, step and run shares the same bins and the file's size is bounded.
To keep the cost per step small, each array is counted on at most SAMPLE entries taken at a fixed stride.

The file (written atomically, read with `read`):
    steps, epochs    (S,) int64         the snapshot's step and epoch
    layers           (L,) str           layer0, layer1, …
    quantities       (3,) str           weight_grad (∂L/∂W before clipping), weight (before the update), pre_activation
    edges            (BINS + 1,) float  bin edges, -inf and inf at the ends
    counts           (S, L, 3, BINS) uint16
    nan_counts       (S, L, 3) uint16   NaN entries, which no bin holds
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autobp.common import files
from autobp.common.errors import DataError
from autobp.common.files import load_npz

HISTOGRAMS_FILE = "histograms.npz"
QUANTITIES = ("weight_grad", "weight", "pre_activation")
MAX_SNAPSHOTS = 100
SAMPLE = 1024  # entries counted per array and snapshot: every count fits in uint16
BINS_PER_DECADE = 8
LOWEST, HIGHEST = -12, 4  # decades of |v| with their own bins
MAGNITUDES = (HIGHEST - LOWEST) * BINS_PER_DECADE
BINS = 2 * MAGNITUDES + 1  # negative magnitudes (largest first), |v| < 1e-12, positive magnitudes


def bin_edges() -> np.ndarray:
    """The BINS + 1 edges shared by every histogram, symmetric around 0."""
    inner = 10.0 ** (LOWEST + np.arange(1, MAGNITUDES) / BINS_PER_DECADE)
    tiny = 10.0**LOWEST
    return np.concatenate([[-np.inf], -inner[::-1], [-tiny, tiny], inner, [np.inf]])


def bin_index(values: np.ndarray) -> np.ndarray:
    """Each (non-NaN) value's bin, computed arithmetically (the edges are regular in log10|v|); in place on
    one float array, since the trainer calls this at every snapshot."""
    with np.errstate(divide="ignore"):
        steps = np.log10(np.abs(values))
    steps -= LOWEST
    steps *= BINS_PER_DECADE
    np.floor(steps, out=steps)
    np.maximum(steps, -1, out=steps)  # -1: |v| < 1e-12, the middle bin (np.clip is slower on small arrays)
    np.minimum(steps, MAGNITUDES - 1, out=steps)
    steps += 1  # bins away from the middle one
    np.copysign(steps, values, out=steps)
    steps += MAGNITUDES
    return steps.astype(np.int64)


def sample(values: np.ndarray) -> np.ndarray:
    """At most SAMPLE entries of an array, at a fixed stride (the same entries of W at every snapshot)."""
    flat = values.reshape(-1)
    return flat[:: -(-flat.size // SAMPLE)] if flat.size > SAMPLE else flat


@dataclass
class Histograms:
    """A histograms.npz in memory."""

    steps: np.ndarray
    epochs: np.ndarray
    layers: list[str]
    counts: np.ndarray
    nan_counts: np.ndarray

    def percentiles(self, layer: int, quantity: str, levels: tuple[float, ...]) -> np.ndarray:
        """(snapshots, len(levels)) percentiles (0–100) of one layer's quantity, interpolated inside the bins on
        the log scale; NaN where a snapshot counted nothing."""
        counts = self.counts[:, layer, QUANTITIES.index(quantity)].astype(float)
        return np.array([_percentiles(row, levels) for row in counts]).reshape(len(counts), len(levels))


def _percentiles(counts: np.ndarray, levels: tuple[float, ...]) -> list[float]:
    total = counts.sum()
    if total == 0:
        return [math.nan] * len(levels)
    cumulative = np.cumsum(counts) / total
    return [_value_at(counts, cumulative, level / 100) for level in levels]


def _value_at(counts: np.ndarray, cumulative: np.ndarray, share: float) -> float:
    share = max(share, 1e-12)  # the 0th percentile lies in the first bin that holds anything
    index = int(min(np.searchsorted(cumulative, share), len(counts) - 1))
    before = cumulative[index - 1] if index else 0.0
    within = (share - before) / (cumulative[index] - before) if cumulative[index] > before else 0.5
    return _position(index, within)


def _position(index: int, within: float) -> float:
    """The value a fraction `within` of the way through bin `index` (in log10|v|; open bins end at their edge)."""
    if index == MAGNITUDES:
        return 0.0
    magnitude = abs(index - MAGNITUDES) - 1
    within = within if index > MAGNITUDES else 1.0 - within
    if magnitude == MAGNITUDES - 1:
        within = 0.0  # |v| ≥ 1e4 has no upper edge
    value = 10.0 ** (LOWEST + (magnitude + within) / BINS_PER_DECADE)
    return value if index > MAGNITUDES else -value


class HistogramLog:
    """Counts the snapshots during training and writes histograms.npz."""

    def __init__(self, layers: list[str], total_steps: int) -> None:
        self.layers = layers
        self.interval = max(1, math.ceil(total_steps / MAX_SNAPSHOTS))
        self.total_steps = total_steps
        self.steps: list[int] = []
        self.epochs: list[int] = []
        self.counts: list[np.ndarray] = []
        self.nan_counts: list[np.ndarray] = []
        self._saved: list[int] = []  # the steps in the file on disk

    def wants(self, step: int) -> bool:
        """Snapshot step 1, every `interval`-th step and the last planned one."""
        return step == 1 or step % self.interval == 0 or step == self.total_steps

    def record(self, step: int, epoch: int, arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Count one snapshot: per layer (∂L/∂W, W, z) in the order of QUANTITIES."""
        samples = [sample(a) for triple in arrays for a in triple]
        values = np.concatenate(samples)
        groups = np.repeat(np.arange(len(samples)), [s.size for s in samples])
        nan = np.isnan(values)
        nan_counts = np.bincount(groups[nan], minlength=len(samples))
        if nan.any():
            values, groups = values[~nan], groups[~nan]
        counts = np.bincount(groups * BINS + bin_index(values), minlength=len(samples) * BINS)
        shape = (len(arrays), len(QUANTITIES))
        self.steps.append(step)
        self.epochs.append(epoch)
        self.counts.append(counts.reshape(*shape, BINS).astype(np.uint16))
        self.nan_counts.append(nan_counts.reshape(shape).astype(np.uint16))
        if len(self.steps) > MAX_SNAPSHOTS + 2:  # a run extended by --resume: keep every other snapshot
            for series in (self.steps, self.epochs, self.counts, self.nan_counts):
                series[1:-1] = series[1:-1][1::2]

    def keep_until(self, previous: Histograms | None, step: int) -> None:
        """Start from the snapshots an earlier session took up to `step` (resume)."""
        if previous is None or previous.layers != self.layers:
            return
        kept = previous.steps <= step
        self.steps = previous.steps[kept].tolist()
        self.epochs = previous.epochs[kept].tolist()
        self.counts = list(previous.counts[kept])
        self.nan_counts = list(previous.nan_counts[kept])

    def save(self, run_dir: Path) -> None:
        """Write histograms.npz atomically, unless it already holds these snapshots (or there are none yet)."""
        if not self.steps or self.steps == self._saved:
            return
        arrays = {
            "steps": np.array(self.steps, dtype=np.int64),
            "epochs": np.array(self.epochs, dtype=np.int64),
            "layers": np.array(self.layers, dtype=str),
            "quantities": np.array(QUANTITIES, dtype=str),
            "edges": bin_edges(),
            "counts": np.stack(self.counts),
            "nan_counts": np.stack(self.nan_counts),
        }
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)  # most bins are empty: compression takes the file to a few kB a layer
        files.write_atomic(run_dir / HISTOGRAMS_FILE, buffer.getvalue())
        self._saved = list(self.steps)


def read(run_dir: Path) -> Histograms | None:
    """A run's histograms.npz, or None when it has none (DataError when it is damaged)."""
    path = run_dir / HISTOGRAMS_FILE
    if not path.exists():
        return None
    arrays = load_npz(path)
    missing = [key for key in ("steps", "epochs", "layers", "counts", "nan_counts") if key not in arrays]
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)}; not a histograms file written by autobp train")
    problem = _inconsistency(arrays)
    if problem:
        raise DataError(f"{path}: {problem}; not a histograms file written by autobp train (it is damaged)")
    return Histograms(arrays["steps"], arrays["epochs"], arrays["layers"].tolist(), arrays["counts"],
                      arrays["nan_counts"])  # fmt: skip


def _inconsistency(arrays: dict[str, np.ndarray]) -> str:
    """What makes the arrays of a histograms file disagree with the format above ('' when nothing does)."""
    steps, epochs, layers = arrays["steps"], arrays["epochs"], arrays["layers"]
    if steps.ndim != 1 or steps.dtype.kind not in "iu" or epochs.shape != steps.shape or epochs.dtype.kind not in "iu":
        return f"steps and epochs must be lists of whole numbers of one length (got {steps.dtype} {steps.shape}, " \
               f"{epochs.dtype} {epochs.shape})"
    if (steps < 0).any() or (np.diff(steps) <= 0).any():
        return "steps must increase"
    if layers.ndim != 1 or layers.dtype.kind != "U":
        return f"layers must be a list of names (got {layers.dtype} {layers.shape})"
    for key, shape in (("counts", (len(steps), len(layers), len(QUANTITIES), BINS)),
                       ("nan_counts", (len(steps), len(layers), len(QUANTITIES)))):  # fmt: skip
        if arrays[key].shape != shape or arrays[key].dtype.kind not in "u":
            return f"{key} has {arrays[key].dtype} values of shape {arrays[key].shape}; expected counts of shape {shape}"
    return ""
