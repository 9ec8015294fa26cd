"""TPE + ASHA against the full grid over the same space: the best validation metric each reaches and the epochs
each trains (target: within 1 % of the grid's best with at most 40 % of its epochs, for each of 5 seeds).

    python tests/benchmarks/bench_search.py [--seeds 5] [--trials 24] [--epochs 27] [--jobs 1]

The task is learning rate × width: noisy sine regression (configs/sine.yaml's data, one tanh layer), Adam with
8 learning rates from 1e-3 to 0.3 and 5 widths from 4 to 64 units: 40 grid points, whose best is the known best of
the space. The grid trains every point for --epochs epochs. `method: tpe` draws from the same 40 points (both keys
as lists) for --trials trials per seed, with `early_terminate: asha` from epoch 3, reduction factor 3. Sweeps are
ranked by their final val_r2; val_loss is shown beside it. Every sweep runs with --jobs 1 unless told otherwise, so
the numbers repeat exactly.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml

from autobp.sweeps.executor import LocalExecutor
from autobp.sweeps.run import SweepResult, run_sweep

LRS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3]
WIDTHS = [[4], [8], [16], [32], [64]]
MONITOR = "val_r2"


def base_config(epochs: int) -> dict:
    return {
        "name": "bench", "seed": 0, "data": {"source": "sine", "n_samples": 400, "noise": 0.1},
        "model": {"hidden": [16], "activation": "tanh"}, "loss": "mse", "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": epochs, "batch_size": 32, "checkpoint_every": None, "log_every": 50},
    }  # fmt: skip


def write_sweep(folder: Path, name: str, **keys) -> Path:
    path = folder / f"{name}.yaml"
    parameters = {"optimizer.lr": LRS, "model.hidden": WIDTHS}
    path.write_text(yaml.safe_dump({"base": "base.yaml", "name": name, **keys, "parameters": parameters,
                                    "monitor": MONITOR}))  # fmt: skip
    return path


def best_and_epochs(result: SweepResult) -> tuple[float, float, int]:
    """The best trial's final val_r2 and val_loss, and the epochs every trial trained."""
    best = result.outcomes[result.ranking()[0]]
    return best.final(MONITOR), best.final("val_loss"), sum(outcome.epochs or 0 for outcome in result.outcomes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=27)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name, LocalExecutor(args.jobs) as pool:
        folder = Path(name)
        (folder / "base.yaml").write_text(yaml.safe_dump(base_config(args.epochs)))
        grid = run_sweep([write_sweep(folder, "grid")], output=folder, jobs=args.jobs, executor=pool)
        grid_r2, grid_loss, grid_epochs = best_and_epochs(grid)
        print(f"grid: {len(grid.outcomes)} trials, best {MONITOR} {grid_r2:.4f} (val_loss {grid_loss:.5f}), "
              f"{grid_epochs} epochs, {grid.seconds:.1f} s", flush=True)  # fmt: skip
        passed = 0
        for seed in range(args.seeds):
            path = write_sweep(folder, f"tpe{seed}", method="tpe", n_trials=args.trials, seed=seed,
                               early_terminate={"method": "asha", "min_epochs": 3, "reduction_factor": 3})
            result = run_sweep([path], output=folder, jobs=args.jobs, executor=pool)
            r2, loss, epochs = best_and_epochs(result)
            gap, share = (grid_r2 - r2) / abs(grid_r2), epochs / grid_epochs
            pruned = sum(outcome.status == "pruned" for outcome in result.outcomes)
            ok = gap <= 0.01 and share <= 0.40
            passed += ok
            print(f"tpe+asha seed {seed}: best {MONITOR} {r2:.4f} (val_loss {loss:.5f}), {gap:+.2%} below the grid; "
                  f"{epochs} epochs = {share:.0%} of the grid's; {pruned} of {len(result.outcomes)} trials pruned; "
                  f"{result.seconds:.1f} s; {'ok' if ok else 'MISSED'}", flush=True)  # fmt: skip
    print(f"{passed} of {args.seeds} seeds within 1 % of the grid's best with at most 40 % of its epochs")


if __name__ == "__main__":
    main()
