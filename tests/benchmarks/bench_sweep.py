"""Sweep speed-up: 8 equal trials with --jobs 1 and with --jobs 2; wall times and their ratio (target ≤ 0.6).

    python tests/benchmarks/bench_sweep.py [--trials 8] [--epochs 60] [--repeats 2] [--cores 2]

Each trial trains configs/quickstart.yaml (two spirals, two tanh layers of 32) with its own seed, so every trial
does the same work. Wall time counts everything a user waits for: validating the trials, starting the worker
processes, training and writing the sweep directory. The two settings alternate, so that a shared, noisy machine
slows both alike, and each reports its best time. `--cores` is the core count the workers share out as BLAS threads
(jobs × threads = cores), as on a machine with that many cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from autobp.sweeps.executor import LocalExecutor, available_cores
from autobp.sweeps.run import run_sweep

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


def write_sweep(folder: Path, trials: int) -> Path:
    (folder / "base.yaml").write_text(QUICKSTART.read_text())
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", "name": "bench", "parameters": {"seed": list(range(trials))}}))
    return path


def timed_sweep(path: Path, overrides: list[str], jobs: int, cores: int) -> float:
    started = time.perf_counter()
    with LocalExecutor(jobs, cores) as executor:
        result = run_sweep([path], overrides, output=path.parent / "out", jobs=jobs, executor=executor)
    seconds = time.perf_counter() - started
    assert result.exit_code == 0, [outcome.status for outcome in result.outcomes]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=60, help="epochs per trial (60: about 1 s of training)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cores", type=int, default=available_cores())
    args = parser.parse_args()
    best = {1: float("inf"), 2: float("inf")}
    with tempfile.TemporaryDirectory() as folder:
        path = write_sweep(Path(folder), args.trials)
        overrides = [f"training.epochs={args.epochs}", "training.checkpoint_every=null"]
        for repeat in range(args.repeats):
            for jobs in (1, 2):
                seconds = timed_sweep(path, overrides, jobs, args.cores)
                best[jobs] = min(best[jobs], seconds)
                print(f"repeat {repeat + 1}: --jobs {jobs}: {seconds:.2f} s", flush=True)
    print(f"{args.trials} trials of {args.epochs} epochs on {args.cores} cores: --jobs 1 {best[1]:.2f} s, "
          f"--jobs 2 {best[2]:.2f} s, ratio {best[2] / best[1]:.2f} (target <= 0.6)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
