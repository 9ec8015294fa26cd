"""The engine's behaviour beyond single rules: graphs, broadcasting, dtypes, errors, memory, both modes on networks."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from autobp.engine import (
    EngineError, Primitive, Tensor, cross_entropy, dense, gradients, jvp, mse, no_grad, ops, recorded, vjp,
)
from autobp.engine.compile import compile_graph


def test_diamond_graph_accumulates_every_path() -> None:
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    a = x * 2.0
    y = (a * a + ops.sin(a) + x).sum()  # x reaches y along three paths
    y.backward()
    expected = 8.0 * x.data + 2.0 * np.cos(2.0 * x.data) + 1.0
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12)


def test_gradients_sum_back_over_broadcast_dimensions() -> None:
    x = Tensor(np.ones((4, 1, 3)), requires_grad=True)
    b = Tensor(np.arange(3.0), requires_grad=True)  # missing leading dims
    c = Tensor(np.ones((1, 5, 1)), requires_grad=True)  # size-1 dims
    (x * b + c).sum().backward()
    assert x.grad.shape == (4, 1, 3) and np.all(x.grad == 5 * np.arange(3.0))
    assert b.grad.shape == (3,) and np.all(b.grad == 20.0)
    assert c.grad.shape == (1, 5, 1) and np.all(c.grad == 12.0)


def test_leaf_gradients_accumulate_across_backward_calls() -> None:
    w = Tensor(np.array([2.0]), requires_grad=True)
    (w * 3.0).sum().backward()
    (w * 4.0).sum().backward()
    assert w.grad.tolist() == [7.0]


def test_chain_of_ten_thousand_ops_backpropagates() -> None:
    x = Tensor(np.array([0.5, -0.25]), requires_grad=True)
    h = x
    for _ in range(10_000):
        h = h * 1.0001
    h.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(2, 1.0001**10_000), rtol=1e-10)


def test_retained_intermediate_gradient_is_the_signal_reaching_it() -> None:
    x = np.array([[0.3, -0.2]])
    w = Tensor(np.array([[1.0, -2.0], [0.5, 0.25]]), requires_grad=True)
    h = ops.tanh(x @ w).retain_grad()
    loss = (h * h).sum()
    loss.backward()
    np.testing.assert_allclose(h.grad, 2 * h.data)


def test_backward_releases_the_graph() -> None:
    w = Tensor(np.ones((3, 3)), requires_grad=True)
    h = ops.tanh(w @ w)
    loss = h.sum()
    loss.backward()
    assert h.parents == () and loss.parents == () and not h.requires_grad


def test_a_second_backward_through_a_released_graph_raises_instead_of_leaving_stale_gradients() -> None:
    w = Tensor(np.array([0.5, -1.0]), requires_grad=True)
    h = ops.tanh(w * 3.0)
    first, second = h.sum(), (h * h).sum()  # both recorded before the first backward
    first.backward()
    with pytest.raises(EngineError, match="already walked and released"):
        first.backward()
    with pytest.raises(EngineError, match="already walked and released"):
        second.backward()  # reaches h, whose record the first backward freed
    np.testing.assert_allclose(w.grad, 3.0 * (1.0 - np.tanh(w.data * 3.0) ** 2))


def test_no_grad_records_nothing() -> None:
    w = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = (w * 2.0).sum()
    assert not y.requires_grad and y.is_leaf
    assert (w * 2.0).requires_grad  # recording is back on after the block


def test_non_scalar_backward_takes_an_upstream_gradient() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x * x
    with pytest.raises(EngineError, match=r"needs an upstream gradient"):
        y.backward()
    (x * x).backward(np.array([1.0, 10.0]))
    assert x.grad.tolist() == [2.0, 40.0]


def test_detach_cuts_the_graph() -> None:
    x = Tensor(np.array([3.0]), requires_grad=True)
    y = (x.detach() * x).sum()
    y.backward()
    assert x.grad.tolist() == [3.0]


@pytest.mark.parametrize("scalar", [2.0, np.float64(2.0), np.float32(2.0), 2])
def test_float32_stays_float32_with_any_scalar(scalar) -> None:
    x = Tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    w = Tensor(np.ones((3, 4), dtype=np.float32), requires_grad=True)
    b = Tensor(np.zeros(4, dtype=np.float32), requires_grad=True)
    h = ops.tanh(dense(x, w, b)) * scalar + scalar - scalar / (1.0 + ops.exp(x @ w))
    loss = cross_entropy(h, np.array([0, 3])) + mse(h, np.zeros((2, 4), dtype=np.float32)) * scalar
    loss.backward()
    assert h.dtype == loss.dtype == np.float32
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32


def test_mixing_float32_and_float64_tensors_names_both() -> None:
    a = Tensor(np.ones(2, dtype=np.float32))
    b = Tensor(np.ones(2, dtype=np.float64))
    with pytest.raises(EngineError, match=r"multiply: mixes float32 and float64"):
        a * b
    with pytest.raises(EngineError, match=r"add: mixes float32 and float64"):
        b + a


def test_integer_data_becomes_float64() -> None:
    assert Tensor([1, 2, 3]).dtype == np.float64


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda: Tensor(np.ones((3, 2))) @ Tensor(np.ones((3, 2))), r"matmul: cannot combine shapes \(3, 2\) and \(3, 2\)"),
        (lambda: Tensor(np.ones((2, 3))) + Tensor(np.ones((4,))), r"add: cannot combine shapes \(2, 3\) and \(4,\)"),
        (lambda: dense(np.ones((5, 3)), Tensor(np.ones((4, 2))), Tensor(np.ones(2))), r"dense: cannot combine shapes \(5, 3\) and \(4, 2\) and \(2,\)"),
        (lambda: Tensor(np.ones(6)).reshape(4, 2), r"reshape: cannot combine shapes \(6,\)"),
    ],
)
def test_shape_mismatch_names_operation_and_shapes(make, pattern) -> None:
    with pytest.raises(EngineError, match=pattern):
        make()


def random_network(depth: int, width: int, rng: np.random.Generator):
    """A random tanh/sigmoid/relu MLP as a function of (x, W1, b1, ..., WK, bK), and its inputs."""
    activations = [ops.tanh, ops.sigmoid, ops.softplus, ops.sin]
    sizes = [width] + [int(rng.integers(1, width + 2)) for _ in range(depth)]
    chosen = [activations[int(rng.integers(len(activations)))] for _ in range(depth)]

    def network(x, *params):
        h = x
        for k, act in enumerate(chosen):
            h = act(dense(h, params[2 * k], params[2 * k + 1]))
        return h

    inputs = [rng.standard_normal((3, width))]
    for a, b in zip(sizes[:-1], sizes[1:]):
        inputs += [rng.standard_normal((a, b)), rng.standard_normal(b)]
    return network, inputs


@pytest.mark.parametrize("seed", range(8))
def test_forward_and_reverse_mode_agree_on_random_networks(seed: int) -> None:
    """The dot-product test: ⟨u, J v⟩ from one forward-mode pass equals ⟨Jᵀ u, v⟩ from one reverse pass."""
    rng = np.random.default_rng(seed)
    network, inputs = random_network(int(rng.integers(1, 6)), int(rng.integers(1, 6)), rng)
    tangents = [rng.standard_normal(x.shape) for x in inputs]
    out, jv = jvp(network, inputs, tangents)
    _, pullback = vjp(network, inputs)
    u = rng.standard_normal(out.shape)
    forward = np.sum(u * jv)
    reverse = sum(np.sum(g * t) for g, t in zip(pullback(u), tangents))
    assert abs(forward - reverse) <= 1e-10 * max(1.0, abs(forward))


def test_memory_does_not_grow_over_training_steps() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 8)), rng.integers(0, 3, 32)
    params = [Tensor(rng.standard_normal(s) * 0.3, requires_grad=True) for s in [(8, 16), (16,), (16, 3), (3,)]]

    def step() -> None:
        h = ops.tanh(dense(x, params[0], params[1])).retain_grad()
        loss = cross_entropy(dense(h, params[2], params[3]), y)
        loss.backward()
        for p in params:
            p.data -= 0.01 * p.grad
            p.grad = None

    for _ in range(50):
        step()
    gc.collect()
    tracemalloc.start()
    for _ in range(100):
        step()
    after_100, _ = tracemalloc.get_traced_memory()
    for _ in range(900):
        step()
    after_1000, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert after_1000 - after_100 < 16_384, f"grew by {after_1000 - after_100} bytes over 900 steps"


class Logged(Primitive):
    """x · y + y, whose VJPs note the node they run for (its output array), in the order they are called."""

    name = "logged"
    calls: list[int] = []

    def forward(self, x, y):
        return x * y + y

    def vjp(self, i, g, out, x, y):
        Logged.calls.append(id(out))
        return g * (y if i == 0 else x + 1.0)


@pytest.mark.parametrize("seed", range(5))
def test_backward_gradients_and_the_compiler_visit_nodes_in_the_engines_one_order(seed: int) -> None:
    """On a random graph with fan-out and diamonds, backward's VJPs run in `recorded` order from the end, as do
    gradients' and the compiled program's, so all three sum gradients in the same order."""
    rng = np.random.default_rng(seed)
    logged = Logged()
    leaves = [Tensor(rng.standard_normal(3), requires_grad=True) for _ in range(3)]
    values = list(leaves)
    for _ in range(12):
        i, j = rng.integers(len(values), size=2)
        values.append(logged(values[i], values[j]))
    root = ops.sum(values[-1] + values[-2] * values[-3])
    expected = [id(node.data) for node in reversed(recorded(root)) if node.record.op is logged
                for _ in node.record.parents]  # fmt: skip
    Logged.calls = []
    gradients(root, leaves)
    assert Logged.calls == expected
    program = compile_graph(root, leaves, [])
    Logged.calls = []
    root.backward()
    assert Logged.calls == expected
    Logged.calls = []
    program.run([])
    assert len(Logged.calls) == len(expected)  # its own arrays, in the same sequence of nodes
    for leaf, compiled in zip(leaves, program.grads):
        assert np.array_equal(leaf.grad, compiled)
