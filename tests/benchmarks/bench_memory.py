"""Peak memory of `autobp train` on an in-memory npz and on a memory-mapped npy, against the size of the data.

    python tests/benchmarks/bench_memory.py [--mb 154] [--epochs 1] [--npy-gb 4] [--speed-mb 200 400] [--dir /work]

Writes a float64 npz of about `--mb` megabytes (96 features, one regression target), trains a 96-64-1 network on
it for `--epochs` epochs in a child process, compiled and interpreted, and reports each child's peak resident
set size (getrusage's ru_maxrss) next to the data's size and the issue's target, 1.5 × data + 150 MB.

Then `source: npy`: a float32 features file of `--npy-gb` gigabytes (256 features) written into a temporary folder
under `--dir` (skipped with a message when that disk has less than 10 GB free; deleted afterwards), one epoch of a
256-64-1 network on it, and the child's peak RSS against the target of 500 MB. Last, the speed of the mapped path
on data that fits the page cache: for each `--speed-mb` size, the same float32 data as npz and as npy, trained
alternately (best of 3 each), and the ratio of their steps/s (target ≥ 0.7). The default sizes lie on either
side of the mapped path's resident budget (256 MiB): below it the pages stay mapped, above it they are dropped.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

FEATURES = 96
MB = 1e6
MAPPED_FEATURES = 256
MIN_FREE_BYTES = 10 * 10**9
WRITE_ROWS = 2**16  # rows generated and written at a time: the benchmark itself never holds the file


def write_case(folder: Path, megabytes: float, epochs: int) -> tuple[Path, float]:
    rows = int(megabytes * MB / ((FEATURES + 1) * 8))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((rows, FEATURES))
    y = X[:, :1] * 0.5 + 0.1 * rng.standard_normal((rows, 1))
    np.savez(folder / "data.npz", X=X, y=y)
    config = {
        "name": "memory",
        "data": {"source": "npz", "path": "data.npz"},
        "model": {"hidden": [64], "activation": "tanh"},
        "loss": "mse",
        "optimizer": {"name": "sgd", "lr": 0.01},
        "training": {"epochs": epochs, "batch_size": 256},
        "output": {"dir": str(folder / "runs")},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder / "config.yaml", (X.nbytes + y.nbytes) / MB


def peak_rss_mb(command: list[str]) -> float:
    """Peak RSS of one child process: run it alone so RUSAGE_CHILDREN's maximum is its own."""
    script = (
        "import resource, subprocess, sys\n"
        f"subprocess.run({command!r}, check=True, capture_output=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return int(done.stdout.strip()) * 1024 / MB  # ru_maxrss is in KiB on Linux


def write_npy_case(folder: Path, megabytes: float, epochs: int, npz: bool = False) -> tuple[Path, Path | None]:
    """Float32 features.npy and targets.npy of about `megabytes`, written in blocks, with an npy config (and, with
    `npz`, the same data as data.npz and its config)."""
    rows = int(megabytes * MB / (MAPPED_FEATURES * 4))
    X = np.lib.format.open_memmap(folder / "features.npy", "w+", np.float32, (rows, MAPPED_FEATURES))
    y = np.lib.format.open_memmap(folder / "targets.npy", "w+", np.float32, (rows,))
    rng = np.random.default_rng(0)
    for start in range(0, rows, WRITE_ROWS):
        block = rng.standard_normal((min(WRITE_ROWS, rows - start), MAPPED_FEATURES), dtype=np.float32)
        X[start : start + len(block)] = block
        y[start : start + len(block)] = 0.5 * block[:, 0] + 0.1 * rng.standard_normal(len(block), dtype=np.float32)
    X.flush(), y.flush()
    config = {
        "name": "mapped",
        "data": {"source": "npy", "path": "features.npy", "target_path": "targets.npy"},
        "model": {"hidden": [64], "activation": "tanh"},
        "loss": "mse",
        "optimizer": {"name": "sgd", "lr": 0.01},
        "training": {"epochs": epochs, "batch_size": 256, "dtype": "float32", "checkpoint_every": None},
        "output": {"dir": str(folder / "runs")},
    }
    (folder / "npy.yaml").write_text(yaml.safe_dump(config))
    if not npz:
        return folder / "npy.yaml", None
    np.savez(folder / "data.npz", X=np.asarray(X), y=np.asarray(y))
    config["data"] = {"source": "npz", "path": "data.npz"}
    (folder / "npz.yaml").write_text(yaml.safe_dump(config))
    return folder / "npy.yaml", folder / "npz.yaml"


def mapped_memory(folder: Path, gigabytes: float) -> None:
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        print(f"npy {gigabytes:g} GB: skipped, {free / 1e9:.1f} GB free on {folder} (needs 10 GB)", flush=True)
        return
    with tempfile.TemporaryDirectory(dir=folder, prefix="bench-memory-") as tmp:
        config, _ = write_npy_case(Path(tmp), gigabytes * 1000, epochs=1)
        data_mb = (Path(tmp) / "features.npy").stat().st_size / MB
        peak = peak_rss_mb([sys.executable, "-m", "autobp", "train", str(config), "--quiet"])
        print(f"{'npy':<8} {data_mb:>8.1f} {peak:>12.1f} {peak / data_mb:>7.2f} {500:>10.1f}", flush=True)


def steps_per_second(config: Path) -> float:
    done = subprocess.run([sys.executable, "-m", "autobp", "train", str(config), "--quiet"], capture_output=True,
                          text=True, check=True)  # fmt: skip
    run_dir = done.stdout.strip().splitlines()[-1].removeprefix("run directory: ")
    return json.loads((Path(run_dir) / "summary.json").read_text())["steps_per_second"]


def mapped_speed(folder: Path, megabytes: float, repeats: int = 3) -> None:
    with tempfile.TemporaryDirectory(dir=folder, prefix="bench-speed-") as tmp:
        npy, npz = write_npy_case(Path(tmp), megabytes, epochs=2, npz=True)
        best = {"npz": 0.0, "npy": 0.0}
        for _ in range(repeats):
            for kind, config in (("npz", npz), ("npy", npy)):
                best[kind] = max(best[kind], steps_per_second(config))
        print(f"steps/s on {megabytes:g} MB in the page cache: npz {best['npz']:.0f}, npy {best['npy']:.0f}, "
              f"ratio {best['npy'] / best['npz']:.2f} (target ≥ 0.70)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=154.0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--npy-gb", type=float, default=4.0)
    parser.add_argument("--speed-mb", type=float, nargs="+", default=[200.0, 400.0])
    parser.add_argument("--dir", type=Path, default=Path("/work") if Path("/work").is_dir() else Path(tempfile.gettempdir()))
    parser.add_argument("--only", choices=("npz", "npy", "speed"), default=None)
    args = parser.parse_args()
    assert resource.RUSAGE_CHILDREN  # Linux/macOS only
    if args.only in (None, "speed"):
        for megabytes in args.speed_mb:
            mapped_speed(args.dir, megabytes)
    if args.only in (None, "npy"):
        print(f"{'source':<8} {'data MB':>8} {'peak RSS MB':>12} {'× data':>7} {'target MB':>10}", flush=True)
        mapped_memory(args.dir, args.npy_gb)
    if args.only not in (None, "npz"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        config, data_mb = write_case(Path(tmp), args.mb, args.epochs)
        target = 1.5 * data_mb + 150
        print(f"{'compile':<8} {'data MB':>8} {'peak RSS MB':>12} {'× data':>7} {'target MB':>10}", flush=True)
        for flag in ("true", "false"):
            peak = peak_rss_mb([sys.executable, "-m", "autobp", "train", str(config), "--quiet",
                                "--set", f"training.compile={flag}"])  # fmt: skip
            print(f"{flag:<8} {data_mb:>8.1f} {peak:>12.1f} {peak / data_mb:>7.2f} {target:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
