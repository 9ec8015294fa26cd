"""Regenerate the screenshots in docs/ from real runs: python docs/screenshots.py

Trains the deep sigmoid and iris examples and a small sweep into a temporary folder, writes their HTML reports and
the iris computation graph, and photographs them in headless Chromium (Debian's `chromium`, driven by Playwright
from the `test` extra, launched by its path: no browser download).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip
WIDTH = 1200


def build(work: Path) -> dict[str, Path]:
    """The pages to photograph: two run reports, a sweep report and a computation graph."""
    from autobp.sweeps.plan import run_sweep
    from autobp.tools.graph import build_graph, render_graph
    from autobp.tools.html_report import write_report
    from autobp.training.runner import train

    deep = train(ROOT / "configs" / "deep_sigmoid.yaml", output=work / "runs").run_dir
    iris = train(ROOT / "configs" / "iris.yaml", output=work / "runs").run_dir
    sweep = run_sweep([ROOT / "configs" / "sweep_spirals.yaml"], ["training.epochs=30"], output=work, jobs=2).directory
    graph = work / "graph-iris.html"
    graph.write_text(render_graph(build_graph(iris, 0), "html"))
    return {
        "report-deep-sigmoid.png": write_report(deep, None),
        "report-iris.png": write_report(iris, None),
        "report-sweep.png": write_report(sweep, None),
        "graph-iris.png": graph,
    }


def photograph(pages: dict[str, Path], height: int) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for name, page_path in pages.items():
            wide = name.startswith("graph")  # the graph is wider than a page: photograph the drawing itself
            page = browser.new_page(viewport={"width": 2 * WIDTH if wide else WIDTH, "height": height})
            page.goto(page_path.resolve().as_uri())
            page.wait_for_timeout(800)  # plotly draws after load
            target = ROOT / "docs" / name
            if wide:
                page.locator("svg").first.screenshot(path=str(target))
            else:
                page.screenshot(path=str(target), clip={"x": 0, "y": 0, "width": WIDTH, "height": height})
            print(f"{target}: {target.stat().st_size:,} bytes", flush=True)
            page.close()
        browser.close()


def main() -> None:
    height = int(sys.argv[1]) if len(sys.argv) > 1 else 1350
    with tempfile.TemporaryDirectory() as tmp:
        photograph(build(Path(tmp)), height)


if __name__ == "__main__":
    main()
