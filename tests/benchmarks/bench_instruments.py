"""What the training instruments cost: the training loop with instruments off against on, side by side.

    python tests/benchmarks/bench_instruments.py [--repeats 5] [--only tiny]

The shapes are bench_train's (tiny: 2-16-16-2, batch 32; mnist: 784-256-256-10, batch 128). Per shape, in one
process and alternating, the CPU seconds of a whole `train` call (this process's user + system time, which other
jobs on a loaded machine disturb far less than wall time; loading and writing are the same on every side) of
autobp as configured there, with
`training.instruments` off, at `{every: auto}` (the gradient log's steps) and at `{every: 20}`;
the best of the repeats is kept, and each side's overhead is printed as a share of the loop without instruments.
Curvature: `{every: auto, curvature_every: C, power_iterations: 20}` against `{every: auto}`, with the extra time
per curvature step expressed in training steps of that shape.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import CASES, write_case  # noqa: E402

from autobp.training.entry import train  # noqa: E402

SIDES = {
    "off": None,
    "auto": {"every": "auto"},  # tiny: every 9th step; mnist (300 steps): every step
    "every 20": {"every": 20},
}
CURVATURE_EVERY = 25
POWER_ITERATIONS = 20


def loop_seconds(config: Path, instruments: dict | None) -> float:
    start = time.process_time()
    train(config, [f"training.instruments={instruments}" if instruments else "training.instruments=null"])
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    wanted = set(filter(None, args.only.split(",")))
    curvature = {"every": "auto", "curvature_every": CURVATURE_EVERY, "power_iterations": POWER_ITERATIONS}
    for case in CASES:
        if wanted and case.name not in wanted:
            continue
        steps = case.epochs * -(-case.samples // case.batch)
        with tempfile.TemporaryDirectory() as tmp:
            config, _ = write_case(case, Path(tmp))
            best: dict[str, float] = {}
            for _ in range(args.repeats):
                for name, instruments in [*SIDES.items(), ("curvature", curvature)]:
                    seconds = loop_seconds(config, instruments)
                    best[name] = min(best.get(name, seconds), seconds)
        off = best["off"]
        shares = ", ".join(f"{name} {100 * (best[name] - off) / off:+.1f}%" for name in SIDES if name != "off")
        print(f"{case.name:<6} {steps} steps, {off:.3f} CPU s without instruments; with them: {shares}", flush=True)
        per_step = off / steps
        curvature_steps = steps // CURVATURE_EVERY
        extra = (best["curvature"] - best["auto"]) / max(curvature_steps, 1)
        print(f"{case.name:<6} curvature ({POWER_ITERATIONS} power iterations every {CURVATURE_EVERY} steps): "
              f"{extra * 1e3:.1f} ms per curvature step = {extra / per_step:.0f} training steps; "
              f"{100 * (best['curvature'] - best['auto']) / off:+.1f}% of the loop at this schedule", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
