"""Peak memory of `autobp train` on an in-memory npz, against the size of the data.

    python tests/benchmarks/bench_memory.py [--mb 154] [--epochs 1]

Writes a float64 npz of about `--mb` megabytes (96 features, one regression target), trains a 96-64-1 network on
it for `--epochs` epochs in a child process, compiled and interpreted, and reports each child's peak resident
set size (getrusage's ru_maxrss) next to the data's size and the issue's target, 1.5 × data + 150 MB.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

FEATURES = 96
MB = 1e6


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=154.0)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    assert resource.RUSAGE_CHILDREN  # Linux/macOS only
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
