"""Regenerate the screenshots in docs/ from real runs: python docs/screenshots.py

Trains the deep sigmoid and iris examples, a grid sweep and the TPE sweep, a run with training instruments at a batch
far below its noise scale, and a diverged run treated by `autobp doctor` into a temporary folder, writes their HTML
reports and the iris computation graph, starts a training and `autobp view` on the folder (the training paused
mid-run with SIGSTOP, so the live page is photographed while it runs), and photographs them in headless Chromium
(Debian's `chromium`, driven by Playwright from the `test` extra, launched by its path: no browser download).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip
WIDTH = 1200
# A batch of 2 under a step budget, instrumented every step: the Instruments section's `gradient_noise` case.
NOISY = {
    "name": "noisy-batch", "seed": 0, "data": {"source": "moons", "n_samples": 1000, "noise": 0.2},
    "model": {"hidden": [32, 32], "activation": "tanh"}, "loss": "cross_entropy", "optimizer": {"name": "sgd", "lr": 0.3},
    "training": {"epochs": 1000, "batch_size": 2, "max_steps": 300, "instruments": {"every": 1, "curvature_every": 20}},
}  # fmt: skip
SECTIONS = {"report-instruments.png": "#section-instruments", "report-doctor.png": "#section-verified-fixes"}


def build(work: Path) -> dict[str, Path]:
    """The pages to photograph: four run reports, two sweep reports and a computation graph."""
    from autobp.sweeps.run import run_sweep
    from autobp.tools.doctor import run_doctor
    from autobp.tools.graph import build_graph, render_graph
    from autobp.tools.html_report import write_report
    from autobp.training.entry import train

    runs = work / "runs"
    deep = train(ROOT / "configs" / "deep_sigmoid.yaml", output=runs).run_dir
    iris = train(ROOT / "configs" / "iris.yaml", output=runs).run_dir
    sweep = run_sweep([ROOT / "configs" / "sweep_spirals.yaml"], ["training.epochs=30"], output=runs, jobs=2).directory
    tpe = run_sweep([ROOT / "configs" / "sweep_spirals_tpe.yaml"], [], output=runs, jobs=2).directory
    noisy = train(NOISY, output=runs).run_dir
    diverged = train(ROOT / "configs" / "sine.yaml", ["optimizer.name=sgd", "optimizer.lr=10"], output=runs).run_dir
    run_doctor(diverged, jobs=2)
    graph = work / "graph-iris.html"
    graph.write_text(render_graph(build_graph(iris, 0), "html"))
    return {
        "report-deep-sigmoid.png": write_report(deep, None),
        "report-iris.png": write_report(iris, None),
        "report-sweep.png": write_report(sweep, None),
        "report-sweep-tpe.png": write_report(tpe, None),
        "graph-iris.png": graph,
        "graph-deep-sigmoid.png": deep / "report.html",
        "report-instruments.png": write_report(noisy, None),
        "report-doctor.png": write_report(diverged, None),
    }


def autobp(*args: str, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "autobp", *args], env=env, stdout=subprocess.PIPE, text=True, **popen)


def live(runs: Path, height: int) -> None:
    """`autobp view` on the runs folder while a training runs (paused), photographed: the list, then the run."""
    trainer = autobp("train", str(ROOT / "configs" / "quickstart.yaml"), "--output-dir", str(runs), "--name", "live", "-q",
                     "--set", "training.epochs=100000", "--set", "data.n_samples=20000", "--set", "training.log_every=100")  # fmt: skip
    metrics = None
    while metrics is None or metrics.read_bytes().count(b"\n") < 25:
        time.sleep(0.2)
        metrics = next(runs.glob("live-*/metrics.csv"), None)
    trainer.send_signal(signal.SIGSTOP)
    server = autobp("view", str(runs), "--port", "0")
    url = server.stdout.readline().split(" at ")[1].split(" ")[0]
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": WIDTH, "height": 620})
            page.goto(url)
            page.wait_for_selector("#runs tbody tr")
            shoot(page, "view-runs.png", 620)
            page.set_viewport_size({"width": WIDTH, "height": height})
            page.click("#runs tbody a:text-matches('^live-')")
            page.wait_for_selector("#curves .main-svg")
            page.wait_for_timeout(800)
            shoot(page, "view-run.png", height)
            browser.close()
    finally:
        trainer.kill()
        server.send_signal(signal.SIGTERM)
        server.wait()
        trainer.wait()


def shoot(page: object, name: str, height: int) -> None:
    target = ROOT / "docs" / name
    page.screenshot(path=str(target), clip={"x": 0, "y": 0, "width": WIDTH, "height": height})
    print(f"{target}: {target.stat().st_size:,} bytes", flush=True)


def photograph(pages: dict[str, Path], height: int) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for name, page_path in pages.items():
            wide = name == "graph-iris.png"  # the graph is wider than a page: photograph the drawing itself
            page = browser.new_page(viewport={"width": 2 * WIDTH if wide else WIDTH, "height": height})
            page.goto(page_path.resolve().as_uri())
            page.wait_for_timeout(800)  # plotly draws after load
            target = ROOT / "docs" / name
            if wide:
                page.locator("svg").first.screenshot(path=str(target))
                print(f"{target}: {target.stat().st_size:,} bytes", flush=True)
            elif name.startswith("graph"):  # a graph wider than the page, in the report: scrolled to its middle
                frame = page.locator("#section-graph .graph")
                frame.evaluate("g => { g.scrollLeft = (g.scrollWidth - g.clientWidth) / 2; }")
                page.locator("#section-graph").screenshot(path=str(target))
                print(f"{target}: {target.stat().st_size:,} bytes", flush=True)
            elif name in SECTIONS:  # one section of a run's report
                page.locator(SECTIONS[name]).screenshot(path=str(target))
                print(f"{target}: {target.stat().st_size:,} bytes", flush=True)
            elif name == "report-sweep-tpe.png":  # its table, curves and parallel coordinates
                page.screenshot(path=str(target), full_page=True)
                print(f"{target}: {target.stat().st_size:,} bytes", flush=True)
            else:
                shoot(page, name, height)
            page.close()
        browser.close()


def main() -> None:
    height = int(sys.argv[1]) if len(sys.argv) > 1 else 1350
    with tempfile.TemporaryDirectory() as tmp:
        photograph(build(Path(tmp)), height)
        live(Path(tmp) / "runs", height)


if __name__ == "__main__":
    main()
