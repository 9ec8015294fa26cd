"""One MLP training step (forward, backward, SGD update) on the engine vs. the same math by hand in numpy.

    python tests/benchmarks/bench_engine.py [--repeats 7] [--only tiny,deep] [--against OTHER_TREE]

The engine runs twice: interpreted (recording a graph every step) and compiled (the recorded graph replayed by
autobp.engine.compile). All three run side by side in one process, interleaved, and each reports its best time
over the repeats, so the ratios are meaningful on a shared, noisy machine. Hidden layers use tanh, the loss is mean squared error. Like
`autobp train`, the process keeps freed memory for reuse (autobp.common.runtime); `--default-malloc` measures without.
`--against OTHER_TREE` (e.g. `git worktree add /tmp/before <commit>`) runs this script once per repeat on each tree
(autobp imported from that tree, this script's code on both), alternately, and prints this tree's times over the
other's: best over best (numpy's, the same code on both sides, measures the noise), and the median of each run's
time per numpy step timed beside it, which a machine whose load changes between runs disturbs less.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from dataclasses import dataclass

import numpy as np

from autobp.common.runtime import keep_freed_memory
from autobp.engine import Tensor, dense, mse, ops
from autobp.engine.compile import Program, compile_graph


@dataclass
class Shape:
    name: str
    sizes: list[int]
    batch: int


SHAPES = [
    Shape("tiny", [2, 16, 16, 1], 32),
    Shape("small", [64, 128, 128, 10], 64),
    Shape("mnist", [784, 256, 256, 10], 128),
    Shape("deep", [32] + [64] * 20 + [1], 64),
    Shape("large", [1024, 1024, 1024, 10], 256),
]
LR = 1e-3


def make_problem(shape: Shape, dtype: type) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    pairs = list(zip(shape.sizes[:-1], shape.sizes[1:]))
    weights = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype) for a, b in pairs]
    biases = [np.zeros(b, dtype) for _, b in pairs]
    x = rng.standard_normal((shape.batch, shape.sizes[0])).astype(dtype)
    y = rng.standard_normal((shape.batch, shape.sizes[-1])).astype(dtype)
    return weights, biases, x, y


def numpy_step(weights: list[np.ndarray], biases: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """The reference: forward, backward and update written out by hand."""
    last = len(weights) - 1
    outputs = [x]
    h = x
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = h @ w
        h += b
        if i < last:
            h = np.tanh(h)
        outputs.append(h)
    diff = h - y
    loss = float(np.mean(diff * diff))
    g = diff * (2.0 / diff.size)
    for i in range(last, -1, -1):
        if i < last:
            out = outputs[i + 1]
            g = g * (1.0 - out * out)
        grad_w = outputs[i].T @ g
        grad_b = g.sum(axis=0)
        if i > 0:
            g = g @ weights[i].T
        weights[i] -= LR * grad_w
        biases[i] -= LR * grad_b
    return loss


def engine_loss(weights: list[Tensor], biases: list[Tensor], x: np.ndarray, y: np.ndarray) -> Tensor:
    """The network's loss, recorded on the engine."""
    last = len(weights) - 1
    h = x
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = dense(h, w, b)
        if i < last:
            h = ops.tanh(h)
    return mse(h, y)


def engine_step(weights: list[Tensor], biases: list[Tensor], x: np.ndarray, y: np.ndarray) -> float:
    """The same step on the engine: build the graph, backward, update the raw arrays."""
    loss = engine_loss(weights, biases, x, y)
    loss.backward()
    for p in weights + biases:
        p.data -= LR * p.grad
        p.grad = None
    return float(loss.data)


def compiled_step(program: Program, params: list[Tensor], x: np.ndarray, y: np.ndarray) -> float:
    """The same step replayed from a compiled program of the recorded graph."""
    loss = program.run([x, y])
    for p, g in zip(params, program.grads):
        p.data -= LR * g
    return float(loss)


def best_time(step, args, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        step(*args)
    return (time.perf_counter() - start) / n


def measure(shape: Shape, dtype: type, repeats: int, sample: float = 0.05) -> tuple[float, float, float]:
    """Best seconds per step of numpy, the interpreter and the compiled step, over `repeats` interleaved samples of
    about `sample` seconds each."""
    weights, biases, x, y = make_problem(shape, dtype)
    ref_args = ([w.copy() for w in weights], [b.copy() for b in biases], x, y)
    eng_args = ([Tensor(w, requires_grad=True) for w in weights], [Tensor(b, requires_grad=True) for b in biases], x, y)
    cw = [Tensor(w.copy(), requires_grad=True) for w in weights]
    cb = [Tensor(b.copy(), requires_grad=True) for b in biases]
    params = cw + cb
    comp_args = (compile_graph(engine_loss(cw, cb, x, y), params, [x, y]), params, x, y)
    # Same math: the first steps must agree before any timing means anything; the compiled step to the bit.
    first = engine_step(*eng_args)
    assert np.isclose(numpy_step(*ref_args), first, rtol=1e-4)
    assert compiled_step(*comp_args) == first
    assert all(np.array_equal(a.data, b.data) for a, b in zip(eng_args[0] + eng_args[1], params))
    n = max(3, int(sample / max(best_time(numpy_step, ref_args, 3), 1e-6)))
    ref, eng, comp = [], [], []
    for _ in range(repeats):
        ref.append(best_time(numpy_step, ref_args, n))
        eng.append(best_time(engine_step, eng_args, n))
        comp.append(best_time(compiled_step, comp_args, n))
    return min(ref), min(eng), min(comp)


def tree_times(tree: str, only: str, default_malloc: bool) -> dict[str, list[float]]:
    """One repeat of every wanted shape with autobp imported from `tree`: {"shape dtype": [numpy, engine, compiled]}."""
    command = [sys.executable, __file__, "--repeats", "40", "--json"] + (["--only", only] if only else [])
    command += ["--default-malloc"] if default_malloc else []
    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
    return json.loads(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout)


def against(other: str, repeats: int, only: str, default_malloc: bool) -> None:
    here = str(Path(__file__).resolve().parents[2])
    samples: dict[str, dict[str, list[list[float]]]] = {here: {}, other: {}}
    for repeat in range(repeats):
        for tree in (here, other) if repeat % 2 == 0 else (other, here):
            for key, times in tree_times(tree, only, default_malloc).items():
                samples[tree].setdefault(key, []).append(times)
        print(f"  repeat {repeat + 1}/{repeats}", flush=True)
    print(f"this tree over {other}, {repeats} runs each (below 1: this tree is faster). best: best time over best "
          "time; per numpy: the median over runs of each side's time over the numpy step timed beside it in the "
          "same run, this tree's over the other's (steadier on a loaded machine)")
    print(f"{'shape':<8} {'dtype':<8} {'engine × best':>14} {'compiled × best':>16} {'numpy × best':>13} "
          f"{'engine × per numpy':>19} {'compiled × per numpy':>21}")
    for key, ours in samples[here].items():
        theirs = samples[other][key]
        best = [min(s[k] for s in ours) / min(s[k] for s in theirs) for k in range(3)]
        per_numpy = [float(np.median([s[k] / s[0] for s in ours]) / np.median([s[k] / s[0] for s in theirs]))
                     for k in (1, 2)]  # fmt: skip
        shape, dtype = key.split()
        print(f"{shape:<8} {dtype:<8} {best[1]:>14.3f} {best[2]:>16.3f} {best[0]:>13.3f} {per_numpy[0]:>19.3f} "
              f"{per_numpy[1]:>21.3f}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", default="", help="comma-separated shape names")
    parser.add_argument("--default-malloc", action="store_true", help="skip the allocator setting autobp train uses")
    parser.add_argument("--against", default=None, help="another autobp source tree to time side by side")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one side of --against
    args = parser.parse_args()
    if args.against:
        against(args.against, args.repeats, args.only, args.default_malloc)
        return
    if not args.default_malloc:
        keep_freed_memory()  # as `autobp train` does; applies to both sides alike
    wanted = set(filter(None, args.only.split(",")))
    if args.json:
        # Many short samples: on a loaded machine the best of them is more likely to have run undisturbed.
        times = {f"{shape.name} {np.dtype(dtype).name}": list(measure(shape, dtype, args.repeats, sample=0.005))
                 for shape in SHAPES if not wanted or shape.name in wanted for dtype in (np.float32, np.float64)}
        print(json.dumps(times))
        return
    print(f"{'shape':<8} {'dtype':<8} {'numpy µs':>10} {'engine µs':>10} {'ratio':>6} {'compiled µs':>12} "
          f"{'ratio':>6} {'compiled/engine':>16}", flush=True)  # fmt: skip
    for shape in SHAPES:
        if wanted and shape.name not in wanted:
            continue
        for dtype in (np.float32, np.float64):
            ref, eng, comp = measure(shape, dtype, args.repeats)
            print(f"{shape.name:<8} {np.dtype(dtype).name:<8} {ref * 1e6:>10.1f} {eng * 1e6:>10.1f} {eng / ref:>6.2f} "
                  f"{comp * 1e6:>12.1f} {comp / ref:>6.2f} {comp / eng:>16.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
