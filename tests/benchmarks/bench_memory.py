"""Peak memory of `autobp train` on an in-memory npz and on a memory-mapped npy, against the size of the data.

    python tests/benchmarks/bench_memory.py [--only npz|speed|limit|window] [--sizes-mb 200 600 2000 4000]
        [--repeats 3] [--steps 2000] [--limit-mb 1024] [--dir /work]

npz: a float64 npz of about `--mb` megabytes (96 features, one regression target), a 96-64-1 network trained for
`--epochs` epochs in a child process, compiled and interpreted, and each child's peak RSS (getrusage's ru_maxrss)
against the target 1.5 × data + 150 MB.

`source: npy` (float32 features, 256 per row, one regression target, a 256-64-1 tanh network, batch 256, at most
`--steps` steps): for each `--sizes-mb` size, the file is written under `--dir` (deleted afterwards) and trained
(speed) warm — file in the page cache — as npy and as the same data in an npz (sizes up to `--npz-max-mb`),
alternately, `--repeats` times each; then cold, the file's pages dropped from the page cache
(posix_fadvise DONTNEED) before each run. Each child's /proc/PID/status is sampled every 20 ms: the peak of its
own memory, RssAnon + RssShmem (what it cannot give back), and of RssFile (mapped page-cache pages, which the
kernel reclaims). Ranges are min–max over the repeats. The children run with OPENBLAS_NUM_THREADS=1 (unless
set): on a loaded 2-core machine OpenBLAS's threads made the step's small matrix products ten times slower. (limit) The largest size again in a memory cgroup of
`--limit-mb` (cgroup v1 or v2, needs root; page cache included in the limit), exact and `data.shuffle: window`:
a file several times the memory the process may use. (window) Accuracy of the exact permutation and of windows on
a classification file stored sorted by class, the worst case for windows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


def write_npy_case(folder: Path, megabytes: float, steps: int, npz: bool = False) -> tuple[Path, Path | None]:
    """Float32 features.npy and targets.npy of about `megabytes`, written in blocks and flushed to disk, with an npy
    config (and, with `npz`, the same data as data.npz and its config)."""
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
        # A small validation split: the steps, not the evaluation, are what is compared.
        "data": {"source": "npy", "path": "features.npy", "target_path": "targets.npy", "val_fraction": 0.01},
        "model": {"hidden": [64], "activation": "tanh"},
        "loss": "mse",
        "optimizer": {"name": "sgd", "lr": 0.01},
        "training": {"epochs": 1, "max_steps": steps, "batch_size": 256, "dtype": "float32",
                     "checkpoint_every": None},
        "output": {"dir": str(folder / "runs")},
    }
    (folder / "npy.yaml").write_text(yaml.safe_dump(config))
    npz_config = None
    if npz:
        np.savez(folder / "data.npz", X=np.asarray(X), y=np.asarray(y))
        config["data"] = {"source": "npz", "path": "data.npz", "val_fraction": 0.01}
        npz_config = folder / "npz.yaml"
        npz_config.write_text(yaml.safe_dump(config))
    del X, y
    os.sync()  # dirty pages cannot be dropped from the page cache: the cold runs need them written
    return folder / "npy.yaml", npz_config


@dataclass
class Run:
    steps_per_second: float
    own_mb: float  # peak RssAnon + RssShmem: the process's own memory
    file_mb: float  # peak RssFile: page-cache pages mapped
    seconds: float  # the whole process, wall clock
    final: dict


def status_mb(text: str) -> dict[str, float]:
    fields = (line.split() for line in text.splitlines() if line.startswith("Rss"))
    return {parts[0].rstrip(":"): int(parts[1]) * 1024 / MB for parts in fields}


def train_child(config: Path, overrides: tuple[str, ...] = (), cgroup: Path | None = None) -> Run:
    """One `autobp train` in a child process (in `cgroup` when given), its /proc status sampled as it runs."""
    sets = [item for override in overrides for item in ("--set", override)]
    join = (lambda: (cgroup / "cgroup.procs").write_text(str(os.getpid()))) if cgroup else None
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "autobp", "train", str(config), "--quiet", *sets],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=join,
                             env={"OPENBLAS_NUM_THREADS": "1", **os.environ})  # fmt: skip
    own = file = 0.0
    status = Path(f"/proc/{child.pid}/status")
    while child.poll() is None:
        try:
            rss = status_mb(status.read_text())
        except OSError:
            break
        own = max(own, rss.get("RssAnon", 0.0) + rss.get("RssShmem", 0.0))
        file = max(file, rss.get("RssFile", 0.0))
        time.sleep(0.02)
    out, err = child.communicate()
    seconds = time.perf_counter() - started
    if child.returncode:
        raise SystemExit(f"autobp train {config} exited {child.returncode}:\n{err[-2000:]}")
    run_dir = Path(out.strip().splitlines()[-1].removeprefix("run directory: "))
    summary = json.loads((run_dir / "summary.json").read_text())
    shutil.rmtree(run_dir)
    return Run(summary["steps_per_second"], own, file, seconds, summary["final"])


def drop_from_page_cache(folder: Path) -> None:
    for name in ("features.npy", "targets.npy"):
        fd = os.open(folder / name, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def span(values: list[float], digits: int = 0) -> str:
    low, high = min(values), max(values)
    return f"{low:,.{digits}f}" if round(low, digits) == round(high, digits) else f"{low:,.{digits}f}–{high:,.{digits}f}"


def mapped_speed(folder: Path, megabytes: float, args: argparse.Namespace) -> None:
    """Warm npz and npy runs alternately, then cold npy runs; one row of the table."""
    with tempfile.TemporaryDirectory(dir=folder, prefix="bench-speed-") as tmp:
        npy, npz = write_npy_case(Path(tmp), megabytes, args.steps, npz=megabytes <= args.npz_max_mb)
        runs: dict[str, list[Run]] = {"npz": [], "npy": [], "cold": []}
        train_child(npy)  # the file into the page cache
        for _ in range(args.repeats):
            for kind, config in (("npz", npz), ("npy", npy)):
                if config is not None:
                    runs[kind].append(train_child(config))
        for _ in range(args.repeats):
            drop_from_page_cache(Path(tmp))
            runs["cold"].append(train_child(npy))
        speed = {kind: [run.steps_per_second for run in done] for kind, done in runs.items()}
        ratio = "—"
        if speed["npz"]:
            ratios = [a / b for a, b in zip(speed["npy"], speed["npz"])]
            ratio = f"{span(ratios, 2)} (best {max(speed['npy']) / max(speed['npz']):.2f})"
        print(f"{megabytes:>7,.0f} | npz {span(speed['npz']) if speed['npz'] else '—':>13} | "
              f"npy warm {span(speed['npy']):>13} | ratio {ratio:>20} | cold {span(speed['cold']):>13} "
              f"(process {span([r.seconds for r in runs['cold']], 1)} s vs warm {span([r.seconds for r in runs['npy']], 1)} s) | "
              f"own MB npy {span([r.own_mb for r in runs['npy'] + runs['cold']])}, "
              f"npz {span([r.own_mb for r in runs['npz']]) if runs['npz'] else '—'} | "
              f"mapped MB {span([r.file_mb for r in runs['npy']])}", flush=True)  # fmt: skip


@contextmanager
def memory_cgroup(limit_mb: float) -> Iterator[Path | None]:
    """A new memory cgroup under this process's own, limited to `limit_mb` (cgroup v1 or v2); None if the machine
    does not let this process create one."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    v1 = [line.split(":", 2)[2] for line in lines if line.split(":")[1] == "memory"]
    limit = str(int(limit_mb * 2**20))
    if v1:  # memory, then memory + swap (no swapping past the limit either)
        base, settings = Path("/sys/fs/cgroup/memory") / v1[0].lstrip("/"), {"memory.limit_in_bytes": limit,
                                                                             "memory.memsw.limit_in_bytes": limit}
    else:
        own = next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
        base, settings = Path("/sys/fs/cgroup") / own.lstrip("/"), {"memory.max": limit, "memory.swap.max": "0"}
    group = base / f"autobp-bench-{os.getpid()}"
    try:
        group.mkdir()
    except OSError as exc:
        print(f"no memory cgroup: cannot create {group} ({exc.strerror})", flush=True)
        yield None
        return
    try:
        for name, value in settings.items():
            if (group / name).exists():
                (group / name).write_text(value)
        yield group
    finally:
        group.rmdir()


def larger_than_memory(folder: Path, megabytes: float, args: argparse.Namespace) -> None:
    """The file several times the memory the process may use: exact and windowed, alternately."""
    with memory_cgroup(args.limit_mb) as group:
        if group is None:
            return
        with tempfile.TemporaryDirectory(dir=folder, prefix="bench-limit-") as tmp:
            npy, _ = write_npy_case(Path(tmp), megabytes, args.steps)
            runs: dict[str, list[Run]] = {"exact": [], "window": []}
            for _ in range(args.repeats):
                for kind, overrides in (("exact", ()), ("window", ("data.shuffle=window",))):
                    drop_from_page_cache(Path(tmp))
                    runs[kind].append(train_child(npy, overrides, group))
            size = (Path(tmp) / "features.npy").stat().st_size / MB
            for kind, done in runs.items():
                print(f"{size:,.0f} MB file, memory cgroup limit {args.limit_mb:,.0f} MiB, shuffle {kind}: "
                      f"{span([r.steps_per_second for r in done])} steps/s, process {span([r.seconds for r in done], 1)} s, "
                      f"own MB {span([r.own_mb for r in done])}, mapped MB {span([r.file_mb for r in done])}", flush=True)  # fmt: skip


def window_accuracy(folder: Path, args: argparse.Namespace) -> None:
    """Validation accuracy with the exact permutation and with windows, on a 10-class file stored in random order
    and sorted by class (each class's rows together: the worst case for windows)."""
    rng = np.random.default_rng(1)
    rows, classes = 60_000, 10
    labels = rng.integers(0, classes, rows)
    X = (rng.standard_normal((classes, 32)) * 1.2)[labels] + rng.standard_normal((rows, 32))
    with tempfile.TemporaryDirectory(dir=folder, prefix="bench-window-") as tmp:
        for stored in ("random order", "sorted by class"):
            keep = np.argsort(labels, kind="stable") if stored == "sorted by class" else np.arange(rows)
            np.save(Path(tmp) / "features.npy", X[keep].astype(np.float32))
            np.save(Path(tmp) / "targets.npy", labels[keep])
            config = {
                "name": "window", "loss": "cross_entropy", "model": {"hidden": [64], "activation": "relu"},
                "data": {"source": "npy", "path": "features.npy", "target_path": "targets.npy"},
                "optimizer": {"name": "adam", "lr": 0.001},
                "training": {"epochs": 3, "batch_size": 256, "checkpoint_every": None},
                "output": {"dir": str(Path(tmp) / "runs")},
            }  # fmt: skip
            (Path(tmp) / "config.yaml").write_text(yaml.safe_dump(config))
            cells = []
            for label, overrides in (("exact", ()), ("window 4,096", ("data.shuffle=window", "data.shuffle_window=4096")),
                                     ("window 16,384", ("data.shuffle=window", "data.shuffle_window=16384"))):  # fmt: skip
                run = train_child(Path(tmp) / "config.yaml", overrides)
                cells.append(f"{label} {run.final['val_accuracy']:.4f} ({run.steps_per_second:,.0f} steps/s)")
            print(f"val accuracy after 3 epochs, {rows:,} rows {stored}: " + ", ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=154.0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[200.0, 600.0, 2000.0, 4000.0])
    parser.add_argument("--npz-max-mb", type=float, default=1000.0)  # the npz source's limit is 1 GB
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--limit-mb", type=float, default=1024.0)
    parser.add_argument("--dir", type=Path, default=Path("/work") if Path("/work").is_dir() else Path(tempfile.gettempdir()))
    parser.add_argument("--only", choices=("npz", "speed", "limit", "window"), default=None)
    args = parser.parse_args()
    assert resource.RUSAGE_CHILDREN  # Linux/macOS only
    free = shutil.disk_usage(args.dir).free
    if args.only in (None, "speed"):
        print("MB data | npz steps/s | npy steps/s (warm) | npy/npz | npy cold steps/s | own memory MB | mapped MB",
              flush=True)
        for megabytes in args.sizes_mb:
            if free < 2.5 * megabytes * MB + MIN_FREE_BYTES / 2:
                print(f"{megabytes:g} MB: skipped, {free / 1e9:.1f} GB free on {args.dir}", flush=True)
                continue
            mapped_speed(args.dir, megabytes, args)
    if args.only in (None, "limit"):
        larger_than_memory(args.dir, max(args.sizes_mb), args)
    if args.only in (None, "window"):
        window_accuracy(args.dir, args)
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
