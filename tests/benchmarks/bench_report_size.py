"""A sweep's HTML reports before (another tree, default `main`) and after (this tree): directory size with every page
written, and how long Chromium takes to open the sweep's page and a trial's page.

    python tests/benchmarks/bench_report_size.py [--base main] [--opens 5] [--epochs 100]

Runs configs/sweep_spirals_tpe.yaml (20 TPE trials) once, copies the sweep directory twice, writes every page into
one copy with the base tree's `autobp report --html` (its source is exported with `git archive`) and into the other
with this tree's, and compares: the directory sizes (the target: 6 MB + 300 kB × trials), and the open times
(goto until every chart is drawn, each open in a fresh browser context so that nothing is cached), the two sides
alternating so that a loaded machine slows both alike; the median and the fastest open of each side and their
ratios are printed (on a loaded machine single opens vary by 2x: the fastest says most about the page itself).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "configs" / "sweep_spirals_tpe.yaml"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def export(base: str, folder: Path) -> Path:
    """The source of the `base` commit, unpacked into `folder`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", base, "autobp"], check=True, capture_output=True)
    folder.mkdir()
    tar = folder / "src.tar"
    tar.write_bytes(archive.stdout)
    with tarfile.open(tar) as handle:
        handle.extractall(folder, filter="data")
    return folder


def write_reports(tree: Path, sweep: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "autobp", "report", str(sweep), "--html"], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree)  # fmt: skip (-m puts cwd first on sys.path)
    return time.perf_counter() - started


def size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def open_time(browser: object, page_path: Path) -> float:
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    started = time.perf_counter()
    page.goto(page_path.as_uri(), wait_until="load")
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 2 && "
                           "[...document.querySelectorAll('.js-plotly-plot')].every(p => p._fullLayout)")  # fmt: skip
    seconds = time.perf_counter() - started
    context.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="main", help="the commit to compare with")
    parser.add_argument("--opens", type=int, default=5, help="opens of each page per side")
    parser.add_argument("--epochs", type=int, default=100, help="training.epochs of each trial (the file says 100)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from autobp.sweeps.run import run_sweep

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        base = export(args.base, work / "base")
        sweep = run_sweep([SWEEP], [f"training.epochs={args.epochs}"], output=work / "runs", jobs=2).directory
        trials = len(list(sweep.glob("trial-*")))
        sides = {"before": (base, work / "before"), "after": (ROOT, work / "after")}
        for tree, copy in sides.values():
            shutil.copytree(sweep, copy)
        raw = size(sweep)
        for name, (tree, copy) in sides.items():
            seconds = write_reports(tree, copy)
            total, pages = size(copy), size(copy) - raw
            print(f"{name}: {trials} trials, directory {total / 1e6:.1f} MB ({pages / 1e6:.1f} MB of it reports and "
                  f"scripts, written in {seconds:.1f} s)", flush=True)  # fmt: skip
        target, after = 6e6 + 300e3 * trials, size(sides["after"][1])
        print(f"target: the directory with every page written <= 6 MB + 300 kB x {trials} = {target / 1e6:.1f} MB: "
              f"{'met' if after <= target else 'NOT met'} ({after / 1e6:.1f} MB)", flush=True)  # fmt: skip
        times: dict[tuple[str, str], list[float]] = {}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for _ in range(args.opens):
                for name, (_, copy) in sides.items():
                    for which, page_path in (("sweep", copy / "report.html"), ("trial", copy / "trial-000" / "report.html")):
                        times.setdefault((name, which), []).append(open_time(browser, page_path))
            browser.close()
        for which in ("sweep", "trial"):
            before, after = (statistics.median(times[(name, which)]) for name in sides)
            fastest = [min(times[(name, which)]) for name in sides]
            print(f"open the {which} page: before {before:.2f} s, after {after:.2f} s (median of {args.opens}), "
                  f"after/before {after / before:.2f}; fastest {fastest[0]:.2f} s and {fastest[1]:.2f} s, "
                  f"after/before {fastest[1] / fastest[0]:.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
