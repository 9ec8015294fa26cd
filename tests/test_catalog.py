"""The catalog is complete: an activation added as one entry (its engine function composed of engine operations,
defined only here) is allowed in a config, trains, exports to ONNX and draws in the graph view; the entries'
formulas are what the code runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from autobp.common.errors import ConfigError
from autobp.config import catalog
from autobp.config.catalog import ACTIVATIONS, INITS, Activation, OnnxOp
from autobp.config.configfile import config_from_dict
from autobp.config.schema import config_json_schema
from autobp.engine import Tensor, gradcheck, ops
from autobp.model.network import build_network, network_loss
from autobp.model.prepare import prepare
from autobp.tools.graph import build_graph, render_graph
from autobp.tools.onnx_export import export_onnx
from autobp.tools.predict import evaluate, load_model, network_inputs
from autobp.training.metrics import class_probabilities, loss_targets
from autobp.training.entry import train


def softsign(z: Tensor) -> Tensor:
    """z / (1 + |z|), from the engine's existing operations: no primitive of its own."""
    return z / (ops.abs(z) + 1.0)


SOFTSIGN = Activation(softsign, "squashing", "1 / (1 + |z|)²", OnnxOp("Softsign"))


@pytest.fixture
def registered() -> None:
    """softsign in the catalog for one test, and gone again after it."""
    ACTIVATIONS["softsign"] = SOFTSIGN
    yield
    del ACTIVATIONS["softsign"]


def config(**training: object) -> dict:
    return {
        "name": "softsign", "seed": 0,
        "data": {"source": "moons", "n_samples": 200, "noise": 0.1},
        "model": {"hidden": [16, 16], "activation": "softsign"},
        "loss": "cross_entropy",
        "optimizer": {"name": "adam", "lr": 0.05},
        "training": {"epochs": 40, "batch_size": 32, "checkpoint_every": None, **training},
    }  # fmt: skip


def test_an_unregistered_name_is_refused_and_a_registered_one_allowed_and_listed(registered: None) -> None:
    assert config_from_dict(config()).model.layers[0].activation == "softsign"
    assert "softsign" in config_json_schema()["$defs"]["ModelConfig"]["properties"]["activation"]["enum"]
    del ACTIVATIONS["softsign"]
    try:
        with pytest.raises(ConfigError, match=r"model.activation: 'softsign' is not allowed \(allowed: identity,"):
            config_from_dict(config())
    finally:
        ACTIVATIONS["softsign"] = SOFTSIGN


def test_its_gradients_match_central_differences(registered: None) -> None:
    cfg, dataset = prepare(config())
    network = build_network(cfg, dataset.n_features, np.random.default_rng(0))
    target = loss_targets(dataset.y_train[:8], cfg.loss, np.dtype("float64"))
    result = gradcheck(network_loss(network, dataset.X_train[:8], target, cfg.loss), network.parameters())
    assert result.ok, result.errors


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run with softsign hidden layers, shared by the tests that read it (each registers softsign again)."""
    ACTIVATIONS["softsign"] = SOFTSIGN
    try:
        return train(config(), output=tmp_path_factory.mktemp("runs")).run_dir
    finally:
        del ACTIVATIONS["softsign"]


def test_it_trains_to_an_accuracy(trained: Path, registered: None) -> None:
    model = load_model(trained)  # the run reads back with its activation
    assert [layer.activation for layer in model.network.layers] == ["softsign", "softsign", "identity"]
    metrics = np.genfromtxt(trained / "metrics.csv", delimiter=",", names=True)
    assert metrics["val_accuracy"][-1] >= 0.95


def test_onnxruntime_predicts_what_autobp_does(trained: Path, registered: None, tmp_path: Path) -> None:
    model = load_model(trained)
    _, dataset = prepare(trained / "config.yaml")
    X = np.concatenate([dataset.X_train, dataset.X_val]) * dataset.x_std + dataset.x_mean  # the data's units
    outputs, _ = evaluate(model, network_inputs(model, X), None)
    expected = class_probabilities(outputs, model.config.loss)
    session = onnxruntime.InferenceSession(str(export_onnx(trained, tmp_path / "softsign.onnx")),
                                           providers=["CPUExecutionProvider"])  # fmt: skip
    probabilities, class_id = session.run(None, {"features": X.astype(np.float32)})
    assert [node.op_type for node in _onnx_nodes(tmp_path / "softsign.onnx")].count("Softsign") == 2
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    clear = np.abs(expected[:, 1] - expected[:, 0]) > 1e-5
    assert clear.mean() > 0.5
    assert np.array_equal(class_id[clear], expected.argmax(axis=1)[clear])


def test_an_activation_without_an_onnx_operator_is_a_clear_export_error(trained: Path, tmp_path: Path) -> None:
    ACTIVATIONS["softsign"] = Activation(softsign, "squashing", "1 / (1 + |z|)²")
    try:
        with pytest.raises(ConfigError, match="activation 'softsign' has no ONNX operator in autobp's catalog"):
            export_onnx(trained, tmp_path / "softsign.onnx")
    finally:
        del ACTIVATIONS["softsign"]
    assert not (tmp_path / "softsign.onnx").exists()


def _onnx_nodes(path: Path) -> list:
    import onnx

    return list(onnx.load(path).graph.node)


def test_the_graph_view_draws_its_operations_in_their_layer(trained: Path, registered: None) -> None:
    graph = build_graph(trained, 0)
    ops_drawn = [(node.op, node.layer) for node in graph.nodes if node.kind == "op"]
    assert ops_drawn == [("dense", "layer0"), ("abs", "layer0"), ("add", "layer0"), ("divide", "layer0"),
                         ("dense", "layer1"), ("abs", "layer1"), ("add", "layer1"), ("divide", "layer1"),
                         ("dense", "layer2"), ("cross_entropy", None)]  # fmt: skip
    by_op = {(node.op, node.layer): node for node in graph.nodes}
    z = by_op["dense", "layer0"].value
    np.testing.assert_allclose(by_op["divide", "layer0"].value, z / (1 + np.abs(z)), rtol=1e-15)
    svg = render_graph(graph, "svg")
    assert svg.count('data-op="divide"') == 2 and svg.count('data-op="abs"') == 2
    assert ACTIVATIONS["softsign"].derivative not in svg  # softsign is no primitive: its operations' edges are drawn
    assert catalog.LOSSES["cross_entropy"].derivative in svg


def test_the_fixture_left_the_catalog_as_it_was() -> None:
    assert "softsign" not in ACTIVATIONS


@pytest.mark.parametrize("name", list(INITS))
def test_each_initialisation_draws_with_the_spread_and_std_its_entry_states(name: str) -> None:
    entry, fan_in, fan_out, scale = INITS[name], 400, 300, 0.1
    weights = entry.draw(fan_in, fan_out, scale, np.random.default_rng(0))
    assert weights.shape == (fan_in, fan_out)
    assert weights.std() == pytest.approx(entry.std(fan_in, fan_out, scale), rel=0.01)
    if entry.distribution == "uniform":
        assert np.abs(weights).max() <= entry.spread(fan_in, fan_out, scale)


def test_the_initialisations_are_the_ones_the_readme_names() -> None:
    fan_in, fan_out = 50, 30
    assert INITS["xavier"].spread(fan_in, fan_out, 0.1) == pytest.approx(math.sqrt(6 / (fan_in + fan_out)))
    assert INITS["he"].std(fan_in, fan_out, 0.1) == pytest.approx(math.sqrt(2 / fan_in))
    assert INITS["lecun"].std(fan_in, fan_out, 0.1) == pytest.approx(math.sqrt(1 / fan_in))
    assert INITS["normal"].std(fan_in, fan_out, 0.1) == INITS["uniform"].spread(fan_in, fan_out, 0.1) == 0.1


def test_the_engine_owns_the_activation_constants_the_entries_refer_to() -> None:
    assert catalog.ACTIVATIONS["leaky_relu"].onnx.attributes == {"alpha": ops.LEAKY_SLOPE}
    assert catalog.ACTIVATIONS["elu"].onnx.attributes == {"alpha": ops.ELU_ALPHA}
    x = np.array([-2.0, 3.0])
    np.testing.assert_array_equal(ops.leaky_relu(Tensor(x)).data, [-2.0 * ops.LEAKY_SLOPE, 3.0])
    np.testing.assert_allclose(ops.elu(Tensor(x)).data, [ops.ELU_ALPHA * math.expm1(-2.0), 3.0], rtol=1e-15)
