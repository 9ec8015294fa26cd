"""The `Tensor`, the `Primitive` every operation is an instance of, and the reverse pass.

A tensor that requires a gradient and was made by a primitive remembers it in a `Node`: that primitive, the raw
arrays it was called with, and which of its arguments were tensors needing gradients (its parents). `recorded`
lists a graph's nodes in creation order; `backward()` visits them in that order from the end, asking each primitive
for its vector-Jacobian product (VJP) once per parent, and the compiler and the graph view walk the same list. Forward
mode rides along the forward pass instead: when a tensor carries a tangent, each primitive also applies its
Jacobian-vector product (JVP) to it.

Derivatives of derivatives: `gradients(..., create_graph=True)` runs each primitive's `vjp_graph`, the same VJP
written in engine operations, so the gradients it returns are tensors with a graph of their own (reverse over
reverse) and carry tangents when forward mode is on (forward over reverse). A tangent that is itself a tensor is
pushed by `jvp_graph` and recorded (reverse over forward). Forward mode carries one level of tangents.
"""

from __future__ import annotations

from contextlib import contextmanager
from heapq import heappop, heappush
from itertools import count
from typing import Any, Iterator, NamedTuple

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class EngineError(ValueError):
    """An operation got arguments it cannot combine: shapes that do not broadcast, mixed float dtypes."""


class _Mode:
    """Global switches read on every primitive call: record a graph? propagate tangents? And how many functional
    transforms (`grad`, `jvp`, …) are running, so an inner one knows to return tensors the outer can differentiate."""

    __slots__ = ("record", "forward", "nesting")

    def __init__(self) -> None:
        self.record = True
        self.forward = 0
        self.nesting = 0


_mode = _Mode()
_created = count()  # numbers recorded nodes in creation order, which is a topological order


@contextmanager
def no_grad() -> Iterator[None]:
    """Inside this block no graph is recorded: results never require gradients (evaluation, updates)."""
    previous = _mode.record
    _mode.record = False
    try:
        yield
    finally:
        _mode.record = previous


@contextmanager
def _counted(switch: str) -> Iterator[None]:
    setattr(_mode, switch, getattr(_mode, switch) + 1)
    try:
        yield
    finally:
        setattr(_mode, switch, getattr(_mode, switch) - 1)


def forward_mode() -> Any:
    """Inside this block primitives push the tangents of their inputs forward (used by `jvp`)."""
    return _counted("forward")


def transform_running() -> Any:
    """Inside this block a functional transform runs its function: transforms called there know they are nested."""
    return _counted("nesting")


def as_float_array(value: Any, dtype: Any = None) -> np.ndarray:
    """`value` as a float32 or float64 array: float32 stays float32, anything else becomes float64."""
    array = np.asarray(value, dtype=dtype)
    if array.dtype in FLOAT_DTYPES:
        return array
    return array.astype(np.float64)


class Tensor:
    """A numpy array that can record how it was computed, so gradients can flow back through it."""

    __slots__ = ("data", "grad", "requires_grad", "tangent", "_node", "_retain")
    __array_priority__ = 100.0  # so `ndarray + Tensor` defers to Tensor.__radd__

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None) -> None:
        self.data = as_float_array(data, dtype)
        self.grad: np.ndarray | None = None
        self.requires_grad = requires_grad
        self.tangent: np.ndarray | Tensor | None = None  # a tensor when the tangent is itself differentiated
        self._node: tuple | None = None  # a Node's fields (see `record`); None for leaves, RELEASED after backward
        self._retain = False

    # --- plain array facts -------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def parents(self) -> tuple[Tensor, ...]:
        """The tensors this one was computed from that need gradients (empty for leaves and released nodes)."""
        return () if self._node is None else tuple(parent for _, parent in self._node[_PARENTS])

    @property
    def record(self) -> Node | None:
        """How this tensor was computed, as a named `Node`: None for a leaf, `op` None once backward released it."""
        return None if self._node is None else Node._make(self._node)

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        return self.data.item()

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        record = self.record
        op = f", op={record.op.name}" if record is not None and record.op is not None else ""
        flag = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=8)}{flag}{op})"

    # --- graph control -----------------------------------------------------------------------------------------
    def detach(self) -> Tensor:
        """The same values, cut from the graph."""
        return Tensor(self.data)

    def retain_grad(self) -> Tensor:
        """Keep the gradient that reaches this intermediate tensor in `.grad` after `backward()`."""
        self._retain = True
        return self

    def zero_grad(self) -> None:
        self.grad = None

    def backward(self, grad: Any = None) -> None:
        """Backpropagate from this tensor: scalars need no `grad`, other shapes need the upstream gradient.

        The graph walked is released; walking it again (a second `backward()`) raises EngineError."""
        if grad is None:
            if self.data.size != 1:
                raise EngineError(
                    f"backward() on a tensor of shape {self.data.shape} needs an upstream gradient of that shape"
                )
            grad = np.ones(self.data.shape, self.data.dtype)
        else:
            grad = np.asarray(grad, dtype=self.data.dtype)
            if grad.shape != self.data.shape:
                raise EngineError(f"backward(): gradient of shape {grad.shape} for a tensor of shape {self.data.shape}")
        backward(self, grad)

    # --- operators: constants take the tensor's dtype so float32 stays float32 ---------------------------------
    def _constant(self, other: Any) -> Any:
        if type(other) is Tensor:
            return other
        return np.asarray(other, dtype=self.data.dtype)

    def __add__(self, other: Any) -> Tensor:
        return ops.add(self, self._constant(other))

    def __radd__(self, other: Any) -> Tensor:
        return ops.add(self._constant(other), self)

    def __sub__(self, other: Any) -> Tensor:
        return ops.subtract(self, self._constant(other))

    def __rsub__(self, other: Any) -> Tensor:
        return ops.subtract(self._constant(other), self)

    def __mul__(self, other: Any) -> Tensor:
        return ops.multiply(self, self._constant(other))

    def __rmul__(self, other: Any) -> Tensor:
        return ops.multiply(self._constant(other), self)

    def __truediv__(self, other: Any) -> Tensor:
        return ops.divide(self, self._constant(other))

    def __rtruediv__(self, other: Any) -> Tensor:
        return ops.divide(self._constant(other), self)

    def __pow__(self, other: Any) -> Tensor:
        return ops.power(self, self._constant(other))

    def __rpow__(self, other: Any) -> Tensor:
        return ops.power(self._constant(other), self)

    def __matmul__(self, other: Any) -> Tensor:
        return ops.matmul(self, self._constant(other))

    def __rmatmul__(self, other: Any) -> Tensor:
        return ops.matmul(self._constant(other), self)

    def __neg__(self) -> Tensor:
        return ops.negative(self)

    def __getitem__(self, index: Any) -> Tensor:
        return ops.getitem(self, index=index)

    # Comparisons give plain boolean arrays: they have no gradient (use them with `where`).
    def __lt__(self, other: Any) -> np.ndarray:
        return self.data < _raw(other)

    def __le__(self, other: Any) -> np.ndarray:
        return self.data <= _raw(other)

    def __gt__(self, other: Any) -> np.ndarray:
        return self.data > _raw(other)

    def __ge__(self, other: Any) -> np.ndarray:
        return self.data >= _raw(other)

    # --- methods mirroring numpy -------------------------------------------------------------------------------
    @property
    def T(self) -> Tensor:
        return ops.transpose(self)

    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return ops.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return ops.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return ops.max(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return ops.reshape(self, shape=shape)

    def transpose(self, *axes: int) -> Tensor:
        return ops.transpose(self, axes=axes or None)

    def exp(self) -> Tensor:
        return ops.exp(self)

    def log(self) -> Tensor:
        return ops.log(self)

    def tanh(self) -> Tensor:
        return ops.tanh(self)

    def sigmoid(self) -> Tensor:
        return ops.sigmoid(self)

    def relu(self) -> Tensor:
        return ops.relu(self)

    def sqrt(self) -> Tensor:
        return ops.sqrt(self)

    def abs(self) -> Tensor:
        return ops.abs(self)


def _raw(value: Any) -> Any:
    return value.data if type(value) is Tensor else value


_new_tensor = object.__new__


class Primitive:
    """One differentiable operation: its forward rule and, per argument i, its VJP (Jᵢᵀg) and JVP (Jᵢt).

    Subclasses define `forward(*args, **kw)`, `vjp(i, g, out, *args, **kw)` and `jvp(i, t, out, *args, **kw)`
    on raw numpy arrays; `out` is the forward result, which many rules reuse. Broadcasting is undone in one
    place (`unbroadcast`), so a rule may return a gradient of the broadcast shape. `vjp_graph` and `jvp_graph` are
    the same rules on tensors (g, t, out and the arguments that are tensors), built from engine operations so they
    can be differentiated again; by default they are `vjp` and `jvp` themselves, for rules whose arithmetic
    tensors support as well as arrays.
    """

    name = "primitive"

    def forward(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise NotImplementedError

    def vjp(self, i: int, g: np.ndarray, out: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        raise NotImplementedError

    def jvp(self, i: int, t: np.ndarray, out: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        raise NotImplementedError

    def vjp_graph(self, i: int, g: Tensor, out: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.vjp(i, g, out, *args, **kwargs)

    def jvp_graph(self, i: int, t: Tensor, out: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.jvp(i, t, out, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<primitive {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        # The hot path of every forward pass: one loop over the arguments, no validation beyond dtypes.
        raw = []
        parents = []
        dtype = None
        for i, a in enumerate(args):
            if type(a) is Tensor:
                data = a.data
                if dtype is None:
                    dtype = data.dtype
                elif data.dtype is not dtype:
                    _dtype_mismatch(self.name, args)
                raw.append(data)
                if a.requires_grad:
                    parents.append((i, a))
            else:
                raw.append(a)
        try:
            # Spelled twice because a call without `**{}` is measurably cheaper, and this runs for every operation.
            out = self.forward(*raw, **kwargs) if kwargs else self.forward(*raw)
        except (ValueError, IndexError, TypeError) as exc:
            raise EngineError(_describe_failure(self.name, raw, exc)) from None
        if type(out) is not np.ndarray:
            out = np.asarray(out)
        if out.dtype is not dtype and dtype is not None:
            _dtype_mismatch(self.name, args, out.dtype)
        result = _new_tensor(Tensor)  # the hot path: skip __init__, whose conversions `out` does not need
        result.data = out
        result.grad = result.tangent = None
        result._retain = False
        if parents and _mode.record:
            result.requires_grad = True
            result._node = (self, parents, raw, kwargs, next(_created), args)  # a Node's fields, in order
        else:
            result.requires_grad = False
            result._node = None
        if _mode.forward:
            result.tangent = self._push_tangents(args, raw, result, kwargs)
        return result

    def _push_tangents(self, args: tuple, raw: list, result: Tensor, kwargs: dict) -> Any:
        # Forward mode: J·t = Σᵢ Jᵢ·tᵢ over the arguments that carry a tangent.
        out = result.data
        total = None
        for i, a in enumerate(args):
            if type(a) is Tensor and a.tangent is not None:
                if type(a.tangent) is Tensor:
                    return self._push_tensor_tangents(args, result, kwargs)
                term = self.jvp(i, a.tangent, out, *raw, **kwargs)
                total = term if total is None else total + term
        if total is None or total.shape == out.shape:
            return total
        return np.broadcast_to(total, out.shape).copy()

    def _push_tensor_tangents(self, args: tuple, result: Tensor, kwargs: dict) -> Tensor:
        """Tangents that are tensors (reverse over forward): `jvp_graph`, recorded, with forward mode off while
        it runs, so the tangent's own operations push no tangents (one level of forward mode)."""
        _mode.forward, level = 0, _mode.forward
        try:
            total = None
            for i, a in enumerate(args):
                if type(a) is Tensor and a.tangent is not None:
                    term = self.jvp_graph(i, a.tangent, result, *args, **kwargs)
                    total = term if total is None else total + term
            if total.shape != result.shape:
                total = ops.broadcast_to(total, shape=result.shape)
            return total
        finally:
            _mode.forward = level


def _describe_failure(name: str, raw: tuple, exc: Exception) -> str:
    shapes = " and ".join(str(np.shape(a)) for a in raw if isinstance(a, np.ndarray)) or "scalars"
    return f"{name}: cannot combine shapes {shapes} ({exc})"


def _dtype_mismatch(name: str, args: tuple, result: np.dtype | None = None) -> None:
    dtypes = {str(a.data.dtype) for a in args if type(a) is Tensor}
    if result is not None:
        dtypes.add(str(result))  # a float64 constant would silently promote a float32 tensor
    raise EngineError(
        f"{name}: mixes {' and '.join(sorted(dtypes))} values; convert one of them explicitly "
        f"(e.g. Tensor(x.data.astype(np.float32))) so the graph keeps one dtype"
    )


def unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a gradient of a broadcast result back down to an input's `shape` (leading and size-1 dims)."""
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    stretched = tuple(axis for axis, n in enumerate(shape) if n == 1 and g.shape[axis] != 1)
    if stretched:
        g = g.sum(axis=stretched, keepdims=True)
    return g


class Node(NamedTuple):
    """How a recorded tensor was computed: the primitive, its parents as (argnum, tensor) pairs (the arguments that
    needed gradients), the raw arguments and keyword arguments it was called with, its creation number, and the
    arguments as given (tensors still tensors, for the rules on tensors: they may carry tangents).

    A tensor holds these fields as a plain tuple in this order, and `Tensor.record` gives them as a Node: building
    and freeing a Node (a tuple subclass) for every operation cost the interpreter's small steps 3%. Only this
    module reads the tuple, by these field positions; everything else reads `record`.
    """

    op: Any  # the Primitive; None only in RELEASED
    parents: list[tuple[int, Tensor]]
    args: list[Any]
    kwargs: dict[str, Any]
    number: int
    inputs: tuple[Any, ...]


_PARENTS, _NUMBER = Node._fields.index("parents"), Node._fields.index("number")
RELEASED = tuple(Node(None, [], [], {}, -1, ()))  # the record of a tensor whose graph backward() walked and freed


def _number(tensor: Tensor) -> int:
    return tensor._node[_NUMBER]


def recorded(root: Tensor) -> list[Tensor]:
    """Every recorded tensor `root` depends on, `root` included, in creation order, which is a topological order.

    The one traversal order of the engine: the compiler writes the forward pass in this order, and `backward`,
    `gradients` and the compiler's reverse pass take it from the end, so each tensor is visited after every
    tensor that consumed it and gradients are summed in the same order everywhere (which bit-identity needs);
    the graph view draws it.
    """
    if root._node is RELEASED:
        raise _released()
    seen = {root}
    stack = [root]
    while stack:
        for _, parent in stack.pop()._node[_PARENTS]:
            if parent._node is not None and parent not in seen:
                if parent._node is RELEASED:
                    raise _released()
                seen.add(parent)
                stack.append(parent)
    return sorted(seen, key=_number)


def _released() -> EngineError:
    return EngineError(
        "backward through a graph that an earlier backward() already walked and released; run the forward pass "
        "again to record a new graph (or take several derivatives from one graph with autobp.engine.gradients)"
    )


def backward(root: Tensor, grad: np.ndarray) -> None:
    """The reverse pass: push `grad` from `root` to every leaf, accumulating in `.grad`, then release the graph.

    It visits the nodes in `recorded` order from the end, finding them as it goes: a heap on creation numbers
    pops them newest first, which is that order (every consumer of a node was created after it, so it pops
    first), without a separate pass over the graph, which would cost the interpreter's step a few percent
    (tests/test_engine_tensor.py checks the two orders agree). Each gradient is freed as soon as it has been
    used, and each node's record as soon as its VJPs have run.
    """
    if root._node is None:
        root.grad = grad if root.grad is None else root.grad + grad
        return
    if root._node is RELEASED:
        raise _released()
    grads = {root: grad}
    pending = [(-root._node[_NUMBER], root)]
    while pending:
        node = heappop(pending)[1]
        g = grads.pop(node)
        if node._retain:
            node.grad = g if node.grad is None else node.grad + g
        op, parents, args, kwargs, _, _ = node._node
        out = node.data
        for i, parent in parents:
            gi = op.vjp(i, g, out, *args, **kwargs) if kwargs else op.vjp(i, g, out, *args)
            if gi.shape != parent.data.shape:
                gi = unbroadcast(gi, parent.data.shape)
            record = parent._node
            if record is None:  # a leaf: its gradient accumulates where the user reads it
                parent.grad = gi if parent.grad is None else parent.grad + gi
            elif parent in grads:
                grads[parent] = grads[parent] + gi
            elif record is RELEASED:
                raise _released()
            else:
                grads[parent] = gi
                heappush(pending, (-record[_NUMBER], parent))
        # Release the graph: the node keeps its value (and a retained gradient) but no longer pins its inputs.
        node._node = RELEASED
        node.requires_grad = False


def gradients(root: Tensor, inputs: list[Tensor], seed: Any = None, create_graph: bool = False) -> list[Any]:
    """∂⟨seed, root⟩/∂x for each x of `inputs` (None where root does not depend on x); the graph is kept.

    `seed` defaults to ones. With `create_graph` the VJPs run as engine operations (`vjp_graph`): the gradients
    are tensors, recorded when recording is on (to differentiate them again) and carrying tangents when forward
    mode is on; else they are arrays, computed by the same rules as `backward`. `.grad` is left alone.
    """
    if seed is None:
        seed = np.ones(root.data.shape, root.data.dtype)
    if create_graph and type(seed) is not Tensor:
        seed = Tensor(seed, dtype=root.data.dtype)
    wanted: dict[Tensor, Any] = dict.fromkeys(inputs)
    grads = {root: seed}
    order = recorded(root) if root._node is not None else []
    while order:
        node = order.pop()
        g = grads.pop(node)
        if node in wanted:
            wanted[node] = g
        op, parents, args, kwargs, _, given = node._node
        rule, out, args = (op.vjp_graph, node, given) if create_graph else (op.vjp, node.data, args)
        for i, parent in parents:
            gi = rule(i, g, out, *args, **kwargs)
            if create_graph and type(gi) is not Tensor:
                gi = Tensor(gi, dtype=root.data.dtype)
            if gi.shape != parent.data.shape:
                gi = unbroadcast(gi, parent.data.shape)
            grads[parent] = grads[parent] + gi if parent in grads else gi
    for x in wanted:
        if x in grads:  # leaves are never taken off the order
            wanted[x] = grads[x]
    return [wanted[x] for x in inputs]


from autobp.engine import ops  # noqa: E402  (ops builds on Primitive and Tensor above)
