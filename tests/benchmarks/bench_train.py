"""`autobp train` vs. a hand-written numpy training script: the same MLP on the same data (an npz file).

    python tests/benchmarks/bench_train.py [--repeats 3] [--only tiny] [--against OTHER_TREE]

Both sides run as separate processes, alternately (the order reversed every other repeat), and the best of the
repeats is kept; the main ratios are also given as the median and range of each repeat's pair. Two ratios per shape:
the training loop (autobp's `seconds` in summary.json — logging, metrics and validation included — against the
reference's own loop timer), and the whole process as the user waits for it (start-up, loading, logging, files).
autobp runs with its defaults (log_every: auto, compile: true); the reference trains with bench_engine's
`numpy_step` and computes nothing else. Gradient logging is isolated by autobp's loop with the default log_every,
and with log_every 1, vs. log_every 10**9. A further ratio isolates histograms.npz: autobp as it is vs. the same run
with its histogram snapshots switched off; on a busy machine that difference drowns in noise, so the time spent
counting and writing the snapshots is also timed from inside one training process ("histograms, timed inside").
autobp keeps freed memory for reuse (autobp.common.runtime); the reference runs twice, with the default allocator
("loop ×") and with the same setting through glibc's environment variables ("loop × kept").
"interpreted" is the whole process with training.compile false; "start-up" is autobp's wall time outside its
training loop (start-up, loading, the final files) less the wall time of `python -c "import numpy"`.
`--against OTHER_TREE` (e.g. `git archive <commit> | tar -x -C /tmp/before`) also runs that tree's autobp
alternately with this one and prints this tree's loop time over the other's: a change's cost, side by side.
Every process runs with Python's bytecode cache (in a scratch folder, filled by one untimed run of each side first),
as an installed package has its .pyc files: an environment with PYTHONDONTWRITEBYTECODE would otherwise compile
autobp's modules from source at every start, a cost no user pays more than once. The whole process is also
compared in CPU time (user + system, from the kernel's accounting of each child): on a machine other jobs load,
wall time measures the queue as much as the work, CPU time much less so.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent


@dataclass
class Case:
    name: str
    sizes: list[int]
    batch: int
    samples: int
    epochs: int


CASES = [
    Case("tiny", [2, 16, 16, 2], 32, 65536, 8),
    Case("mnist", [784, 256, 256, 10], 128, 12800, 3),
]

REFERENCE = '''
import sys, time
import numpy as np
sys.path.insert(0, {here!r})
from bench_engine import numpy_step

data = np.load({data!r})
X, y = data["X"], data["y"]
rng = np.random.default_rng(0)
sizes = {sizes!r}
weights = [rng.uniform(-np.sqrt(6 / (a + b)), np.sqrt(6 / (a + b)), (a, b)) for a, b in zip(sizes[:-1], sizes[1:])]
biases = [np.zeros(b) for b in sizes[1:]]
start = time.perf_counter()
for epoch in range({epochs}):
    order = rng.permutation(len(X))
    losses = []
    for i in range(0, len(X), {batch}):
        batch = order[i:i + {batch}]
        losses.append(numpy_step(weights, biases, X[batch], y[batch]))
loop = time.perf_counter() - start
np.savez({out!r}, **{{f"w{{i}}": w for i, w in enumerate(weights)}})
print(loop)
'''


def write_case(case: Case, folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((case.samples, case.sizes[0]))
    y = np.tanh(X[:, : case.sizes[-1]] + 0.1 * rng.standard_normal((case.samples, case.sizes[-1])))
    np.savez(folder / "data.npz", X=X, y=y)
    config = {
        "name": case.name,
        "data": {"source": "npz", "path": "data.npz", "val_fraction": 0.0, "standardize": False},
        "model": {"hidden": case.sizes[1:-1], "activation": "tanh"},
        "loss": "mse",
        "optimizer": {"name": "sgd", "lr": 0.001},
        "training": {"epochs": case.epochs, "batch_size": case.batch},
        "output": {"dir": str(folder / "runs")},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    script = REFERENCE.format(
        here=str(HERE), data=str(folder / "data.npz"), sizes=case.sizes, epochs=case.epochs, batch=case.batch,
        out=str(folder / "reference.npz"),
    )  # fmt: skip
    (folder / "reference.py").write_text(script)
    return folder / "config.yaml", folder / "reference.py"


KEPT_MEMORY = {"MALLOC_TRIM_THRESHOLD_": "268435456", "MALLOC_MMAP_THRESHOLD_": "268435456"}


BYTECODE = {"PYTHONPYCACHEPREFIX": tempfile.mkdtemp(prefix="bench-train-pycache-")}


CPU: dict[str, float] = {}  # the CPU seconds (user + system) of the last process run by `timed`


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # Run from the /tmp folder: with `-m`, the current folder comes first on sys.path and would shadow PYTHONPATH.
    done = subprocess.run(command, capture_output=True, text=True, check=True, env={**environment, **BYTECODE, **(env or {})},
                          cwd=tempfile.gettempdir())  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU["last"] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, done.stdout


# `autobp` with histogram snapshots switched off, for the side-by-side cost of histograms.npz.
WITHOUT_HISTOGRAMS = ("import sys; from autobp.rundir.histograms import HistogramLog; HistogramLog.wants = lambda self, step: "
                      "False; from autobp.cli import main; sys.argv[0] = 'autobp'; main()")  # fmt: skip


def autobp_run(config: Path, *extra: str, histograms: bool = True, tree: str | None = None) -> tuple[float, float]:
    env = {"PYTHONPATH": tree} if tree else None
    entry = ["-m", "autobp"] if histograms else ["-c", WITHOUT_HISTOGRAMS]
    wall, _ = timed([sys.executable, *entry, "train", str(config), "--quiet", *extra], env)
    newest = max((config.parent / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return wall, json.loads((newest / "summary.json").read_text())["seconds"]


def measure(case: Case, repeats: int, against: str | None) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The best of each time over the repeats, and each repeat's ratios (this run over its partner in that repeat)."""
    with tempfile.TemporaryDirectory() as tmp:
        config, reference = write_case(case, Path(tmp))
        for warm_up in ([sys.executable, "-c", "import numpy"], [sys.executable, str(reference)]):
            timed(warm_up)  # fills the bytecode cache
        for tree in (None, *([against] if against else [])):
            autobp_run(config, tree=tree)
        best: dict[str, float] = {}
        ratios: dict[str, list[float]] = {"wall": [], "loop": [], "cpu": [], "other_wall": [], "other_loop": [],
                                          "other_cpu": []}  # fmt: skip
        for repeat in range(repeats):
            jobs = {
                "numpy": lambda: timed([sys.executable, "-c", "import numpy"]),
                "ref": lambda: (*timed([sys.executable, str(reference)]), CPU["last"]),
                "kept": lambda: timed([sys.executable, str(reference)], KEPT_MEMORY),
                "autobp": lambda: (*autobp_run(config), CPU["last"]),
                "interpreted": lambda: autobp_run(config, "--set", "training.compile=false"),
                "log_all": lambda: autobp_run(config, "--set", "training.log_every=1"),
                "log_none": lambda: autobp_run(config, "--set", "training.log_every=1000000000"),
                "no_histograms": lambda: autobp_run(config, histograms=False),
                **({"other": lambda: (*autobp_run(config, tree=against), CPU["last"])} if against else {}),
            }
            order = list(jobs) if repeat % 2 == 0 else list(reversed(jobs))  # alternate which side runs first
            got = {name: jobs[name]() for name in order}
            (numpy_wall, _), (ref_wall, out, ref_cpu), (_, kept) = got["numpy"], got["ref"], got["kept"]
            wall, loop, cpu = got["autobp"]
            sample = {"ref_wall": ref_wall, "ref_loop": float(out.strip()), "ref_kept": float(kept.strip()), "wall": wall,
                      "loop": loop, "interpreted": got["interpreted"][0], "log_all": got["log_all"][1],
                      "log_none": got["log_none"][1], "no_histograms": got["no_histograms"][1],
                      "startup": wall - loop - numpy_wall}  # fmt: skip
            ratios["wall"].append(wall / ref_wall)
            ratios["loop"].append(loop / sample["ref_loop"])
            ratios["cpu"].append(cpu / ref_cpu)
            if against:
                sample["other_wall"], sample["other_loop"], other_cpu = got["other"]
                ratios["other_wall"].append(wall / sample["other_wall"])
                ratios["other_loop"].append(loop / sample["other_loop"])
                ratios["other_cpu"].append(cpu / other_cpu)
            best = {k: min(best.get(k, v), v) for k, v in sample.items()}
            print(f"  {case.name} repeat {repeat + 1}/{repeats}: loop {loop:.3f} s, wall × {ratios['wall'][-1]:.2f}"
                  + (f", {against}: {sample['other_loop']:.3f} s" if against else ""), flush=True)  # fmt: skip
        return best, ratios


def spread(values: list[float]) -> str:
    """`1.42 (1.38–1.51)`: the median of paired ratios and their range."""
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def tick_seconds(with_bar: bool, ticks: int = 200_000) -> float:
    """What the progress report costs a training step: one `tick`, with a bar drawn on a terminal or without one."""
    from autobp.training.progress import Progress

    progress = Progress(stream=_Terminal() if with_bar else io.StringIO())
    progress.start(ticks, "bench")
    tick = progress.tick
    start = time.perf_counter()
    for step in range(1, ticks + 1):
        tick(step)
    seconds = (time.perf_counter() - start) / ticks
    progress.close()
    return seconds


def histogram_share(case: Case, repeats: int) -> tuple[float, float]:
    """(seconds spent in histogram snapshots and writes, training-loop seconds) of the fastest in-process run."""
    import autobp.rundir.histograms as histograms
    from autobp.training.entry import train

    spent = [0.0]

    def timed_method(method):
        def wrapper(*args):
            start = time.perf_counter()
            method(*args)
            spent[0] += time.perf_counter() - start
        return wrapper

    record, save = histograms.HistogramLog.record, histograms.HistogramLog.save
    histograms.HistogramLog.record, histograms.HistogramLog.save = timed_method(record), timed_method(save)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config, _ = write_case(case, Path(tmp))
            runs = []
            for _ in range(repeats):
                spent[0] = 0.0
                runs.append((train(config).summary.seconds, spent[0]))
    finally:
        histograms.HistogramLog.record, histograms.HistogramLog.save = record, save
    loop, inside = min(runs)
    return inside, loop



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="")
    parser.add_argument("--against", default=None, help="another autobp source tree to time side by side")
    args = parser.parse_args()
    wanted = set(filter(None, args.only.split(",")))
    print(f"{'shape':<6} {'steps':>6} {'ref loop s':>10} {'loop s':>8} {'loop ×':>7} {'loop × kept':>12} "
          f"{'ref wall s':>10} {'wall s':>7} {'wall ×':>7} {'interpreted ×':>14} {'start-up s':>11} "
          f"{'logging %':>10} {'log_every 1 %':>14} {'histograms %':>13}", flush=True)  # fmt: skip
    for case in CASES:
        if wanted and case.name not in wanted:
            continue
        r, ratios = measure(case, args.repeats, args.against)
        steps = case.epochs * -(-case.samples // case.batch)
        logging = (r["loop"] - r["log_none"]) / r["log_none"] * 100
        every_step = (r["log_all"] - r["log_none"]) / r["log_none"] * 100
        histograms = (r["loop"] - r["no_histograms"]) / r["no_histograms"] * 100
        print(f"{case.name:<6} {steps:>6} {r['ref_loop']:>10.3f} {r['loop']:>8.3f} {r['loop'] / r['ref_loop']:>7.2f} "
              f"{r['loop'] / r['ref_kept']:>12.2f} {r['ref_wall']:>10.3f} {r['wall']:>7.3f} {r['wall'] / r['ref_wall']:>7.2f} "
              f"{r['interpreted'] / r['ref_wall']:>14.2f} {r['startup']:>11.3f} {logging:>9.1f}% {every_step:>13.1f}% "
              f"{histograms:>12.1f}%", flush=True)  # fmt: skip
        inside, loop = histogram_share(case, args.repeats)
        print(f"{'':<6} histograms, timed inside: {inside * 1e3:.1f} ms of a {loop * 1e3:.0f} ms loop "
              f"({inside / loop * 100:.1f}%)", flush=True)  # fmt: skip
        step = r["loop"] / steps
        print(f"{case.name:<6} progress per step: {tick_seconds(True) * 1e6:.2f} µs with a bar on a terminal, "
              f"{tick_seconds(False) * 1e6:.2f} µs without, against a {step * 1e6:.0f} µs step", flush=True)  # fmt: skip
        print(f"{case.name:<6} against the reference, median (range) of {args.repeats} paired repeats: whole process "
              f"{spread(ratios['wall'])}×, loop {spread(ratios['loop'])}×, whole process in CPU time "
              f"{spread(ratios['cpu'])}×", flush=True)  # fmt: skip
        if args.against:
            print(f"{case.name:<6} this tree against {args.against}: loop {r['loop'] / r['other_loop']:.3f}×, "
                  f"whole process {r['wall'] / r['other_wall']:.3f}× (best of each); paired median (range): loop "
                  f"{spread(ratios['other_loop'])}×, whole process {spread(ratios['other_wall'])}×, in CPU time "
                  f"{spread(ratios['other_cpu'])}×", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
