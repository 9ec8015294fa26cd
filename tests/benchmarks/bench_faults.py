"""What the hardening costs: reading an .npz with every array's header checked first, against numpy alone; and a
training run with a checkpoint every epoch (each now fsyncs the two logs first) against the same run that never
checkpoints and against one whose checkpoints do not fsync the logs.

    python tests/benchmarks/bench_faults.py [--repeats 9]

Both sides of each comparison alternate in one process, so a shared, noisy machine slows both alike; each reports
its best time and the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from autobp.common import files
from autobp.training.entry import train

SHAPES = [(784, 256), (256,), (256, 256), (256,), (256, 10), (10,)]  # an mnist-sized network: parameters and moments


def best_of(repeats: int, *work: Callable[[], object]) -> list[float]:
    """Best wall time of each callable, run alternately `repeats` times."""
    best = [float("inf")] * len(work)
    for _ in range(repeats):
        for index, job in enumerate(work):
            started = time.perf_counter()
            job()
            best[index] = min(best[index], time.perf_counter() - started)
    return best


def plain_load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def bench_npz(folder: Path, repeats: int) -> None:
    rng = np.random.default_rng(0)
    arrays = {f"a{i}.{kind}": rng.standard_normal(shape) for i, shape in enumerate(SHAPES) for kind in "pmv"}
    path = folder / "checkpoint.npz"
    files.write_npz(path, arrays)
    numpy_s, checked_s = best_of(repeats, lambda: plain_load(path), lambda: files.load_npz(path))
    print(f"npz of {len(arrays)} arrays, {path.stat().st_size / 1e6:.1f} MB: numpy {numpy_s * 1e3:.2f} ms, "
          f"load_npz (headers checked) {checked_s * 1e3:.2f} ms, ratio {checked_s / numpy_s:.3f}", flush=True)


def bench_checkpoints(folder: Path, repeats: int) -> None:
    config = {
        "data": {"source": "spirals", "n_samples": 1000}, "model": {"hidden": [32, 32]}, "loss": "cross_entropy",
        "training": {"epochs": 40, "checkpoint_every": None}, "output": {"dir": str(folder / "runs")},
    }  # fmt: skip
    every = {**config, "training": {"epochs": 40, "checkpoint_every": 1}}
    never_s, every_s, unsynced_s = best_of(repeats, lambda: train(config), lambda: train(every),
                                           lambda: without_log_fsync(lambda: train(every)))  # fmt: skip
    print(f"40 epochs: no checkpoint {never_s:.3f} s, a checkpoint every epoch {every_s:.3f} s "
          f"(ratio {every_s / never_s:.3f}), the same without fsyncing the logs first {unsynced_s:.3f} s "
          f"(the fsync costs {every_s / unsynced_s - 1:+.1%})", flush=True)


def without_log_fsync(work: Callable[[], object]) -> None:
    """`work` with CsvLog.sync flushing only, as the logs were before a checkpoint counted on them reaching the disk."""
    sync = files.CsvLog.sync
    files.CsvLog.sync = files.CsvLog.flush
    try:
        work()
    finally:
        files.CsvLog.sync = sync


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        bench_npz(Path(folder), args.repeats)
        bench_checkpoints(Path(folder), max(3, args.repeats // 3))


if __name__ == "__main__":
    main()
