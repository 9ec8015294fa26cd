"""`autobp export RUN --format onnx`: a trained run as one self-contained ONNX model.

The graph does what `autobp predict` does, step for step: standardize the features with the training split's
statistics, run every layer (x W + b, then its activation), then map the network's outputs as predict does —
softmax probabilities (cross_entropy), the positive class's probability (bce), or the targets in the data's units
(regression). It computes in float32, the precision ONNX runtimes serve in, whatever the run's dtype.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import autobp
from autobp.common import files
from autobp.common.errors import ConfigError
from autobp.config.catalog import ACTIVATIONS
from autobp.sweeps.record import is_sweep_dir
from autobp.tools.predict import TrainedModel, load_model

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17: runtimes that read opset 17 read this file
INPUT = "features"
PROBABILITIES = "probabilities"  # cross_entropy: (batch, classes)
PROBABILITY = "probability"  # bce: (batch, 1), the probability of the second class name
CLASS_ID = "class_id"  # classification: (batch,) int64, the index into class_names
TARGETS = "targets"  # regression: (batch, targets) in the data's units
MODEL_FILE = "model.onnx"
INSTALL_HINT = "--format onnx needs the onnx package: pip install 'autobp[export]'"

def export_onnx(run_dir: Path, out: Path | None = None) -> Path:
    """Write the run's model as ONNX to `out` (default RUN_DIR/model.onnx), atomically; returns the path."""
    onnx = _onnx()
    if is_sweep_dir(run_dir):
        raise ConfigError(f"{run_dir}: a sweep directory; --format onnx exports one run's model, so give one of its "
                          f"trials, e.g. {run_dir / 'trial-000'}")  # fmt: skip
    if out is not None:
        files.output_path(out, "-o")  # refused before the work, not after
    model = load_model(run_dir)
    proto = build_onnx(model, run_dir.resolve().name)
    onnx.checker.check_model(proto)
    if out is None:
        files.write_inside(run_dir, MODEL_FILE, proto.SerializeToString())
        return run_dir / MODEL_FILE
    files.write_output(out, proto.SerializeToString(), "-o")
    return out


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return onnx


def build_onnx(model: TrainedModel, name: str) -> Any:
    """The ModelProto of a loaded run: input standardization, every layer, and predict's output transform."""
    from onnx import TensorProto, helper

    graph = _Graph()
    data = model.data
    h = INPUT
    if data.x_mean is not None:
        h = graph.node("Sub", [h, graph.constant("x_mean", data.x_mean)])
        h = graph.node("Div", [h, graph.constant("x_std", data.x_std)])
    for layer in model.network.layers:
        weight = graph.constant(f"{layer.name}.weight", layer.weight.data)
        bias = graph.constant(f"{layer.name}.bias", layer.bias.data)
        h = graph.node("Gemm", [h, weight, bias])
        h = _activation(graph, layer.activation, h)
    outputs = _output_transform(graph, model, h)
    batch = "batch"
    inputs = [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [batch, data.n_features])]
    value_infos = [helper.make_tensor_value_info(name, kind, [batch, *shape]) for name, kind, shape in outputs]
    proto = helper.make_graph(graph.nodes, f"autobp {name}", inputs, value_infos, graph.initializers)
    onnx_model = helper.make_model(
        proto, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="autobp",
        producer_version=autobp.__version__, doc_string=_doc(model),
    )  # fmt: skip
    onnx_model.ir_version = IR_VERSION
    helper.set_model_props(onnx_model, metadata(model, name))
    return onnx_model


def metadata(model: TrainedModel, name: str) -> dict[str, str]:
    """The model's metadata_props: names as JSON lists, the loss and task, the run's name."""
    data = model.data
    props = {
        "run": name,
        "loss": model.config.loss,
        "task": data.task,
        "feature_names": json.dumps(data.feature_names),
        "target_names": json.dumps(data.target_names),
    }
    if data.class_names is not None:
        props["class_names"] = json.dumps(data.class_names)
    return props


def _doc(model: TrainedModel) -> str:
    data = model.data
    if data.class_names is None:
        return f"{TARGETS}: the targets {', '.join(data.target_names)} in the data's units"
    ids = f"{CLASS_ID}: index into class_names ({', '.join(data.class_names)})"
    if model.config.loss == "bce":
        return f"{PROBABILITY}: P({data.class_names[1]}); {ids}"
    return f"{PROBABILITIES}: one per class; {ids}"


def _activation(graph: _Graph, activation: str, h: str) -> str:
    """The activation's node, as its catalog entry names the ONNX operator (identity adds none)."""
    entry = ACTIVATIONS[activation]
    if entry.engine is None:
        return h
    if entry.onnx is None:
        raise ConfigError(f"activation {activation!r} has no ONNX operator in autobp's catalog (autobp.config.catalog)")
    return graph.node(entry.onnx.kind, [h], **entry.onnx.attributes)


def _output_transform(graph: _Graph, model: TrainedModel, logits: str) -> list[tuple[str, int, list[int]]]:
    """The graph's outputs as (name, element type, shape after the batch), mirroring predict's CSV columns."""
    from onnx import TensorProto

    data = model.data
    if data.class_names is None:
        if data.y_mean is not None:
            scaled = graph.node("Mul", [logits, graph.constant("y_std", data.y_std)])
            logits = graph.node("Add", [scaled, graph.constant("y_mean", data.y_mean)])
        graph.node("Identity", [logits], output=TARGETS)
        return [(TARGETS, TensorProto.FLOAT, [len(data.target_names)])]
    if model.config.loss == "bce":
        graph.node("Sigmoid", [logits], output=PROBABILITY)
        # predict decides on the logit (> 0), not on the rounded probability.
        positive = graph.node("Greater", [logits, graph.constant("zero", np.zeros(1))])
        ids = graph.node("Squeeze", [positive, graph.constant("class_axis", np.array([1]), np.int64)])
        graph.node("Cast", [ids], output=CLASS_ID, to=TensorProto.INT64)
        return [(PROBABILITY, TensorProto.FLOAT, [1]), (CLASS_ID, TensorProto.INT64, [])]
    graph.node("Softmax", [logits], output=PROBABILITIES, axis=1)
    graph.node("ArgMax", [logits], output=CLASS_ID, axis=1, keepdims=0)
    return [(PROBABILITIES, TensorProto.FLOAT, [len(data.class_names)]), (CLASS_ID, TensorProto.INT64, [])]


class _Graph:
    """Nodes and initializers in the order they are added; intermediate values are named by their node."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def constant(self, name: str, values: np.ndarray, dtype: type = np.float32) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    def node(self, kind: str, inputs: list[str], output: str | None = None, **attributes: Any) -> str:
        from onnx import helper

        output = output or f"{kind.lower()}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(kind, inputs, [output], name=f"{kind}_{len(self.nodes)}", **attributes))
        return output
