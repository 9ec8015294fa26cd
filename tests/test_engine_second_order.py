"""Second derivatives of every primitive: forward over reverse (`hvp`), reverse over reverse and reverse over forward
agree with each other, with central differences of gradients and with closed forms, for scalars, vectors, matrices
and broadcast pairs, in float64 and float32.

Tolerances: float64 to 1e-6 relative against central differences of float64 gradients (and 1e-9 between the three
ways, which run the same rules); float32 against the float64 result to 2e-4 relative (float32 carries about 7
digits; a Hessian-vector product sums many float32 products, as the VJPs do)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
from test_engine_rules import BINARY, UNARY, any_real, assert_rules_agree, away_from_zero, distinct, values

from autobp.engine import (
    EngineError,
    Tensor,
    binary_cross_entropy,
    cross_entropy,
    dense,
    grad,
    gradients,
    hessian,
    huber,
    hvp,
    jvp,
    mae,
    mse,
    ops,
    relative_error,
)

SHAPES = [(), (4,), (3, 4)]
PAIRS = [((), ()), ((4,), (4,)), ((3, 4), (3, 4)), ((3, 1), (4,)), ((2, 3), ()), ((1, 3), (2, 1))]
FD_STEP = 1e-5
FLOAT64 = 1e-6
FLOAT32 = 2e-4
SAME_RULES = 1e-9


def total(f: Callable) -> Callable:
    """A scalar function of the same inputs: Σ w ⊙ f(x) with fixed weights, so every output entry counts."""
    def scalar(*xs: Tensor) -> Tensor:
        out = f(*xs)
        weights = np.linspace(0.5, 1.5, out.data.size).reshape(out.shape).astype(out.dtype)
        return (out * weights).sum()
    return scalar


def differences_of_gradients(f: Callable, inputs: list[np.ndarray], vectors: list[np.ndarray]) -> list[np.ndarray]:
    gradient = grad(f, list(range(len(inputs))))
    above = gradient(*[x + FD_STEP * v for x, v in zip(inputs, vectors)])
    below = gradient(*[x - FD_STEP * v for x, v in zip(inputs, vectors)])
    return [(a - b) / (2 * FD_STEP) for a, b in zip(above, below)]


def reverse_over_reverse(f: Callable, inputs: list[np.ndarray], vectors: list[np.ndarray]) -> list[np.ndarray]:
    xs = [Tensor(x, requires_grad=True) for x in inputs]
    first = gradients(f(*xs), xs, create_graph=True)
    directional = sum(((g * v).sum() for g, v in zip(first, vectors) if g is not None), Tensor(np.zeros((), xs[0].dtype)))
    if directional.is_leaf:  # the gradient does not depend on the inputs: the Hessian is zero
        return [np.zeros_like(x) for x in inputs]
    return [np.zeros_like(x.data) if g is None else g for g, x in zip(gradients(directional, xs), xs)]


def reverse_over_forward(f: Callable, inputs: list[np.ndarray], vectors: list[np.ndarray]) -> list[np.ndarray]:
    """∇ of the directional derivative ⟨∇f, v⟩, computed by forward mode inside reverse mode."""
    return grad(lambda *xs: jvp(f, xs, vectors)[1], list(range(len(inputs))))(*inputs)


def flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays])


def check_second_order(f: Callable, inputs: list[np.ndarray], seed: int = 0) -> np.ndarray:
    """Every way to H·v agrees, with differences of gradients in float64 and with float64 in float32."""
    rng = np.random.default_rng(seed)
    vectors = [rng.standard_normal(np.shape(x)) for x in inputs]
    exact = flat(hvp(f, inputs, vectors))
    assert np.all(np.isfinite(exact))
    assert relative_error(exact, flat(differences_of_gradients(f, inputs, vectors)), floor=1e-6) < FLOAT64
    assert relative_error(exact, flat(reverse_over_reverse(f, inputs, vectors)), floor=1e-12) < SAME_RULES
    assert relative_error(exact, flat(reverse_over_forward(f, inputs, vectors)), floor=1e-12) < SAME_RULES
    single = [np.asarray(x, dtype=np.float32) for x in inputs]
    by_float32 = hvp(f, single, [v.astype(np.float32) for v in vectors])
    assert all(h.dtype == np.float32 for h in by_float32)
    assert relative_error(exact, flat(by_float32), floor=1e-3) < FLOAT32
    return exact


UNARY_SHAPES = [(case, shape) for case in UNARY for shape in SHAPES if len(shape) >= case.min_dims]


@pytest.mark.parametrize("case,shape", UNARY_SHAPES, ids=[f"{c.name}-{s}" for c, s in UNARY_SHAPES])
def test_unary_second_derivatives(case, shape: tuple[int, ...]) -> None:
    check_second_order(total(case.fn), [values(7, shape, case.domain)])


@pytest.mark.parametrize("shapes", PAIRS, ids=str)
@pytest.mark.parametrize("name,fn,left,right", BINARY, ids=[b[0] for b in BINARY])
def test_binary_second_derivatives_broadcast(name, fn, left, right, shapes) -> None:
    a, b = shapes
    check_second_order(total(fn), [values(3, a, left), values(4, b, right)])


@pytest.mark.parametrize("left,right", [((3, 4), (4, 2)), ((4,), (4, 2)), ((3, 4), (4,)), ((4,), (4,)),
                                        ((2, 3, 4), (4, 2))], ids=str)  # fmt: skip
def test_matmul_second_derivatives(left, right) -> None:
    check_second_order(total(ops.matmul), [values(1, left, any_real), values(2, right, any_real)])


def test_dense_concatenate_and_stack_second_derivatives() -> None:
    check_second_order(total(lambda x, w, b: ops.tanh(dense(x, w, b))),
                       [values(1, (3, 2), any_real), values(2, (2, 4), any_real), values(3, (4,), any_real)])
    blocks = [values(i, (2, 3), any_real) for i in range(3)]
    check_second_order(total(lambda *xs: ops.concatenate(*xs, axis=1) ** 2.0), blocks)
    check_second_order(total(lambda *xs: ops.sin(ops.stack(*xs, axis=1))), blocks)
    check_second_order(total(lambda x: ops.exp(ops.broadcast_to(x, shape=(3, 4)))), [values(5, (4,), any_real)])


@pytest.mark.parametrize("index,shape", [([0, 0, 2], (3, 4)), ((slice(None), [1, 1]), (2, 3)), (2, (4,))], ids=str)
def test_index_add_first_and_second_derivatives(index, shape) -> None:
    """getitem's VJP as a primitive of its own (a repeated index collects every addend), called directly."""
    g = values(6, np.zeros(shape)[index].shape, any_real)
    assert_rules_agree(lambda t: ops.index_add(t, index=index, shape=shape), [g])
    check_second_order(total(lambda t: ops.sin(ops.index_add(t, index=index, shape=shape))), [g])


@pytest.mark.parametrize("shape", [(4,), (3, 2)], ids=str)
def test_loss_second_derivatives_in_both_arguments(shape) -> None:
    pred, target = values(1, shape, any_real), values(2, shape, any_real)
    check_second_order(lambda p, t: mse(ops.tanh(p), t * t), [pred, target])
    check_second_order(lambda p, t: mae(ops.sin(p), t * t), [pred, target + away_from_zero(values(3, shape, any_real))])
    check_second_order(lambda p, t: huber(ops.tanh(p) * 3.0, t * t, delta=0.5),
                       [pred, np.where(np.abs(np.abs(3 * np.tanh(pred) - target**2) - 0.5) < 0.05, 0.1, target)])
    check_second_order(lambda z, y: binary_cross_entropy(z * z, ops.sigmoid(y)), [pred, target])
    labels = np.arange(pred.size // 2) % 2
    check_second_order(lambda z: cross_entropy(ops.tanh(z.reshape(-1, 2)) * 2.0, labels), [pred])


# --- closed forms ------------------------------------------------------------------------------------------------
CLOSED_FORMS = [
    ("exp", ops.exp, any_real, np.exp),
    ("log", ops.log, lambda x: 0.5 + np.abs(x), lambda x: -1.0 / x**2),
    ("sin", ops.sin, any_real, lambda x: -np.sin(x)),
    ("cos", ops.cos, any_real, lambda x: -np.cos(x)),
    ("tanh", ops.tanh, any_real, lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2)),
    ("sigmoid", ops.sigmoid, any_real, lambda x: (s := 1 / (1 + np.exp(-x))) * (1 - s) * (1 - 2 * s)),
    ("softplus", ops.softplus, any_real, lambda x: (s := 1 / (1 + np.exp(-x))) * (1 - s)),
    ("elu", lambda x: ops.elu(x, alpha=1.5), away_from_zero, lambda x: np.where(x > 0, 0.0, 1.5 * np.exp(x))),
    ("sqrt", ops.sqrt, lambda x: 0.5 + np.abs(x), lambda x: -0.25 * x**-1.5),
    ("relu", ops.relu, away_from_zero, np.zeros_like),
    ("leaky_relu", ops.leaky_relu, away_from_zero, np.zeros_like),
    ("abs", ops.abs, away_from_zero, np.zeros_like),
    ("cube", lambda x: x**3.0, any_real, lambda x: 6 * x),
    ("reciprocal", lambda x: 1.0 / x, away_from_zero, lambda x: 2 / x**3),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,fn,domain,second", CLOSED_FORMS, ids=[c[0] for c in CLOSED_FORMS])
def test_elementwise_second_derivatives_match_closed_forms(name, fn, domain, second, dtype) -> None:
    x = values(11, (3, 4), domain)
    (diagonal,) = hvp(lambda t: fn(t).sum(), [x.astype(dtype)], [np.ones(x.shape, dtype)])
    assert diagonal.dtype == dtype
    np.testing.assert_allclose(diagonal, second(x), rtol=FLOAT64 if dtype == np.float64 else FLOAT32, atol=1e-6)


def test_binary_hessians_match_closed_forms() -> None:
    x, y = 1.3, -0.7
    expected = {
        "multiply": [[0, 1], [1, 0]],
        "divide": [[0, -1 / y**2], [-1 / y**2, 2 * x / y**3]],
        "power": [[y * (y - 1) * x ** (y - 2), x ** (y - 1) * (1 + y * np.log(x))],
                  [x ** (y - 1) * (1 + y * np.log(x)), x**y * np.log(x) ** 2]],
    }  # fmt: skip
    functions = {"multiply": lambda a, b: a * b, "divide": lambda a, b: a / b, "power": lambda a, b: a**b}
    for name, f in functions.items():
        np.testing.assert_allclose(hessian(f, [np.array(x), np.array(y)]), expected[name], rtol=1e-12, err_msg=name)


def test_loss_hessians_match_closed_forms() -> None:
    rng = np.random.default_rng(2)
    z, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    np.testing.assert_allclose(hessian(lambda p: mse(p, y), [z]), 2 / z.size * np.eye(z.size), atol=1e-15)
    np.testing.assert_allclose(hessian(lambda p: mae(p, y), [z]), 0.0, atol=0)
    inside = np.abs(z - y).reshape(-1) <= 1.0
    np.testing.assert_allclose(hessian(lambda p: huber(p, y), [z]), np.diag(inside / z.size), atol=1e-15)
    labels = np.array([0, 2, 1, 1])
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    blocks = [np.diag(row) - np.outer(row, row) for row in p]
    expected = np.zeros((12, 12))
    for r, block in enumerate(blocks):
        expected[3 * r : 3 * r + 3, 3 * r : 3 * r + 3] = block / 4
    np.testing.assert_allclose(hessian(lambda q: cross_entropy(q, labels), [z]), expected, atol=1e-15)
    logits = z[:, :1]
    s = 1 / (1 + np.exp(-logits.reshape(-1)))
    np.testing.assert_allclose(hessian(lambda q: binary_cross_entropy(q, (y[:, :1] > 0) * 1.0), [logits]),
                               np.diag(s * (1 - s) / 4), atol=1e-15)  # fmt: skip


def test_derivatives_to_the_fourth_order_by_nesting_grad() -> None:
    x = np.array(0.4)
    d1 = grad(lambda t: ops.tanh(t))
    d2 = grad(lambda t: d1(t))
    d3 = grad(lambda t: d2(t))
    d4 = grad(lambda t: d3(t))
    th = np.tanh(x)
    assert d1(x) == pytest.approx(1 - th**2, rel=1e-14)
    assert d2(x) == pytest.approx(-2 * th * (1 - th**2), rel=1e-14)
    assert d3(x) == pytest.approx((1 - th**2) * (6 * th**2 - 2), rel=1e-13)
    assert d4(x) == pytest.approx(8 * th * (1 - th**2) * (2 - 3 * th**2), rel=1e-12)


def test_forward_over_reverse_over_reverse_gives_third_derivatives() -> None:
    x, v = np.array(0.3), np.array(1.0)
    second = grad(lambda t: grad(lambda s: ops.sin(s) * s)(t))
    _, third = jvp(second, [x], [v])
    assert float(third) == pytest.approx(-3 * np.sin(0.3) - 0.3 * np.cos(0.3), rel=1e-13)


def test_a_jvp_inside_a_jvp_is_refused_with_a_clear_message() -> None:
    with pytest.raises(EngineError, match="one level of tangents"):
        jvp(lambda t: jvp(ops.sin, [t], [np.ones(())])[1], [np.array(0.5)], [np.array(1.0)])


def test_max_distinct_values_have_zero_curvature() -> None:
    x = distinct(np.zeros((3, 4)))
    (h,) = hvp(lambda t: (t.max(axis=1) * t.max(axis=1)).sum(), [x], [np.ones_like(x)])
    hit = x == x.max(axis=1, keepdims=True)
    np.testing.assert_allclose(h, 2.0 * hit, atol=0)  # d²(m²)/dm² = 2 on each row's maximum, 0 elsewhere


# --- the power rule where the function is flat (HIPS autograd's definitions) -------------------------------------
def test_power_at_zero_has_zero_derivatives_where_the_function_is_flat() -> None:
    x = Tensor(np.array([0.0, 2.0]), requires_grad=True)
    (x**0.0).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0]  # x ** 0 is 1 everywhere: not 0 · 0⁻¹ = nan at 0
    y = Tensor(np.array([0.5, 2.0]), requires_grad=True)
    (0.0**y).sum().backward()
    assert y.grad.tolist() == [0.0, 0.0]  # 0 ** y is 0 for y > 0: not 0 · log 0 = nan
    z = Tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
    p = Tensor(np.array(1.5), requires_grad=True)
    (ops.relu(z) ** p).sum().backward()  # the case: a zero in relu(z) made p.grad nan
    assert p.grad == pytest.approx(2.0**1.5 * np.log(2.0), rel=1e-14)
    assert z.grad.tolist() == pytest.approx([0.0, 0.0, 1.5 * 2.0**0.5], rel=1e-14)


def test_power_at_zero_second_derivatives_and_forward_mode_are_finite() -> None:
    assert hessian(lambda x: x**0.0, [np.array(0.0)]).tolist() == [[0.0]]
    assert hessian(lambda y: Tensor(np.array(0.0)) ** y, [np.array(2.0)]).tolist() == [[0.0]]
    assert jvp(lambda x, y: x**y, [np.array(0.0), np.array(0.0)], [np.array(1.0), np.array(1.0)])[1] == 0.0
    h = hessian(lambda x, y: x**y, [np.array(0.0), np.array(3.0)])  # x³ at 0: flat to second order
    assert np.all(np.isfinite(h)) and h.tolist() == [[0.0, 0.0], [0.0, 0.0]]
