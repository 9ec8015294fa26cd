"""`autobp graph`: the network's computation graph for one example, as the engine recorded it.

The forward pass of one example through the network, and the loss, are recorded by the engine like any training
step; before the reverse pass walks that record, it is copied here: one node per primitive the engine ran (the fused
`dense`, each activation, the loss), one per leaf (the example x, each W_i and b_i) and per constant (the target y).
Each node carries its forward value and its adjoint ∂L/∂· from the reverse pass; each edge the local derivative
it contributes, evaluated by the primitive's own rule where it is elementwise (σ'(z), …) and named otherwise (Wᵀ).

The drawing is laid out here, not by Graphviz: a layered network is a chain of operations from left to right, with
each operation's parameters above and below the chain, so columns and rows are all the layout it needs.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autobp.tools.formats import GRAPH

if TYPE_CHECKING:
    from autobp.engine import Node as EngineNode

SMALL = 6  # arrays of at most this many entries show every number; larger ones their shape, norm and a few entries
FEW = 3
FULL_DATA = 4096  # nodes keep their full values in data-* attributes up to this many entries (for tests, tools)
# The local derivative each edge into the dense layer contributes (ᵀ: transposed; g: the adjoint arriving from the
# output); an activation's or a loss's is its catalog entry's.
DERIVATIVES = {("dense", 0): "g Wᵀ", ("dense", 1): "xᵀ g", ("dense", 2): "Σ rows of g"}
NODE_WIDTH, COLUMN_GAP, ROW_GAP, LINE, PAD = 220, 150, 40, 15, 8


@dataclass
class Node:
    """One vertex: an operation the engine ran, a leaf (x, W_i, b_i) or a constant (the target)."""

    id: str
    kind: str  # op | parameter | input | target
    op: str  # the primitive's name, or W, b, x, y
    layer: str | None
    value: np.ndarray
    adjoint: np.ndarray | None
    column: int = 0
    row: int = 0
    standardized: bool = False  # an input whose features were standardized (data.standardize) says so

    @property
    def title(self) -> str:
        example = "x (the example, standardized)" if self.standardized else "x (the example)"
        names = {"input": example, "target": "y (the target)"}
        if self.kind in names:
            return names[self.kind]
        return f"{self.op} · {self.layer}" if self.layer else f"{self.op} (the loss L)"


@dataclass
class Edge:
    """Data flowing from `source` into argument `argnum` of `target`, with the local derivative ∂target/∂source."""

    source: str
    target: str
    argnum: int
    derivative: str
    local: np.ndarray | None = None  # numeric, where the primitive is elementwise or a loss


@dataclass
class ComputationGraph:
    """The recorded graph of one example's forward pass and loss, with values and adjoints."""

    title: str
    subtitle: str
    nodes: list[Node]
    edges: list[Edge] = field(default_factory=list)

    @property
    def loss(self) -> float:
        return float(next(node for node in reversed(self.nodes) if node.kind == "op").value)


# --- recording --------------------------------------------------------------------------------------------------


def record(network: Any, x: np.ndarray, target: np.ndarray, loss_name: str) -> tuple[list[Node], list[Edge]]:
    """Run one example forward and backward on the engine, copying its recorded graph before the reverse pass."""
    from autobp.engine import Tensor
    from autobp.config.catalog import LOSSES

    leaf_names = {id(layer.weight): ("W", layer.name) for layer in network.layers}
    leaf_names.update({id(layer.bias): ("b", layer.name) for layer in network.layers})
    example = Tensor(x.reshape(1, -1), requires_grad=True)
    leaf_names[id(example)] = ("x", None)
    loss = LOSSES[loss_name].engine(network.forward(example).output, target)
    tensors, records = _walk(loss)
    nodes: dict[int, Node] = {}
    edges: list[Edge] = []
    for tensor in tensors:
        if id(tensor) in records:
            tensor.retain_grad()
    for tensor in tensors:  # creation order: a node's inputs come before it
        nodes[id(tensor)] = _node(tensor, records.get(id(tensor)), leaf_names, nodes, len(nodes))
    for tensor in tensors:
        if id(tensor) in records:
            edges += _edges(nodes[id(tensor)], records[id(tensor)], nodes)
            edges += _target_edges(nodes, nodes[id(tensor)], records[id(tensor)], target)
    loss.backward()
    for tensor in tensors:
        nodes[id(tensor)].adjoint = None if tensor.grad is None else np.array(tensor.grad, dtype=float)
    ordered = list(nodes.values())
    _lay_out(ordered, edges)
    return ordered, edges


def _walk(root: Any) -> tuple[list[Any], dict[int, EngineNode]]:
    """Every tensor the root was computed from, inputs first, and each non-leaf's engine record: the recorded
    tensors in the engine's own order (creation order), after the leaves as the walk back from the root meets them."""
    from autobp.engine import recorded

    ops = recorded(root)
    records = {id(t): t.record for t in ops}
    leaves: dict[int, Any] = {}
    for tensor in reversed(ops):
        for _, parent in reversed(records[id(tensor)].parents):
            if id(parent) not in records:
                leaves.setdefault(id(parent), parent)
    return list(leaves.values()) + ops, records


def _node(tensor: Any, record: EngineNode | None, leaf_names: dict, nodes: dict[int, Node], index: int) -> Node:
    value = np.array(tensor.data, dtype=float)
    if record is None:
        op, layer = leaf_names[id(tensor)]
        return Node(f"n{index}", "input" if op == "x" else "parameter", op, layer, value, None)
    primitive, parents = record.op, dict(record.parents)
    # A dense op belongs to its weight's layer, the loss (the one scalar) to none, any other operation (an activation
    # or a part of one) to its first input's.
    owner = parents.get(1) if primitive.name == "dense" else None if value.ndim == 0 else next(iter(parents.values()))
    layer = nodes[id(owner)].layer if owner is not None else None
    return Node(f"n{index}", "op", primitive.name, layer, value, None)


def _edges(node: Node, record: EngineNode, nodes: dict[int, Node]) -> list[Edge]:
    primitive, raw, kwargs = record.op, record.args, record.kwargs
    return [Edge(nodes[id(parent)].id, node.id, i, _derivative(primitive.name, i), _local(primitive, i, raw, kwargs))
            for i, parent in record.parents]  # fmt: skip


def _target_edges(nodes: dict[int, Node], node: Node, record: EngineNode, target: np.ndarray) -> list[Edge]:
    """The loss's target is a plain array, not a tensor: it gets a node of its own (no adjoint)."""
    index = next((i for i, arg in enumerate(record.args) if arg is target), None)
    if index is None:
        return []
    constant = Node(f"n{len(nodes)}", "target", "y", None, np.array(target, dtype=float), None)
    nodes[id(target)] = constant
    return [Edge(constant.id, node.id, index, "constant")]


def _derivative(name: str, argnum: int) -> str:
    return DERIVATIVES.get((name, argnum)) or _catalog_derivative(name) or f"∂{name}/∂arg{argnum}"


def _catalog_derivative(primitive: str) -> str | None:
    """The derivative of the activation or loss that is this engine primitive (an activation composed of several
    operations shows theirs)."""
    from autobp.config.catalog import ACTIVATIONS, LOSSES
    from autobp.engine import Primitive

    for entry in (*ACTIVATIONS.values(), *LOSSES.values()):
        if isinstance(entry.engine, Primitive) and entry.engine.name == primitive:
            return entry.derivative
    return None


def _local(primitive: Any, argnum: int, raw: list, kwargs: dict) -> np.ndarray | None:
    """The primitive's own local derivative, where it is a number per entry: elementwise ops and scalar losses."""
    from autobp.engine.ops import Elementwise

    out = primitive.forward(*raw, **kwargs)
    if isinstance(primitive, Elementwise):
        return np.array(primitive.partial(argnum, out, *raw, **kwargs), dtype=float)
    if np.ndim(out) == 0:  # a loss: ∂L/∂prediction
        return np.array(primitive.vjp(argnum, np.ones((), dtype=out.dtype), out, *raw, **kwargs), dtype=float)
    return None


def _lay_out(nodes: list[Node], edges: list[Edge]) -> None:
    """Operations left to right along row 0; each operation's other inputs in the column before it, above and below."""
    by_id = {node.id: node for node in nodes}
    inputs: dict[str, list[Edge]] = {}
    for edge in edges:
        inputs.setdefault(edge.target, []).append(edge)
    for node in nodes:
        if node.kind != "op":
            continue
        sources = [by_id[e.source] for e in sorted(inputs.get(node.id, []), key=lambda e: e.argnum)]
        chained = [s for s in sources if s.kind == "op"]
        node.column = 1 + max((s.column for s in chained), default=0)
        others = [s for s in sources if s.kind != "op"]
        if not chained and others:  # the first operation: its first input (x) continues the chain
            others[0].column, others[0].row = node.column - 1, 0
            others = others[1:]
        for k, source in enumerate(others):
            source.column, source.row = node.column - 1, (-1 if k % 2 == 0 else 1) * (k // 2 + 1)


# --- building it from a config or a run ------------------------------------------------------------------------


def build_graph(source: Path, example: int = 0) -> ComputationGraph:
    """The graph of a run directory (trained weights, a validation example) or a config (initial weights)."""
    from autobp.common.errors import ConfigError
    from autobp.common.files import load_npz
    from autobp.model.network import MODEL_FILE, build_network
    from autobp.model.prepare import prepare
    from autobp.rundir import layout as rundir
    from autobp.rundir.reader import is_run_dir
    from autobp.training.metrics import loss_targets
    from autobp.training.state import INIT_STREAM

    from_run = is_run_dir(source)
    config_path = source / rundir.CONFIG_FILE if from_run else source
    config, dataset = prepare(config_path)
    network = build_network(config, dataset.n_features, np.random.default_rng([config.seed, INIT_STREAM]))
    if from_run:
        network.load_state_dict(load_npz(source / MODEL_FILE), str(source / MODEL_FILE))
    split, X, y = ("validation", dataset.X_val, dataset.y_val) if len(dataset.X_val) else \
        ("training", dataset.X_train, dataset.y_train)  # fmt: skip
    if not 0 <= example < len(X):
        raise ConfigError(f"--example {example}: the {split} split has {len(X)} examples; choose 0 to {len(X) - 1}")
    dtype = np.dtype(config.training.dtype)
    target = loss_targets(y[example : example + 1], config.loss, dtype)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a diverged run's weights: shown as they are
        nodes, edges = record(network, X[example].astype(dtype), target, config.loss)
    for node in nodes:
        node.standardized = node.kind == "input" and config.data.standardize
    weights = "trained weights" if from_run else "initial weights"
    graph = ComputationGraph(f"{config.name}: computation graph", "", nodes, edges)
    graph.subtitle = f"{split} example {example}, {weights}, {config.training.dtype}; loss {_number(graph.loss)}"
    return graph


# --- showing numbers ----------------------------------------------------------------------------------------------


def _number(value: float) -> str:
    from autobp.common.text import format_number

    return format_number(float(value))


def _shape(array: np.ndarray) -> str:
    return "×".join(map(str, array.shape)) or "scalar"


def describe(array: np.ndarray | None) -> list[str]:
    """Every number of a small array (three to a line); shape, norm and the first few entries of a large one."""
    if array is None:
        return ["-"]
    flat = array.reshape(-1)
    if flat.size > SMALL:
        norm = math.sqrt(float(np.vdot(flat, flat)))
        return [f"{_shape(array)}, ‖·‖ {_number(norm)}", "  " + ", ".join(_number(v) for v in flat[:FEW]) + ", …"]
    numbers = [_number(v) for v in flat]
    if array.ndim == 0:
        return numbers
    lines = [", ".join(numbers[i : i + FEW]) for i in range(0, len(numbers), FEW)] or [""]
    lines = ["[" + lines[0], *(" " + line for line in lines[1:])]
    lines[-1] += "]"
    return lines


def node_lines(node: Node) -> list[str]:
    value = describe(node.value)
    lines = [f"value {value[0]}", *value[1:]]
    if node.kind != "target":
        adjoint = describe(node.adjoint)
        lines += [f"∂L/∂· {adjoint[0]}", *adjoint[1:]]
    return lines


def edge_label(edge: Edge) -> list[str]:
    """The derivative's formula, and its numbers when they are few (or their norm)."""
    if edge.local is None:
        return [edge.derivative]
    if edge.local.size == 1:
        return [edge.derivative, describe(edge.local)[0]]
    return [edge.derivative, f"‖·‖ {_number(_norm(edge.local))}"]


def _norm(array: np.ndarray | None) -> float | None:
    return None if array is None else math.sqrt(float(np.vdot(array, array)))


def _data(array: np.ndarray | None) -> str:
    if array is None or array.size > FULL_DATA:
        return ""
    return json.dumps([v if math.isfinite(v) else None for v in array.reshape(-1).tolist()])


# --- DOT --------------------------------------------------------------------------------------------------------


def to_dot(graph: ComputationGraph) -> str:
    """Graphviz DOT text: left to right, each node with its value and adjoint, each edge with its derivative."""

    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"digraph {quote(graph.title)} {{", "  rankdir=LR;", f"  label={quote(graph.subtitle)};",
             "  node [shape=box, fontname=Helvetica, fontsize=10];", "  edge [fontname=Helvetica, fontsize=9];"]  # fmt: skip
    for node in graph.nodes:
        label = "\\n".join([node.title, *node_lines(node)]).replace('"', '\\"')
        lines.append(f'  {node.id} [label="{label}", style={"rounded" if node.kind == "op" else "filled"}];')
    for edge in graph.edges:
        lines.append(f"  {edge.source} -> {edge.target} [label={quote(' '.join(edge_label(edge)))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- SVG --------------------------------------------------------------------------------------------------------

FILL = {"op": "#e8f0fb", "parameter": "#fdf0dc", "input": "#e6f4e6", "target": "#eeeeee"}
STROKE = {"op": "#3b6db3", "parameter": "#c0832a", "input": "#3c8c3c", "target": "#888888"}


def _height(node: Node) -> int:
    return PAD * 2 + LINE * (1 + len(node_lines(node)))


def _positions(graph: ComputationGraph) -> tuple[dict[str, tuple[float, float, float]], float, float]:
    """Top-left corner and height of every node, and the drawing's size."""
    rows = sorted({node.row for node in graph.nodes})
    tallest = {row: max(_height(n) for n in graph.nodes if n.row == row) for row in rows}
    top, y = {}, 60.0
    for row in rows:
        top[row] = y
        y += tallest[row] + ROW_GAP
    places = {}
    for node in graph.nodes:
        height = _height(node)
        x = 20 + node.column * (NODE_WIDTH + COLUMN_GAP)
        places[node.id] = (x, top[node.row] + (tallest[node.row] - height) / 2, height)
    width = 40 + (max(n.column for n in graph.nodes) + 1) * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP
    return places, width, y - ROW_GAP + 20


def to_svg(graph: ComputationGraph, values: bool = True) -> str:
    """A standalone SVG drawing of the graph, laid out by autobp; `values` keeps every node's full values and adjoints
    in data-* attributes (for tools; the drawing shows them either way)."""
    places, width, height = _positions(graph)
    esc = html.escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="autobp-graph" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica, Arial, sans-serif" font-size="11">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#666"/></marker></defs>',
        f'<text x="20" y="24" font-size="16" font-weight="bold">{esc(graph.title)}</text>',
        f'<text x="20" y="44" font-size="12" fill="#444">{esc(graph.subtitle)}. Values flow left to right; '
        'the adjoints ∂L/∂· flow back along the same edges, each multiplied by the edge\'s local derivative.</text>',
    ]
    for edge in graph.edges:
        parts.append(_svg_edge(edge, places))
    for node in graph.nodes:
        parts.append(_svg_node(node, places[node.id], values))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _svg_edge(edge: Edge, places: dict[str, tuple[float, float, float]]) -> str:
    sx, sy, sh = places[edge.source]
    tx, ty, th = places[edge.target]
    label = edge_label(edge)
    if tx - sx > NODE_WIDTH + COLUMN_GAP and sy + sh / 2 == ty + th / 2:
        # Past the operations between them on the row (an activation made of several): an arc over their tops.
        x1, y1, x2, y2 = sx + NODE_WIDTH / 2, sy, tx + NODE_WIDTH / 2, ty
        lift = 0.75 * ROW_GAP
        curve = f"C {x1:.1f} {y1 - lift:.1f}, {x2:.1f} {y2 - lift:.1f}, {x2:.1f} {y2:.1f}"
        mx, my = (x1 + x2) / 2, y1 - lift / 2 - 12 * len(label)
    else:
        x1, y1, x2, y2 = sx + NODE_WIDTH, sy + sh / 2, tx, ty + th / 2
        bend = (x2 - x1) / 2
        curve = f"C {x1 + bend:.1f} {y1:.1f}, {x2 - bend:.1f} {y2:.1f}, {x2:.1f} {y2:.1f}"
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2 - 4 - 6 * (len(label) - 1)
    text = "".join(f'<tspan x="{mx:.1f}" dy="{0 if i == 0 else 12}">{html.escape(line)}</tspan>'
                   for i, line in enumerate(label))  # fmt: skip
    return (f'<g class="edge" data-source="{edge.source}" data-target="{edge.target}" data-argnum="{edge.argnum}">'
            f'<path d="M {x1:.1f} {y1:.1f} {curve}" '
            'fill="none" stroke="#777" stroke-width="1.3" marker-end="url(#arrow)"/>'
            f'<text text-anchor="middle" y="{my:.1f}" font-size="10" fill="#333" stroke="#fff" stroke-width="3" '
            f'paint-order="stroke">{text}</text></g>')  # fmt: skip


def _svg_node(node: Node, place: tuple[float, float, float], values: bool) -> str:
    x, y, height = place
    esc = html.escape
    attributes = {
        "data-id": node.id, "data-kind": node.kind, "data-op": node.op, "data-layer": node.layer or "",
        "data-shape": json.dumps(list(node.value.shape)), "data-value": _data(node.value) if values else "",
        "data-adjoint": _data(node.adjoint) if values else "", "data-value-norm": repr(_norm(node.value)),
        "data-adjoint-norm": repr(_norm(node.adjoint)),
    }  # fmt: skip
    attrs = " ".join(f'{key}="{esc(value)}"' for key, value in attributes.items())
    lines = [f'<text x="{x + PAD}" y="{y + PAD + 11}" font-weight="bold">{esc(node.title)}</text>']
    for i, line in enumerate(node_lines(node)):
        lines.append(f'<text x="{x + PAD}" y="{y + PAD + 11 + LINE * (i + 1)}">{esc(line)}</text>')
    tooltip = "\n".join([node.title, *node_lines(node)])
    return (f'<g class="node" {attrs}><title>{esc(tooltip)}</title>'
            f'<rect x="{x}" y="{y:.1f}" width="{NODE_WIDTH}" height="{height}" rx="{8 if node.kind == "op" else 2}" '
            f'fill="{FILL[node.kind]}" stroke="{STROKE[node.kind]}" stroke-width="1.4"/>{"".join(lines)}</g>')  # fmt: skip


# --- HTML -------------------------------------------------------------------------------------------------------

PAGE_STYLE = """body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222}
.graph{overflow-x:auto;border:1px solid #ddd;padding:8px;background:#fff}
.legend span{display:inline-block;padding:2px 8px;margin-right:8px;border-radius:4px;border:1px solid}"""


def legend() -> str:
    """What the node colours mean."""
    names = {"op": "operation the engine ran", "parameter": "parameter W, b", "input": "the example x",
             "target": "the target y"}  # fmt: skip
    return '<p class="legend">' + "".join(
        f'<span style="background:{FILL[k]};border-color:{STROKE[k]}">{v}</span>' for k, v in names.items()) + "</p>"


def to_html(graph: ComputationGraph) -> str:
    """A self-contained page with the SVG drawing: no script, no request."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(graph.title)}</title>'
            f"<style>{PAGE_STYLE}</style></head><body>{legend()}<div class=\"graph\">{to_svg(graph)}</div>"
            "</body></html>\n")  # fmt: skip


def render_graph(graph: ComputationGraph, fmt: str) -> str:
    """The graph as `svg`, `dot` or `html`."""
    return {"svg": to_svg, "dot": to_dot, "html": to_html}[fmt](graph)


def write_graph(text: str, out: Path) -> None:
    """Write a rendered graph by the output rule of `files.write_output`."""
    from autobp.common import files

    files.write_output(out, text, "-o")


def output_format(fmt: str | None, out: Path | None) -> str:
    """--format if given, else the output file's suffix (.svg, .dot/.gv, .html), else svg."""
    if fmt is not None:  # one of GRAPH: the CLI's choices
        return fmt
    suffix = out.suffix.lower().lstrip(".") if out is not None else "svg"
    return {"gv": "dot", "htm": "html"}.get(suffix, suffix if suffix in GRAPH else "svg")
