"""HIPS autograd's `check_grads`, restated for autobp's engine (the peer suites in test_peers.py run on it).

As in autograd's autograd/test_util.py: reverse mode is checked as ⟨x̄, vjp(ȳ)⟩ against ⟨ȳ, J·x̄⟩ by central
differences (step 1e-6), forward mode as J·v against the same differences, both to 1e-6 absolute or relative
(`scalar_close`), in random directions. At order n > 1 the function (x, ȳ) ↦ vjp(ȳ) is checked at order n − 1 in
both modes (reverse over reverse, forward over reverse) and (x, v) ↦ jvp(v) in reverse mode (reverse over forward).
autograd also checks forward over forward there; autobp's forward mode carries one level of tangents, so that
one combination is left out. The functions are differentiated with respect to all their arguments at once.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from autobp.engine import Tensor, jvp, ops, vjp

TOL = 1e-6
RTOL = 1e-6
EPS = 1e-6


def scalar_close(a: float, b: float) -> bool:
    return abs(a - b) < TOL or abs(a - b) / abs(a + b) < RTOL


def _array(value: Any) -> np.ndarray:
    return np.asarray(value.data if isinstance(value, Tensor) else value, dtype=np.float64)


def numerical_jvp(f: Callable, xs: Sequence[np.ndarray], vs: Sequence[np.ndarray]) -> np.ndarray:
    """(f(x + εv/2) − f(x − εv/2)) / ε, with plain tensors in."""
    above = _array(f(*[Tensor(x + v * EPS / 2) for x, v in zip(xs, vs)]))
    below = _array(f(*[Tensor(x - v * EPS / 2) for x, v in zip(xs, vs)]))
    return (above - below) / EPS


def check_vjp(f: Callable, xs: list[np.ndarray], rng: np.random.Generator) -> None:
    value, pullback = vjp(f, xs)
    x_v = [rng.standard_normal(x.shape) for x in xs]
    y_v = rng.standard_normal(np.shape(value))
    exact = float(sum(np.sum(a * _array(b)) for a, b in zip(x_v, pullback(y_v))))
    numeric = float(np.sum(y_v * numerical_jvp(f, xs, x_v)))
    assert scalar_close(numeric, exact), f"VJP check failed: analytic {exact}, numeric {numeric}"


def check_jvp(f: Callable, xs: list[np.ndarray], rng: np.random.Generator) -> None:
    vs = [rng.standard_normal(x.shape) for x in xs]
    _, tangent = jvp(f, xs, vs)
    numeric = numerical_jvp(f, xs, vs)
    w = rng.standard_normal(numeric.shape)
    exact, approx = float(np.sum(_array(tangent) * w)), float(np.sum(numeric * w))
    assert scalar_close(exact, approx), f"JVP check failed: analytic {exact}, numeric {approx}"


def _flat(arrays: Sequence[Any]) -> Tensor:
    """Several gradients as one vector, in engine operations (so an outer transform can differentiate it)."""
    return ops.concatenate(*[ops.reshape(a, shape=(int(np.size(_array(a))),)) for a in arrays])


def check_grads(f: Callable, *args: Any, order: int = 2, modes: Sequence[str] = ("fwd", "rev"), seed: int = 0) -> None:
    """autograd's check_grads(f, modes, order)(*args), over all arguments together."""
    xs = [np.array(a, dtype=np.float64) for a in args]
    rng = np.random.default_rng(seed)
    n = len(xs)
    if "fwd" in modes:
        check_jvp(f, xs, rng)
        if order > 1:
            def jvp_f(*inputs: Any) -> Any:
                return jvp(f, inputs[:n], inputs[n:])[1]

            vs = [rng.standard_normal(x.shape) for x in xs]
            check_grads(jvp_f, *xs, *vs, order=order - 1, modes=("rev",), seed=seed + 1)
    if "rev" in modes:
        check_vjp(f, xs, rng)
        if order > 1:
            def vjp_f(*inputs: Any) -> Tensor:
                return _flat(vjp(f, inputs[:n])[1](inputs[n]))

            u = rng.standard_normal(np.shape(_array(f(*[Tensor(x) for x in xs]))))
            check_grads(vjp_f, *xs, u, order=order - 1, modes=modes, seed=seed + 2)
