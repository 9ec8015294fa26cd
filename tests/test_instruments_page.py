"""The HTML report's "Instruments" section in a real headless Chromium: the verdict table says what autobp.health
judged, each instrument's chart holds instruments.csv's values, and the verdict bands sit at its thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import open_file, require
from typer.testing import CliRunner

from autobp.cli import app
from autobp.health.thresholds import ALPHA_HIGH, ALPHA_LOW, NOISE_SCALE_FACTOR
from autobp.rundir.instruments import read
from autobp.training.entry import train

require("plotly", "report")


def report(tmp_path: Path, batch: int, **training) -> Path:
    run = train({
        "name": f"b{batch}", "seed": 1, "data": {"source": "spirals", "n_samples": 300},
        "model": {"hidden": [16, 16]}, "loss": "cross_entropy", "optimizer": {"name": "sgd", "lr": 0.05},
        "training": {"epochs": 3, "batch_size": batch, "instruments": {"every": 1, "curvature_every": 20}, **training},
        "output": {"dir": str(tmp_path)},
    })  # fmt: skip
    assert CliRunner().invoke(app, ["report", str(run.run_dir), "--html"]).exit_code == 0
    return run.run_dir


def test_the_instruments_section_in_a_browser(browser, tmp_path: Path) -> None:
    run_dir = report(tmp_path, 4)
    opened = open_file(browser, run_dir / "report.html")
    page = opened.page
    section = page.locator("div.instruments table")
    rows = section.locator("tbody tr").all_inner_texts()
    noise = next(row for row in rows if row.startswith("noise_scale_smoothed"))
    assert "batch far below the noise scale" in noise and f"\t{NOISE_SCALE_FACTOR * 4:g}\t" in noise
    assert [row.split("\t")[0] for row in rows] == ["noise_scale_smoothed", "norm_test", "inner_test", "ortho_test",
                                                    "alpha", "lr_lambda_max"]  # fmt: skip
    charts = page.evaluate("JSON.parse(JSON.stringify(document.getElementById('instruments').data))")
    total = read(run_dir).total
    smoothed = next(trace for trace in charts if trace["name"] == "noise_scale_smoothed")
    assert smoothed["x"] == total.series("noise_scale_smoothed")[0]
    assert smoothed["y"] == pytest.approx(total.series("noise_scale_smoothed")[1], rel=5e-4)  # charts carry 4 digits
    low, high = (10**end for end in page.evaluate("document.getElementById('instruments').layout.yaxis.range"))
    drawn = [value for value in smoothed["y"] if value is not None and value > 0]
    assert low <= min(drawn) and max(drawn) <= high  # the whole smoothed line in view (the axis is logarithmic)
    curvature = next(trace for trace in charts if trace["name"] == "per step" and trace["xaxis"] == "x6")
    assert curvature["x"] == [20, 40, 60, 80, 100, 120, 140, 160, 180]
    # The bands: α's three verdicts meet at its two thresholds; the noise scale's red band starts at 4× the batch.
    shapes = page.evaluate("document.getElementById('instruments').layout.shapes")
    alpha = sorted((s["y0"], s["y1"]) for s in shapes if s["yref"] == "y5")
    assert [alpha[0][1], alpha[1][1]] == [ALPHA_LOW, ALPHA_HIGH] and alpha[1][0] == ALPHA_LOW
    red = [s for s in shapes if s["yref"] == "y" and s["fillcolor"].startswith("rgba(198")]
    assert [s["y0"] for s in red] == [NOISE_SCALE_FACTOR * 4]
    assert opened.requests == [] and opened.errors == []
    page.close()


def test_a_run_without_instruments_has_no_section(tmp_path: Path) -> None:
    run_dir = report(tmp_path, 32, instruments=None)
    assert "<h2>Instruments</h2>" not in (run_dir / "report.html").read_text()
