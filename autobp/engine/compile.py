"""Compiled steps: one recorded graph replayed as a flat program of the same primitives' rules.

Recording a graph costs Python work on every operation (a Tensor and a node per result, a walk backward);
for small arrays that work outweighs the arithmetic. `compile_graph` takes one recorded graph and writes it out as
one straight-line Python function: the primitives' forward rules in creation order, then their VJPs in exactly the
order `backward` would call them, accumulating in the same order. Calling it on new inputs runs the same
operations on the same dtypes in the same order, so a compiled step gives bit for bit what the interpreter gives.
The graph's structure is frozen: a step that would record differently (another batch shape, another network)
needs its own program.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from autobp.engine.tensor import EngineError, Tensor, recorded, unbroadcast


class Program:
    """A compiled training step: `run(inputs)` computes the loss and every gradient without building a graph.

    After `run`, `loss` is the root's value, `grads[k]` the gradient of parameter k (None if the loss does not
    depend on it), `values` and `gradients` the values of and the gradients reaching the watched tensors. When
    the parameters share one dtype, their gradients are views into one flat buffer, `flat_grad`, so one pass
    over it covers them all (rules with a `vjp_into` write straight into it). The calls are written out as the
    straight-line source of one Python function (see `source`), so a step costs the calls themselves and
    nothing else: no loop, no lookups, each intermediate a local variable.
    """

    def __init__(self, source: str, namespace: dict[str, Any], flat_grad: np.ndarray | None) -> None:
        self.source = source
        self.flat_grad = flat_grad
        exec(compile(source, "<autobp compiled step>", "exec"), namespace)  # noqa: S102 — our own generated code
        self._step = namespace["step"]
        self.loss: np.ndarray | None = None
        self.grads: tuple[np.ndarray | None, ...] = ()
        self.values: tuple[np.ndarray, ...] = ()
        self.gradients: tuple[np.ndarray | None, ...] = ()

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Forward and backward on new `inputs` (same shapes and dtypes as when recorded); returns the loss."""
        self.loss, self.grads, self.values, self.gradients = self._step(*inputs)
        return self.loss


def compile_graph(loss: Tensor, params: Sequence[Tensor], inputs: Sequence[np.ndarray],
                  watch: Sequence[Tensor] = ()) -> Program:  # fmt: skip
    """The program of the graph recorded from `params` and `inputs` to the scalar `loss` (before `backward`).

    `inputs` are the arrays that change from step to step (found in the graph by identity); every other raw
    array the graph used is a constant of the program. `watch` lists recorded tensors whose values and
    gradients the caller wants to read after each run. The graph is left as it was.
    """
    if loss.is_leaf or loss.record.op is None or loss.data.size != 1:
        raise EngineError("compile_graph needs a scalar loss recorded from parameters that require gradients "
                          "(before backward() releases its graph)")
    writer = _Writer(params, inputs)
    nodes = recorded(loss)
    for node in nodes:
        writer.forward(node)
    flat = _flat_buffer(params)
    views = {} if flat is None else {id(p): writer.constant(view, "V") for p, view in zip(params, _views(flat, params))}
    _write_backward(writer, nodes, set(map(id, watch)), views)
    for tensor in watch:
        if id(tensor.data) not in writer.names:
            raise EngineError("compile_graph: a watched tensor is not part of the recorded graph")
    values = [writer.names[id(t.data)] for t in watch]
    grads = [writer.grads.get(id(t), "None") for t in watch]
    param_grads = [writer.grads.get(id(p), "None") for p in params]
    writer.line(f"return {writer.names[id(loss.data)]}, {_tuple(param_grads)}, {_tuple(values)}, {_tuple(grads)}")
    return Program(writer.source(len(inputs)), writer.namespace, flat)


def _flat_buffer(params: Sequence[Tensor]) -> np.ndarray | None:
    """One array to hold every parameter's gradient, if they share a dtype (else None)."""
    dtypes = {p.data.dtype for p in params}
    if len(dtypes) != 1:
        return None
    return np.zeros(sum(p.data.size for p in params), dtypes.pop())


def flat_views(params: Sequence[Tensor]) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """A zeroed array with room for every parameter and parameter-shaped views into it (None: mixed dtypes)."""
    flat = _flat_buffer(params)
    return None if flat is None else (flat, _views(flat, params))


def _views(flat: np.ndarray, params: Sequence[Tensor]) -> list[np.ndarray]:
    """Parameter-shaped, contiguous views into `flat`, one after the other."""
    views, start = [], 0
    for p in params:
        views.append(flat[start : start + p.data.size].reshape(p.data.shape))
        start += p.data.size
    return views


def _tuple(names: list[str]) -> str:
    return f"({', '.join(names)}{',' if len(names) == 1 else ''})"


class _Writer:
    """Writes the body of `step(a0, a1, …)`: names for every array, globals for rules and constants."""

    def __init__(self, params: Sequence[Tensor], inputs: Sequence[np.ndarray]) -> None:
        self.namespace: dict[str, Any] = {
            "asarray": np.asarray, "copyto": np.copyto, "unbroadcast": unbroadcast,
        }  # fmt: skip
        self.names: dict[int, str] = {}  # id of an array → the name it has in the program
        self.grads: dict[int, str] = {}  # id of a tensor → the name of its gradient
        self.lines: list[str] = []
        for k, param in enumerate(params):
            self.namespace[f"P{k}"] = param
            self.names[id(param.data)] = f"p{k}"
            self.line(f"p{k} = P{k}.data")  # read each run: a parameter's array may be replaced between steps
        for k, array in enumerate(inputs):
            self.names[id(array)] = f"a{k}"

    def line(self, text: str) -> None:
        self.lines.append(text)

    def source(self, n_inputs: int) -> str:
        body = "\n".join(f"    {line}" for line in self.lines)
        return f"def step({', '.join(f'a{k}' for k in range(n_inputs))}):\n{body}\n"

    def constant(self, value: Any, prefix: str = "c") -> str:
        name = f"{prefix}{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def name(self, value: Any) -> str:
        """The program's name for a raw argument: a parameter, an input, an earlier result, else a constant."""
        known = self.names.get(id(value))
        return known if known is not None else self.constant(value)

    def rule(self, method: Any) -> str:
        """A readable global name for a primitive's bound rule, e.g. `tanh_vjp` (numbered if the name is taken)."""
        name = f"{getattr(method.__self__, 'name', 'rule')}_{method.__name__}"
        unique, n = name, 1
        while unique in self.namespace and self.namespace[unique] != method:
            unique, n = f"{name}{n}", n + 1
        self.namespace[unique] = method
        return unique

    def call(self, rule: Any, leading: list[str], raw: list[Any], kwargs: dict) -> str:
        args = ", ".join(leading + [self.name(a) for a in raw])
        if kwargs:
            args += f", **{self.constant(kwargs, 'k')}"
        return f"{self.rule(rule)}({args})"

    def forward(self, node: Tensor) -> None:
        record = node.record
        result = f"v{record.number}"
        self.line(f"{result} = {self.call(record.op.forward, [], record.args, record.kwargs)}")
        if node.data.ndim == 0:  # a reduction to a scalar gives a numpy scalar; the interpreter makes it an array
            self.line(f"{result} = asarray({result})")
        self.names[id(node.data)] = result


def _write_backward(writer: _Writer, nodes: list[Tensor], keep: set[int], views: dict[int, str]) -> None:
    """The VJP calls `backward` makes, in its order (the engine's `recorded` order taken from the end), walked once
    on the recorded values so that each call's result shape is known: sums back over broadcast axes only where
    needed. A leaf with a buffer in `views` ends up there: written by the rule itself when its one VJP can, else
    copied."""
    direct: dict[int, tuple[int, str] | None] = {}  # leaf → (line, the same call written into its buffer) or None
    root = nodes[-1]
    seed = writer.grads[id(root)] = f"g{root.record.number}"
    values = {id(root): np.ones(root.data.shape, root.data.dtype)}
    writer.line(f"{seed} = {writer.constant(values[id(root)].copy())}.copy()")  # a fresh copy, as backward's ones
    leaves = 0
    for node in reversed(nodes):
        g = values.pop(id(node))
        record = node.record
        rule, raw, kwargs, number = record.op, record.args, record.kwargs, record.number
        for i, parent in record.parents:
            gi = rule.vjp(i, g, node.data, *raw, **kwargs)
            call = writer.call(rule.vjp, [str(i), f"g{number}", writer.names[id(node.data)]], raw, kwargs)
            if gi.shape != parent.data.shape:
                gi = unbroadcast(gi, parent.data.shape)
                call = f"unbroadcast({call}, {writer.constant(parent.data.shape)})"
            target = writer.grads.get(id(parent))
            if target is not None:
                if not parent.is_leaf:
                    values[id(parent)] = values[id(parent)] + gi
                writer.line(f"{target} = {target} + {call}")
                direct[id(parent)] = None
                continue
            if parent.is_leaf:
                target = f"d{leaves}"
                leaves += 1
                into = getattr(rule, "vjp_into", None)
                if id(parent) in views and into is not None and gi.shape == parent.data.shape:
                    args = [views[id(parent)], str(i), f"g{number}", writer.names[id(node.data)]]
                    direct[id(parent)] = (len(writer.lines), writer.call(into, args, raw, kwargs))
            else:
                target = f"g{parent.record.number}"
                values[id(parent)] = gi
            writer.grads[id(parent)] = target
            writer.line(f"{target} = {call}")
        if id(node) not in keep:
            writer.line(f"del g{number}")  # freed once used, as `backward` frees it
    _land_in_buffers(writer, views, direct)


def _land_in_buffers(writer: _Writer, views: dict[int, str], direct: dict[int, tuple[int, str] | None]) -> None:
    """Put each parameter gradient into its buffer: its one VJP call rewritten to write there, else a copy."""
    for leaf, view in views.items():
        target = writer.grads.get(leaf)
        if target is None:
            continue
        written = direct.get(leaf)
        if written is None:
            writer.line(f"copyto({view}, {target})")
            writer.line(f"{target} = {view}")
        else:
            writer.lines[written[0]] = f"{target} = {written[1]}"

