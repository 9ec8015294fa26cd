"""Functional entry points to both modes of differentiation, and the finite-difference gradient check.

Reverse mode (`vjp`, `grad`) computes uᵀJ for one output cotangent u in one backward pass: a whole gradient of a
scalar loss at the cost of about one forward pass. Forward mode (`jvp`) computes J·v for one input direction v in
the forward pass itself: a full gradient that way takes one pass per parameter, which is why training uses reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from autobp.engine.tensor import Tensor, as_float_array, forward_mode

Function = Callable[..., Tensor]


def _inputs(values: Sequence[Any], requires_grad: bool) -> list[Tensor]:
    return [Tensor(as_float_array(v.data if isinstance(v, Tensor) else v), requires_grad=requires_grad) for v in values]


def jvp(f: Function, inputs: Sequence[Any], tangents: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Forward mode: (f(inputs), J·tangents) from a single forward pass."""
    xs = _inputs(inputs, requires_grad=False)
    for x, t in zip(xs, tangents, strict=True):
        x.tangent = np.asarray(t, dtype=x.data.dtype)
        if x.tangent.shape != x.data.shape:
            raise ValueError(f"jvp: tangent of shape {x.tangent.shape} for an input of shape {x.data.shape}")
    with forward_mode():
        out = f(*xs)
    tangent = out.tangent if out.tangent is not None else np.zeros_like(out.data)
    return out.data, tangent


def vjp(f: Function, inputs: Sequence[Any]) -> tuple[np.ndarray, Callable[[Any], list[np.ndarray]]]:
    """Reverse mode: f(inputs) and a function taking a cotangent u to [uᵀ ∂f/∂xᵢ for each input].

    The graph is recorded once per call of the returned function, since backward releases what it walked.
    """
    out = f(*_inputs(inputs, requires_grad=False))

    def pullback(cotangent: Any) -> list[np.ndarray]:
        xs = _inputs(inputs, requires_grad=True)
        y = f(*xs)
        y.backward(np.asarray(cotangent, dtype=y.data.dtype))
        return [x.grad if x.grad is not None else np.zeros_like(x.data) for x in xs]

    return out.data, pullback


def grad(f: Function, argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    """The gradient function of a scalar-valued f with respect to the arguments in `argnums`."""
    single = isinstance(argnums, int)
    wanted = [argnums] if single else list(argnums)

    def gradient(*inputs: Any) -> Any:
        xs = _inputs(inputs, requires_grad=False)
        for k in wanted:
            xs[k].requires_grad = True
        out = f(*xs)
        out.backward()
        grads = [xs[k].grad if xs[k].grad is not None else np.zeros_like(xs[k].data) for k in wanted]
        return grads[0] if single else grads

    return gradient


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
