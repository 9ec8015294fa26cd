"""Training outputs byte for byte against another autobp source tree: every example, compiled and interpreted.

    python tests/benchmarks/same_bytes.py --against OTHER_TREE [--dtypes float64,float32]

Trains each example config (configs/*.yaml, not the sweeps) once with this tree's autobp and once with the other's
(separate processes, PYTHONPATH set to each tree), with `training.compile` true and false and in each dtype, and
compares model.npz, gradients.csv and metrics.csv less its `seconds` column, by SHA-256. Prints a line per run
and exits 1 if anything differs: the check for a change that must not move a bit (e.g. the engine's first order).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (HERE / "configs").glob("*.yaml") if not p.name.startswith("sweep"))


def digests(run: Path) -> dict[str, str]:
    rows = list(csv.reader(io.StringIO((run / "metrics.csv").read_text())))
    keep = [k for k, name in enumerate(rows[0]) if name != "seconds"]
    metrics = "\n".join(",".join(row[k] for k in keep) for row in rows).encode()
    return {
        "model.npz": hashlib.sha256((run / "model.npz").read_bytes()).hexdigest(),
        "gradients.csv": hashlib.sha256((run / "gradients.csv").read_bytes()).hexdigest(),
        "metrics.csv less seconds": hashlib.sha256(metrics).hexdigest(),
    }


def train(tree: Path, config: Path, overrides: list[str], output: Path) -> dict[str, str]:
    sets = [arg for o in overrides for arg in ("--set", o)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-m", "autobp", "train", str(config), "-q", "--set", f"output.dir={output}", *sets],
                   env=env, check=True, capture_output=True, cwd=tree)  # fmt: skip
    (run,) = [p for p in output.iterdir() if p.is_dir()]
    return digests(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="another autobp source tree")
    parser.add_argument("--dtypes", default="float64,float32")
    args = parser.parse_args()
    other = Path(args.against).resolve()
    differ = 0
    with tempfile.TemporaryDirectory() as tmp:
        for config in EXAMPLES:
            for dtype in args.dtypes.split(","):
                for compiled in ("true", "false"):
                    overrides = [f"training.dtype={dtype}", f"training.compile={compiled}"]
                    name = f"{config.stem}-{dtype}-{compiled}"
                    ours = train(HERE, config, overrides, Path(tmp) / f"{name}-this")
                    theirs = train(other, config, overrides, Path(tmp) / f"{name}-other")
                    same = [key for key in ours if ours[key] == theirs[key]]
                    differ += len(ours) - len(same)
                    verdict = "same bytes" if len(same) == len(ours) else f"DIFFER in {set(ours) - set(same)}"
                    print(f"{config.stem:<14}{dtype:<9}compile={compiled:<6}{verdict}  {ours['model.npz'][:12]}",
                          flush=True)  # fmt: skip
    print("every output the same, byte for byte" if not differ else f"{differ} outputs differ")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
