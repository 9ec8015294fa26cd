"""`autobp report --html` and `autobp graph`, opened in a real headless Chromium: no request leaves the page, no
console error, and the charts show what the run's files hold."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, open_file, require
from typer.testing import CliRunner

from autobp.cli import app
from autobp.rundir.reader import read_run
from autobp.sweeps.run import run_sweep
from autobp.training.entry import train

require("plotly", "report")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def deep_report(runs: Path) -> Path:
    run_dir = train(CONFIGS / "deep_sigmoid.yaml", ["training.epochs=4"], output=runs).run_dir
    result = CliRunner().invoke(app, ["report", str(run_dir), "--html"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote the HTML report to {run_dir / 'report.html'}\n"
    return run_dir


@pytest.fixture(scope="module")
def sweep_dir(runs: Path) -> Path:
    sweep = runs / "sweep.yaml"
    sweep.write_text(f"base: {CONFIGS / 'xor.yaml'}\nname: lrs\nparameters:\n  optimizer.lr: [0.1, 0.01, 0.001]\n"
                     "  model.activation: [tanh, relu]\n")  # fmt: skip
    result = run_sweep([sweep], ["training.epochs=3"], output=runs, jobs=1)
    assert CliRunner().invoke(app, ["report", str(result.directory), "--html"]).exit_code == 0
    return result.directory


def test_without_plotly_the_command_names_the_extra(deep_report: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    result = CliRunner().invoke(app, ["report", str(deep_report), "--html", "-o", str(deep_report / "x.html")])
    assert result.exit_code == 2 and "pip install 'autobp[report]'" in result.output
    assert not (deep_report / "x.html").exists()


def test_o_without_html_is_refused(deep_report: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(deep_report), "-o", "x.html"])
    assert result.exit_code == 2 and "-o FILE is where --format html writes its page" in result.output
    both = CliRunner().invoke(app, ["report", str(deep_report), "--html", "--format", "json"])
    assert both.exit_code == 2 and "give one of --html and --format json" in both.output


def test_format_html_writes_the_page_html_writes(deep_report: Path, tmp_path: Path) -> None:
    by_format = CliRunner().invoke(app, ["report", str(deep_report), "--format", "html", "-o", str(tmp_path / "a.html")])
    by_flag = CliRunner().invoke(app, ["report", str(deep_report), "--html", "-o", str(tmp_path / "b.html")])
    assert (by_format.exit_code, by_flag.exit_code) == (0, 0), by_format.output + by_flag.output
    assert by_format.stdout == f"wrote the HTML report to {tmp_path / 'a.html'}\n"
    page = (tmp_path / "a.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page == (tmp_path / "b.html").read_text()


def test_the_page_is_self_contained(deep_report: Path) -> None:
    page = (deep_report / "report.html").read_text()
    assert "<script src" not in page and "cdn.plot.ly" not in page.replace("https://cdn.plot.ly", "")
    assert "vanishing_gradients" in page and "set `model.layers.0–7.activation: relu`" in page


def plotly_data(page, div: str) -> list[dict]:
    return page.evaluate(f"JSON.parse(JSON.stringify(document.getElementById('{div}').data))")


def test_run_report_in_a_browser(browser, deep_report: Path) -> None:
    opened = open_file(browser, deep_report / "report.html")
    page = opened.page
    log = read_run(deep_report)
    # The heatmap: one row per layer, the log10 of each logged ‖∂L/∂f‖.
    (heatmap,) = plotly_data(page, "gradient-flow")
    assert heatmap["y"] == [layer.name for layer in log.layers] and len(heatmap["z"]) == 9
    first = log.layers[0]
    assert heatmap["x"] == first.steps
    assert np.allclose(heatmap["z"][0], np.log10(first.values("out_grad_norm")), rtol=5e-4)  # 4 digits: as hovers show
    # Hovering the validation-loss curve shows that epoch's value.
    val = log.metrics[2]["val_loss"]
    x, y = page.evaluate("""() => {
        const gd = document.getElementById('curves'), xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        const trace = gd.data.findIndex(t => t.name === 'val_loss');
        const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
        return [box.left + xa.l2p(gd.data[trace].x[2]), box.top + ya.l2p(gd.data[trace].y[2])];
    }""")
    page.mouse.move(x, y)
    page.wait_for_selector(".hoverlayer .hovertext")
    hover = page.locator("#curves .hoverlayer").text_content()
    assert f"val_loss {val:.4g}" in hover and "epoch 3" in hover
    # The log toggle changes the loss axis.
    assert page.evaluate("document.getElementById('curves')._fullLayout.yaxis.type") == "linear"
    page.click("#curves .updatemenu-button:has-text('log scale')")
    page.wait_for_function("document.getElementById('curves')._fullLayout.yaxis.type === 'log'")
    # Distributions: a layer chooser with every layer; the graph is embedded.
    buttons = page.evaluate("document.getElementById('distributions').layout.updatemenus[0].buttons.map(b => b.label)")
    assert buttons == [layer.name for layer in log.layers]
    assert page.locator("svg.autobp-graph g.node").count() == 9 * 2 + 9 + 8 + 1 + 1 + 1
    assert opened.requests == [] and opened.errors == []
    page.close()


def test_sweep_report_in_a_browser(browser, sweep_dir: Path) -> None:
    opened = open_file(browser, sweep_dir / "report.html")
    page = opened.page
    trials = sorted(p.name for p in sweep_dir.glob("trial-*"))
    links = page.locator("a.trial")
    assert sorted(links.all_inner_texts()) == trials and len(trials) == 6
    curves = plotly_data(page, "sweep-curves")
    assert sorted(trace["name"] for trace in curves) == trials
    assert "optimizer.lr = " in curves[0]["hovertemplate"] and "model.activation = " in curves[0]["hovertemplate"]
    parallel = plotly_data(page, "parallel")[0]
    assert [d["label"] for d in parallel["dimensions"]] == ["log10 optimizer.lr", "model.activation", "val_loss"]
    hrefs = page.evaluate("[...document.querySelectorAll('a.trial')].map(a => a.href)")
    assert all(Path(href.removeprefix("file://")).is_file() for href in hrefs)
    for index in (0, len(trials) - 1):  # each page loads 5 MB of plotly.js: two of them show the links work
        link = page.locator("a.trial").nth(index)
        name = link.inner_text()
        link.click()
        page.wait_for_load_state("load")
        assert page.title() == f"{name}: autobp report" and page.url.endswith(f"/{name}/report.html")
        page.go_back()
        page.wait_for_load_state("load")
    assert opened.requests == [] and opened.errors == []
    page.close()


def test_graph_page_in_a_browser(browser, tmp_path: Path) -> None:
    from test_graph import engine_gradients

    out = tmp_path / "graph.html"
    assert CliRunner().invoke(app, ["graph", str(CONFIGS / "iris.yaml"), "--example", "3", "-o", str(out)]).exit_code == 0
    opened = open_file(browser, out)
    nodes = opened.page.evaluate("""[...document.querySelectorAll('g.node')].map(g => ({
        kind: g.dataset.kind, op: g.dataset.op, layer: g.dataset.layer, value: g.dataset.value,
        adjoint: g.dataset.adjoint}))""")
    ops = [n["op"] for n in nodes if n["kind"] == "op"]
    assert ops == ["dense", "relu", "dense", "cross_entropy"]
    loss, grads = engine_gradients(CONFIGS / "iris.yaml", 3)
    names = {"W": "weight", "b": "bias"}
    for node in nodes:
        values = json.loads(node["value"])
        assert all(v is not None and math.isfinite(v) for v in values)
        if node["kind"] == "parameter":
            expected = grads[f"{node['layer']}.{names[node['op']]}"].reshape(-1)
            assert json.loads(node["adjoint"]) == expected.tolist()
        if node["op"] == "cross_entropy":
            assert values == [loss] and json.loads(node["adjoint"]) == [1.0]
    assert opened.requests == [] and opened.errors == []
    opened.page.close()


def test_a_diverged_or_killed_run_renders_what_it_has(runs: Path) -> None:
    from autobp.tools import html_page, html_run

    def run_page(run_dir: Path) -> str:
        return html_page.page(html_run.RunContext(run_dir), "")

    diverged = train(CONFIGS / "sine.yaml", ["model.activation=identity", "optimizer.name=sgd", "optimizer.lr=100"],
                     output=runs).run_dir  # fmt: skip
    step = json.loads((diverged / "summary.json").read_text())["diverged"]["step"]
    page = run_page(diverged)
    assert f"diverged at step {step}" in page and 'class="status diverged"' in page and "exploding_gradients" in page
    killed = train(CONFIGS / "xor.yaml", ["training.epochs=2"], output=runs).run_dir
    (killed / "summary.json").unlink()
    (killed / "histograms.npz").unlink()
    page = run_page(killed)
    assert 'class="status unfinished"' in page and "showing the 2 logged epochs" in page
    assert "This run has no histograms.npz" in page


@pytest.fixture(scope="module")
def layer_sweep(runs: Path) -> Path:
    sweep = runs / "layers.yaml"
    sweep.write_text(f"base: {CONFIGS / 'quickstart.yaml'}\nname: layers\nparameters:\n  model.layers.0.units: [4, 8]\n"
                     "  model.layers.0.activation: [tanh, relu]\n")  # fmt: skip
    result = run_sweep([sweep], ["training.epochs=2", "data.n_samples=200"], output=runs, jobs=1)
    assert CliRunner().invoke(app, ["report", str(result.directory), "--html"]).exit_code == 0
    return result.directory


def test_swept_layer_keys_show_their_values(browser, layer_sweep: Path) -> None:
    import csv

    with open(layer_sweep / "trials.csv", newline="") as handle:
        expected = {row["trial"]: [row["model.layers.0.units"], row["model.layers.0.activation"]] for row in csv.DictReader(handle)}
    opened = open_file(browser, layer_sweep / "report.html")
    page = opened.page
    shown = page.evaluate("[...document.querySelectorAll('#section-trials tbody tr')].map(r => [r.cells[1].textContent, r.cells[3].textContent, r.cells[4].textContent])")  # fmt: skip
    assert {trial: [units, activation] for trial, units, activation in shown} == expected
    parallel = plotly_data(page, "parallel")[0]
    units, activation = parallel["dimensions"][:2]
    assert units["label"] == "model.layers.0.units" and sorted(set(units["values"])) == [4, 8]
    assert activation["ticktext"] == ["relu", "tanh"] and sorted(set(activation["values"])) == [0, 1]
    assert opened.requests == [] and opened.errors == []
    page.close()


def test_a_sweeps_pages_share_one_plotly_and_open_from_a_copied_folder(browser, layer_sweep: Path, tmp_path: Path) -> None:
    import shutil

    from plotly.offline import get_plotlyjs

    asset = layer_sweep / "plotly.min.js"
    assert asset.read_text() == get_plotlyjs()
    pages = [layer_sweep / "report.html", *sorted(layer_sweep.glob("trial-*/report.html"))]
    assert len(pages) == 5 and all(get_plotlyjs()[:2000] not in p.read_text() for p in pages)
    assert all(p.stat().st_size < 300_000 for p in pages)
    assert '<script type="text/javascript" src="../plotly.min.js">' in pages[1].read_text()
    copy = shutil.copytree(layer_sweep, tmp_path / "moved")
    for path in (copy / "report.html", copy / "trial-001" / "report.html"):
        opened = open_file(browser, path)
        assert opened.page.evaluate("document.querySelectorAll('.js-plotly-plot').length") >= 2
        assert opened.requests == [] and opened.errors == []
        opened.page.close()


def test_wide_graphs_scroll_or_fit_and_fraction_axes_start_at_zero(browser, deep_report: Path, runs: Path) -> None:
    opened = open_file(browser, deep_report / "report.html")
    page = opened.page
    page.locator("#section-graph .graph").scroll_into_view_if_needed()
    box = page.evaluate("""(() => { const g = document.querySelector('#section-graph .graph');
        return {scroll: g.scrollWidth, width: g.clientWidth, height: g.getBoundingClientRect().height}; })()""")
    assert box["scroll"] > 5000 > box["width"] and box["height"] <= 900  # its scroll bar is on screen
    page.check("#graph-fit")
    svg = page.evaluate("document.querySelector('#section-graph svg').getBoundingClientRect()")
    assert svg["width"] <= box["width"] + 1
    page.mouse.click(svg["x"] + 0.75 * svg["width"], svg["y"] + svg["height"] / 2)  # zoom into the right part
    assert not page.is_checked("#graph-fit")
    left = page.evaluate("document.querySelector('#section-graph .graph').scrollLeft")
    assert abs(left + box["width"] / 2 - 0.75 * box["scroll"]) < 50
    opened.page.close()
    quiet = train(CONFIGS / "xor.yaml", ["training.epochs=2"], output=runs).run_dir  # tanh: never saturated here
    assert CliRunner().invoke(app, ["report", str(quiet), "--html"]).exit_code == 0
    assert set(read_run(quiet).layers[0].values("saturated_fraction")) == {0.0}
    opened = open_file(browser, quiet / "report.html")
    titles = opened.page.evaluate("document.getElementById('layer-curves').layout.annotations.map(a => a.text)")
    index = titles.index("saturated fraction (tanh, sigmoid)")
    axis = f"yaxis{index + 1 if index else ''}"
    assert opened.page.evaluate(f"document.getElementById('layer-curves')._fullLayout.{axis}.range") == [0, 1]
    assert opened.requests == [] and opened.errors == []
    opened.page.close()
