"""Functional entry points to both modes of differentiation, their compositions, and the finite-difference check.

Reverse mode (`vjp`, `grad`) computes uᵀJ for one output cotangent u in one backward pass: a whole gradient of a
scalar loss at the cost of about one forward pass. Forward mode (`jvp`) computes J·v for one input direction v in
the forward pass itself: a full gradient that way takes one pass per parameter, which is why training uses reverse.
Forward over reverse (`hvp`) gives a Hessian-vector product H·v for about the cost of two gradients.

Called on arrays, each function returns arrays. Called inside another one (on the tensors it passes to its
function), each returns tensors the outer one differentiates: `grad(lambda x: grad(f)(x).sum())`,
`jvp(grad(f), …)` and `grad(lambda x: jvp(f, [x], [v])[1])` all work, to any depth of reverse mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from autobp.engine import ops
from autobp.engine.tensor import (
    EngineError, Tensor, _mode, as_float_array, forward_mode, gradients, no_grad, transform_running,
)

Function = Callable[..., Tensor]


def _nested(inputs: Sequence[Any]) -> bool:
    return _mode.nesting > 0 or any(type(v) is Tensor and (v.requires_grad or v.tangent is not None) for v in inputs)


def _inputs(values: Sequence[Any], requires_grad: bool) -> list[Tensor]:
    return [Tensor(as_float_array(v.data if isinstance(v, Tensor) else v), requires_grad=requires_grad) for v in values]


def _variable(value: Any) -> Tensor:
    """A tensor to differentiate with respect to, still connected to `value` if an outer transform follows it."""
    if type(value) is not Tensor:
        return Tensor(as_float_array(value), requires_grad=True)
    if value.requires_grad:
        return value
    variable = Tensor(value.data, requires_grad=True)
    variable.tangent = value.tangent  # forward over reverse: the outer jvp's direction rides along
    return variable


def _zeros_if_none(grads: list[Any], like: Sequence[Tensor], as_tensor: bool) -> list[Any]:
    zeros = [np.zeros_like(x.data) for x in like]
    if as_tensor:
        return [Tensor(z) if g is None else g for g, z in zip(grads, zeros)]
    return [z if g is None else g for g, z in zip(grads, zeros)]


def jvp(f: Function, inputs: Sequence[Any], tangents: Sequence[Any]) -> tuple[Any, Any]:
    """Forward mode: (f(inputs), J·tangents) from a single forward pass."""
    if _nested(inputs):
        return _nested_jvp(f, inputs, tangents)
    xs = _inputs(inputs, requires_grad=False)
    for x, t in zip(xs, tangents, strict=True):
        x.tangent = np.asarray(t.data if type(t) is Tensor else t, dtype=x.data.dtype)
        if x.tangent.shape != x.data.shape:
            raise ValueError(f"jvp: tangent of shape {x.tangent.shape} for an input of shape {x.data.shape}")
    with forward_mode(), transform_running():
        out = f(*xs)
    tangent = out.tangent if out.tangent is not None else np.zeros_like(out.data)
    return out.data, tangent


def _nested_jvp(f: Function, inputs: Sequence[Any], tangents: Sequence[Any]) -> tuple[Tensor, Tensor]:
    """jvp inside another transform: tangents are tensors, recorded, so an outer reverse mode differentiates them."""
    xs = []
    for value, t in zip(inputs, tangents, strict=True):
        if type(value) is Tensor and value.tangent is not None:
            raise EngineError("jvp inside jvp: forward mode carries one level of tangents; use reverse mode outside")
        # An identity that is recorded keeps x connected to the outer transform's variable, yet gets its own tangent.
        x = ops.reshape(value, shape=np.shape(value.data)) if type(value) is Tensor else Tensor(as_float_array(value))
        x.tangent = t if type(t) is Tensor else Tensor(np.asarray(t, dtype=x.data.dtype))
        xs.append(x)
    with forward_mode(), transform_running():
        out = f(*xs)
    return out, out.tangent if out.tangent is not None else Tensor(np.zeros_like(out.data))


def vjp(f: Function, inputs: Sequence[Any]) -> tuple[Any, Callable[[Any], list[Any]]]:
    """Reverse mode: f(inputs) and a function taking a cotangent u to [uᵀ ∂f/∂xᵢ for each input].

    The graph is recorded once and kept, so the returned function may be called for many cotangents.
    """
    nested = _nested(inputs)
    xs = [_variable(v) for v in inputs]
    with transform_running():
        out = f(*xs)

    def pullback(cotangent: Any) -> list[Any]:
        if nested and type(cotangent) is Tensor:
            seed = cotangent
        else:
            seed = np.asarray(cotangent.data if type(cotangent) is Tensor else cotangent, dtype=out.data.dtype)
        if seed.shape != out.data.shape:
            raise ValueError(f"vjp: cotangent of shape {seed.shape} for an output of shape {out.data.shape}")
        return _zeros_if_none(gradients(out, xs, seed, create_graph=nested), xs, nested)

    return (out if nested else out.data), pullback


def grad(f: Function, argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    """The gradient function of a scalar-valued f with respect to the arguments in `argnums`."""
    single = isinstance(argnums, int)
    wanted = [argnums] if single else list(argnums)

    def gradient(*inputs: Any) -> Any:
        if _nested(inputs):
            xs = list(inputs)
            for k in wanted:
                xs[k] = _variable(inputs[k])
            with transform_running():
                out = f(*xs)
            variables = [xs[k] for k in wanted]
            grads = _zeros_if_none(gradients(out, variables, create_graph=True), variables, as_tensor=True)
        else:
            xs = _inputs(inputs, requires_grad=False)
            for k in wanted:
                xs[k].requires_grad = True
            with transform_running():
                out = f(*xs)
            out.backward()
            grads = _zeros_if_none([xs[k].grad for k in wanted], [xs[k] for k in wanted], as_tensor=False)
        return grads[0] if single else grads

    return gradient


def hvp(f: Function, params: Sequence[np.ndarray], vectors: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The Hessian of the scalar f(*params) times `vectors`, H·v, by forward over reverse (about two gradients).

    One forward pass carries the tangents v; the reverse pass then runs the VJPs as engine operations, which
    push those tangents too, so each gradient's tangent is its directional derivative along v: a row block of H·v.
    """
    xs = _inputs(params, requires_grad=True)
    for x, v in zip(xs, vectors, strict=True):
        x.tangent = np.asarray(v, dtype=x.data.dtype)
        if x.tangent.shape != x.data.shape:
            raise ValueError(f"hvp: vector of shape {x.tangent.shape} for a parameter of shape {x.data.shape}")
    with forward_mode(), transform_running():
        out = f(*xs)
        if out.data.size != 1:
            raise ValueError(f"hvp: f must return a scalar, not an array of shape {out.data.shape}")
        with no_grad():  # the reverse pass pushes tangents; nothing needs recording
            grads = gradients(out, xs, create_graph=True)
    return [np.zeros_like(x.data) if g is None or g.tangent is None else g.tangent for g, x in zip(grads, xs)]


def hessian(f: Function, params: Sequence[np.ndarray]) -> np.ndarray:
    """The full Hessian of the scalar f(*params) over all parameters flattened in order, one `hvp` per column
    (for small parameter counts: n² numbers)."""
    arrays = [as_float_array(p.data if isinstance(p, Tensor) else p) for p in params]
    sizes = [a.size for a in arrays]
    total = sum(sizes)
    columns = []
    for j in range(total):
        unit = np.zeros(total)
        unit[j] = 1.0
        pieces = np.split(unit, np.cumsum(sizes)[:-1])
        vectors = [piece.reshape(a.shape).astype(a.dtype) for piece, a in zip(pieces, arrays)]
        columns.append(np.concatenate([h.reshape(-1) for h in hvp(f, arrays, vectors)]))
    return np.stack(columns, axis=1) if columns else np.zeros((0, 0))


@dataclass
class GradcheckResult:
    """Largest relative error of reverse-mode gradients against central differences, per input."""

    errors: list[float]
    tolerance: float

    @property
    def ok(self) -> bool:
        return all(e <= self.tolerance for e in self.errors)

    @property
    def max_error(self) -> float:
        return max(self.errors, default=0.0)


def relative_error(a: np.ndarray, b: np.ndarray, floor: float = 0.0) -> float:
    """max|a − b| scaled by the larger of the two arrays' magnitudes, or by `floor` if that is larger (0 when both
    are exactly zero). A floor makes differences far below it count as absolute ones, so an exact zero can pass."""
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)), floor)
    if scale == 0.0:
        return 0.0
    return float(np.max(np.abs(a - b), initial=0.0)) / scale


def numerical_gradient(f: Function, inputs: Sequence[np.ndarray], k: int, eps: float = 1e-6) -> np.ndarray:
    """∂f/∂inputs[k] by central differences, (f(x + εeⱼ) − f(x − εeⱼ)) / 2ε, one element at a time, in float64."""
    values = [np.array(v, dtype=np.float64) for v in inputs]
    flat = values[k].reshape(-1)
    result = np.empty_like(flat)

    def evaluate() -> float:
        return float(f(*[Tensor(v) for v in values]).data.sum())

    for j in range(flat.size):
        saved = flat[j]
        flat[j] = saved + eps
        above = evaluate()
        flat[j] = saved - eps
        below = evaluate()
        flat[j] = saved
        result[j] = (above - below) / (2 * eps)
    return result.reshape(values[k].shape)


def gradcheck(f: Function, inputs: Sequence[Any], eps: float = 1e-6, tolerance: float = 1e-6) -> GradcheckResult:
    """Compare the reverse-mode gradient of sum(f(inputs)) with central finite differences, in float64."""
    values = [np.array(v.data if isinstance(v, Tensor) else v, dtype=np.float64) for v in inputs]
    analytic = grad(lambda *xs: f(*xs).sum(), list(range(len(values))))(*values)
    errors = [relative_error(a, numerical_gradient(f, values, k, eps)) for k, a in enumerate(analytic)]
    return GradcheckResult(errors=errors, tolerance=tolerance)
