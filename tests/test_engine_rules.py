"""Every primitive's VJP against central finite differences, and its JVP against its VJP (dot-product test).

Shapes come from hypothesis, broadcasting and size-1 dimensions included. Inputs are kept away from kinks
(relu at 0, abs at 0, ties of max/maximum) where a finite difference is not a derivative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from autobp.engine import (
    binary_cross_entropy,
    cross_entropy,
    dense,
    gradcheck,
    huber,
    jvp,
    mae,
    mse,
    ops,
    vjp,
)

TOLERANCE = 1e-6
PROFILE = settings(max_examples=12, deadline=None, derandomize=True)


def any_real(x: np.ndarray) -> np.ndarray:
    return x


def positive(x: np.ndarray) -> np.ndarray:
    return 0.5 + np.abs(x)


def away_from_zero(x: np.ndarray) -> np.ndarray:
    return np.sign(x + 1e-12) * (0.2 + np.abs(x))


def distinct(x: np.ndarray) -> np.ndarray:
    # A random permutation of well-separated values: no ties for max.
    rng = np.random.default_rng(x.size)
    return rng.permutation(np.arange(x.size, dtype=np.float64)).reshape(x.shape) * 0.3 - 1.0


@dataclass
class Unary:
    name: str
    fn: Callable
    domain: Callable = any_real
    min_dims: int = 0


UNARY = [
    Unary("negative", ops.negative),
    Unary("exp", ops.exp),
    Unary("log", ops.log, positive),
    Unary("sin", ops.sin),
    Unary("cos", ops.cos),
    Unary("tanh", ops.tanh),
    Unary("sigmoid", ops.sigmoid),
    Unary("relu", ops.relu, away_from_zero),
    Unary("leaky_relu", lambda x: ops.leaky_relu(x, slope=0.1), away_from_zero),
    Unary("elu", lambda x: ops.elu(x, alpha=1.5), away_from_zero),
    Unary("softplus", ops.softplus),
    Unary("abs", ops.abs, away_from_zero),
    Unary("sqrt", ops.sqrt, positive),
    Unary("clip", lambda x: ops.clip(x, low=-1.0, high=1.0), lambda x: np.where(np.abs(np.abs(x) - 1) < 0.1, 0.5, x)),
    Unary("square", lambda x: x**2.0),
    Unary("sum", lambda x: x.sum()),
    Unary("sum_last_keepdims", lambda x: x.sum(axis=-1, keepdims=True), min_dims=1),
    Unary("mean_first", lambda x: x.mean(axis=0), min_dims=1),
    Unary("max", lambda x: x.max(), distinct),
    Unary("max_last", lambda x: x.max(axis=-1), distinct, min_dims=1),
    Unary("logsumexp", lambda x: ops.logsumexp(x)),
    Unary("logsumexp_last", lambda x: ops.logsumexp(x, axis=-1, keepdims=True), min_dims=1),
    Unary("log_softmax", lambda x: ops.log_softmax(x, axis=-1), min_dims=1),
    Unary("reshape", lambda x: x.reshape(-1)),
    Unary("transpose", lambda x: x.T),
    Unary("getitem_slice", lambda x: x[..., ::2], min_dims=1),
    Unary("getitem_fancy", lambda x: x[[0, 0, -1]], min_dims=1),
    Unary("scalar_ops", lambda x: (2.0 - x) / 3.0 + 1.5 * x),
]

BINARY = [
    ("add", lambda x, y: x + y, any_real, any_real),
    ("subtract", lambda x, y: x - y, any_real, any_real),
    ("multiply", lambda x, y: x * y, any_real, any_real),
    ("divide", lambda x, y: x / y, any_real, away_from_zero),
    ("power", lambda x, y: x**y, positive, any_real),
    ("maximum", ops.maximum, any_real, any_real),  # continuous random values: ties have probability zero
    ("minimum", ops.minimum, any_real, any_real),
    ("where", lambda x, y: ops.where(x.data > 0, x, y), away_from_zero, any_real),
]


def values(seed: int, shape: tuple[int, ...], domain: Callable) -> np.ndarray:
    return domain(np.random.default_rng(seed).standard_normal(shape))


def assert_rules_agree(f: Callable, inputs: list[np.ndarray]) -> None:
    """Reverse mode matches finite differences; forward mode matches reverse mode: ⟨u, Jv⟩ = ⟨Jᵀu, v⟩."""
    result = gradcheck(f, inputs)
    assert result.ok, f"relative errors {result.errors}"
    rng = np.random.default_rng(1)
    tangents = [rng.standard_normal(x.shape) for x in inputs]
    out, jv = jvp(f, inputs, tangents)
    _, pullback = vjp(f, inputs)
    u = rng.standard_normal(np.shape(out))
    forward = float(np.sum(u * jv))
    reverse = float(sum(np.sum(g * t) for g, t in zip(pullback(u), tangents)))
    assert forward == pytest.approx(reverse, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("case", UNARY, ids=lambda c: c.name)
@PROFILE
@given(data=st.data())
def test_unary_rules(case: Unary, data: st.DataObject) -> None:
    shape = data.draw(hnp.array_shapes(min_dims=case.min_dims, max_dims=3, min_side=1, max_side=4))
    x = values(data.draw(st.integers(0, 2**16)), shape, case.domain)
    assert_rules_agree(case.fn, [x])


@pytest.mark.parametrize("name,fn,left,right", BINARY, ids=[b[0] for b in BINARY])
@PROFILE
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, min_side=1, max_side=3), seed=st.integers(0, 2**16))
def test_binary_rules_broadcast(name: str, fn: Callable, left: Callable, right: Callable, shapes, seed: int) -> None:
    a, b = shapes.input_shapes
    x = values(seed, a, left)
    y = values(seed + 1, b, right)
    assert_rules_agree(fn, [x, y])


@PROFILE
@given(
    batch=st.lists(st.integers(1, 3), max_size=2),
    n=st.integers(1, 4),
    k=st.integers(1, 4),
    m=st.integers(1, 4),
    vector_left=st.booleans(),
    vector_right=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matmul_rules(batch, n, k, m, vector_left, vector_right, seed) -> None:
    left = (k,) if vector_left else (*batch, n, k)
    right = (k,) if vector_right else (k, m)
    assert_rules_agree(ops.matmul, [values(seed, left, any_real), values(seed + 1, right, any_real)])


@PROFILE
@given(n=st.integers(1, 5), fan_in=st.integers(1, 5), fan_out=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_dense_rules(n, fan_in, fan_out, seed) -> None:
    inputs = [values(seed + i, s, any_real) for i, s in enumerate([(n, fan_in), (fan_in, fan_out), (fan_out,)])]
    assert_rules_agree(dense, inputs)


@PROFILE
@given(shapes=st.lists(st.integers(1, 3), min_size=1, max_size=3), axis=st.integers(0, 1), seed=st.integers(0, 2**16))
def test_concatenate_and_stack_rules(shapes, axis, seed) -> None:
    blocks = [values(seed + i, (s, 2) if axis == 0 else (2, s), any_real) for i, s in enumerate(shapes)]
    assert_rules_agree(lambda *xs: ops.concatenate(*xs, axis=axis), blocks)
    same = [values(seed + i, (2, 3), any_real) for i in range(len(shapes))]
    assert_rules_agree(lambda *xs: ops.stack(*xs, axis=axis), same)


REGRESSION_LOSSES = [
    ("mse", mse, any_real),
    ("mae", mae, away_from_zero),
    ("huber", lambda p, t: huber(p, t, delta=0.7), lambda r: np.where(np.abs(np.abs(r) - 0.7) < 0.05, 0.3, r)),
]


@pytest.mark.parametrize("name,loss,residual", REGRESSION_LOSSES, ids=[c[0] for c in REGRESSION_LOSSES])
@PROFILE
@given(shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=4), seed=st.integers(0, 2**16))
def test_regression_loss_rules(name, loss, residual, shape, seed) -> None:
    target = values(seed, shape, any_real)
    pred = target + values(seed + 1, shape, residual)
    assert_rules_agree(loss, [pred, target])


@PROFILE
@given(n=st.integers(1, 5), classes=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_classification_loss_rules(n, classes, seed) -> None:
    labels = np.random.default_rng(seed).integers(0, classes, n)
    assert_rules_agree(lambda z: cross_entropy(z, labels), [values(seed, (n, classes), any_real)])
    targets = np.random.default_rng(seed).uniform(0, 1, (n, 1))
    assert_rules_agree(binary_cross_entropy, [values(seed + 1, (n, 1), any_real), targets])


def test_losses_match_their_definitions() -> None:
    pred = np.array([[0.5, -1.0], [2.0, 0.0]])
    target = np.array([[0.0, 1.0], [1.0, 0.5]])
    r = pred - target
    assert float(mse(pred, target).data) == pytest.approx(np.mean(r**2))
    assert float(mae(pred, target).data) == pytest.approx(np.mean(np.abs(r)))
    huber_terms = np.where(np.abs(r) <= 1.0, 0.5 * r**2, np.abs(r) - 0.5)
    assert float(huber(pred, target).data) == pytest.approx(np.mean(huber_terms))
    logits, labels = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 3.0]]), np.array([0, 1])
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert float(cross_entropy(logits, labels).data) == pytest.approx(-np.mean(np.log(softmax[[0, 1], labels])))
    z, y = np.array([[1.5], [-0.5]]), np.array([[1.0], [0.0]])
    p = 1 / (1 + np.exp(-z))
    assert float(binary_cross_entropy(z, y).data) == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logits_give_finite_losses_and_gradients(dtype) -> None:
    from autobp.engine import Tensor

    logits = Tensor(np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=dtype), requires_grad=True)
    loss = cross_entropy(logits, np.array([1, 0]))
    loss.backward()
    assert np.isfinite(loss.data) and np.all(np.isfinite(logits.grad))
    assert float(loss.data) == pytest.approx(2e4 + np.log(2) / 2, rel=1e-6)
    z = Tensor(np.array([[1e4], [-1e4]], dtype=dtype), requires_grad=True)
    bce = binary_cross_entropy(z, np.array([[0.0], [0.0]], dtype=dtype))
    bce.backward()
    assert np.isfinite(bce.data) and np.all(np.isfinite(z.grad))
    assert float(bce.data) == pytest.approx(5e3, rel=1e-6)
    s = ops.sigmoid(Tensor(np.array([1e4, -1e4], dtype=dtype)))
    assert s.data.tolist() == [1.0, 0.0]
