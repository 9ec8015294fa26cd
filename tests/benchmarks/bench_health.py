"""`early_terminate: health` against the same grid without it: the epochs it saves and the best value each reaches.

    python tests/benchmarks/bench_health.py [--epochs 27] [--jobs 1] [--repeats 2]

The grid is bench_search.py's task (noisy sine regression, Adam, ranked by final val_r2) over a space with sick
corners: learning rates 1e-3 to 10 (the top ones far too high), widths [16] and [32] and a stack of eight 16-unit
layers, tanh or sigmoid (eight sigmoid layers: vanishing gradients): 5 × 3 × 2 = 30 trials. Without pruning, every
trial trains --epochs epochs; with `{method: health, min_epochs: 3}` a trial whose own judgement names a fatal cause
at epoch 3, 6, 12 or 24 stops there. Also shown: the best value the trials health pruned reach when trained to the
end (in the full grid: what the pruning gave up), and `[health, asha]` against `asha` alone. Sides alternate --repeats times; the
epochs and values repeat exactly (--jobs 1), the seconds are the median.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from pathlib import Path

import yaml
from bench_search import MONITOR, base_config

from autobp.sweeps.executor import LocalExecutor
from autobp.sweeps.run import SweepResult, run_sweep

PARAMETERS = {
    "optimizer.lr": [0.001, 0.01, 0.1, 1.0, 10.0],
    "model.hidden": [[16], [32], [16] * 8],
    "model.activation": ["tanh", "sigmoid"],
}
SIDES = {
    "grid": None,
    "grid + health": {"method": "health", "min_epochs": 3},
    "grid + asha": {"method": "asha", "min_epochs": 3, "reduction_factor": 3},
    "grid + [health, asha]": {"method": ["health", "asha"], "min_epochs": 3, "reduction_factor": 3},
}


def write_sweep(folder: Path, name: str, early: dict | None) -> Path:
    path = folder / f"{name.replace(' ', '').replace('+', '-').replace(',', '-')}.yaml"
    spec = {"base": "base.yaml", "name": "bench", "parameters": PARAMETERS, "monitor": MONITOR}
    path.write_text(yaml.safe_dump({**spec, **({"early_terminate": early} if early else {})}))
    return path


def describe(name: str, result: SweepResult, grid: SweepResult, seconds: float) -> str:
    best = result.outcomes[result.ranking()[0]]
    epochs = sum(outcome.epochs or 0 for outcome in result.outcomes)
    full = sum(outcome.epochs or 0 for outcome in grid.outcomes)
    pruned = [i for i, outcome in enumerate(result.outcomes) if outcome.status == "pruned"]
    by_health = [i for i in pruned if (result.outcomes[i].reason or "").startswith("health")]
    missed = max((grid.outcomes[i].final(MONITOR) or -math.inf for i in by_health), default=None)
    lost = "" if missed is None else f", the best of them reached {missed:.4f} in the full grid"
    return (f"{name:22s} best {MONITOR} {best.final(MONITOR):.4f} ({best_label(result)}); {epochs:4d} epochs = "
            f"{epochs / full:4.0%} of the grid's ({1 - epochs / full:.0%} saved); {len(pruned):2d} pruned, "
            f"{len(by_health):2d} by health{lost}; {seconds:.1f} s")


def best_label(result: SweepResult) -> str:
    index = result.ranking()[0]
    return ", ".join(f"{key}={value}" for key, value in result.sweep.trials[index].values.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=27)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name, LocalExecutor(args.jobs) as pool:
        folder = Path(name)
        (folder / "base.yaml").write_text(yaml.safe_dump(base_config(args.epochs)))
        results: dict[str, SweepResult] = {}
        seconds: dict[str, list[float]] = {side: [] for side in SIDES}
        for _ in range(args.repeats):
            for side, early in SIDES.items():  # interleaved: each repeat runs every side once
                result = run_sweep([write_sweep(folder, side, early)], output=folder, jobs=args.jobs, executor=pool)
                results[side] = result
                seconds[side].append(result.seconds)
        for side in SIDES:
            print(describe(side, results[side], results["grid"], statistics.median(seconds[side])))


if __name__ == "__main__":
    main()
