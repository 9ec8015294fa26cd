"""`autobp graph`: the engine's recorded graph of one example, its values, adjoints and local derivatives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import CONFIGS
from typer.testing import CliRunner

from autobp.cli import app
from autobp.common.files import load_npz
from autobp.model.network import build_network
from autobp.model.prepare import prepare
from autobp.config.catalog import ACTIVATIONS, LOSSES
from autobp.tools.graph import build_graph, render_graph
from autobp.training.metrics import loss_targets
from autobp.training.entry import train
from autobp.training.state import INIT_STREAM


def engine_gradients(config_path: Path, example: int, state: dict | None = None) -> tuple[float, dict[str, np.ndarray]]:
    """The loss and every parameter's gradient of one validation example, by an ordinary engine backward pass."""
    config, dataset = prepare(config_path)
    network = build_network(config, dataset.n_features, np.random.default_rng([config.seed, INIT_STREAM]))
    if state is not None:
        network.load_state_dict(state)
    x = dataset.X_val[example : example + 1]
    target = loss_targets(dataset.y_val[example : example + 1], config.loss, np.dtype(config.training.dtype))
    loss = LOSSES[config.loss].engine(network.forward(x).output, target)
    loss.backward()
    grads = {f"{layer.name}.{name}": p.grad for layer in network.layers for name, p in
             (("weight", layer.weight), ("bias", layer.bias))}  # fmt: skip
    return float(loss.data), grads


def parameter_nodes(graph) -> dict[str, object]:
    names = {"W": "weight", "b": "bias"}
    return {f"{n.layer}.{names[n.op]}": n for n in graph.nodes if n.kind == "parameter"}


def test_one_node_per_engine_operation_with_the_engines_values_and_adjoints() -> None:
    graph = build_graph(CONFIGS / "deep_sigmoid.yaml", 2)
    ops = [n.op for n in graph.nodes if n.kind == "op"]
    # Nine fused dense layers, eight sigmoids (the output layer is the identity) and the loss.
    assert ops == ["dense", "sigmoid"] * 8 + ["dense", "cross_entropy"]
    assert [n.kind for n in graph.nodes].count("parameter") == 18
    loss, grads = engine_gradients(CONFIGS / "deep_sigmoid.yaml", 2)
    assert graph.loss == loss
    for name, node in parameter_nodes(graph).items():
        assert np.array_equal(node.adjoint, grads[name]), name
    for node in graph.nodes:
        assert np.isfinite(node.value).all()
        assert node.kind == "target" or np.isfinite(node.adjoint).all()


def test_adjoints_match_central_differences() -> None:
    graph = build_graph(CONFIGS / "xor.yaml", 1)
    config, dataset = prepare(CONFIGS / "xor.yaml")
    network = build_network(config, dataset.n_features, np.random.default_rng([config.seed, INIT_STREAM]))
    x, target = dataset.X_val[1:2], dataset.y_val[1:2]
    w = network.layers[0].weight.data

    def loss_at(value: float, i: int, j: int) -> float:
        saved = w[i, j]
        w[i, j] = value
        loss = float(LOSSES[config.loss].engine(network.forward(x).output, target).data)
        w[i, j] = saved
        return loss

    adjoint = parameter_nodes(graph)["layer0.weight"].adjoint
    eps = 1e-6
    for i, j in [(0, 0), (1, 2), (0, 3)]:
        numeric = (loss_at(w[i, j] + eps, i, j) - loss_at(w[i, j] - eps, i, j)) / (2 * eps)
        assert abs(numeric - adjoint[i, j]) <= 1e-7 * max(1.0, abs(numeric))


def test_each_edge_carries_its_local_derivative_and_the_chain_rule_holds() -> None:
    graph = build_graph(CONFIGS / "deep_sigmoid.yaml", 0)
    by_id = {n.id: n for n in graph.nodes}
    for edge in graph.edges:
        source, target = by_id[edge.source], by_id[edge.target]
        if target.op == "sigmoid":  # σ'(z) = σ(1 − σ), and ∂L/∂z = ∂L/∂σ · σ'(z)
            assert edge.derivative == ACTIVATIONS["sigmoid"].derivative
            assert np.allclose(edge.local, target.value * (1 - target.value), rtol=1e-12, atol=0)
            assert np.allclose(source.adjoint, target.adjoint * edge.local, rtol=1e-12, atol=1e-300)
        if target.op == "dense" and edge.argnum == 0:  # ∂L/∂f = ∂L/∂z Wᵀ
            weight = next(by_id[e.source] for e in graph.edges if e.target == target.id and e.argnum == 1)
            assert edge.derivative == "g Wᵀ"
            assert np.allclose(source.adjoint, target.adjoint @ weight.value.T, rtol=1e-12, atol=1e-300)


def test_from_a_run_directory_the_trained_weights_and_a_validation_example(tmp_path: Path) -> None:
    run_dir = train(CONFIGS / "iris.yaml", ["training.epochs=3"], output=tmp_path).run_dir
    graph = build_graph(run_dir, 4)
    model = load_npz(run_dir / "model.npz")
    for name, node in parameter_nodes(graph).items():
        assert np.array_equal(node.value, model[name])
    loss, grads = engine_gradients(run_dir / "config.yaml", 4, model)
    assert graph.loss == loss and "trained weights" in graph.subtitle and "validation example 4" in graph.subtitle
    for name, node in parameter_nodes(graph).items():
        assert np.array_equal(node.adjoint, grads[name])


def test_dot_and_svg_name_every_node_and_edge(tmp_path: Path) -> None:
    graph = build_graph(CONFIGS / "quickstart.yaml", 0)
    dot = render_graph(graph, "dot")
    assert dot.startswith('digraph "quickstart: computation graph" {') and dot.count(" -> ") == len(graph.edges)
    svg = render_graph(graph, "svg")
    assert svg.count('<g class="node"') == len(graph.nodes) and svg.count('<g class="edge"') == len(graph.edges)
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")


def test_the_command_writes_each_format_and_rejects_a_bad_example(tmp_path: Path) -> None:
    runner = CliRunner()
    for name in ("g.svg", "g.dot", "g.html"):
        result = runner.invoke(app, ["graph", str(CONFIGS / "xor.yaml"), "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "g.svg").read_text().startswith("<svg")
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    assert (tmp_path / "g.html").read_text().startswith("<!DOCTYPE html>")
    stdout = runner.invoke(app, ["graph", str(CONFIGS / "xor.yaml"), "--format", "dot"])
    assert stdout.exit_code == 0 and stdout.stdout == (tmp_path / "g.dot").read_text()
    bad = runner.invoke(app, ["graph", str(CONFIGS / "xor.yaml"), "--example", "5000"])
    assert bad.exit_code == 2 and "--example 5000: the validation split has" in bad.output
    nowhere = runner.invoke(app, ["graph", str(CONFIGS / "xor.yaml"), "-o", str(tmp_path / "missing" / "g.svg")])
    assert nowhere.exit_code == 2 and f"the folder {tmp_path / 'missing'} does not exist" in nowhere.output
    fmt = runner.invoke(app, ["graph", str(CONFIGS / "xor.yaml"), "--format", "png"])
    assert fmt.exit_code == 2 and "'png' is not one of 'svg', 'dot', 'html'" in fmt.output


def test_zeros_print_without_a_sign_and_the_input_says_whether_it_is_standardized(tmp_path: Path) -> None:
    from autobp.common.text import format_number
    from autobp.tools.graph import describe

    assert format_number(-0.0) == "0" and describe(np.array([-0.0, 1.5, -2.0])) == ["[0, 1.5, -2]"]
    graph = build_graph(CONFIGS / "iris.yaml", 0)
    assert [n.title for n in graph.nodes if n.kind == "input"] == ["x (the example, standardized)"]
    svg = render_graph(graph, "svg")
    assert "x (the example, standardized)" in svg and not any(f"-0{end}" in svg for end in (",", "]", "<"))
    raw = tmp_path / "iris.yaml"
    raw.write_text((CONFIGS / "iris.yaml").read_text().replace("path: data/iris.csv", f"path: {CONFIGS / 'data' / 'iris.csv'}\n  standardize: false"))
    assert [n.title for n in build_graph(raw, 0).nodes if n.kind == "input"] == ["x (the example)"]
