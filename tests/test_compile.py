"""Compiled steps give bit for bit what the interpreted engine gives: in the engine, and in whole training runs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, assert_same_run

from autobp.engine import EngineError, Tensor, dense, numerical_gradient, ops
from autobp.engine.compile import compile_graph
from autobp.config.catalog import ACTIVATIONS, LOSSES
from autobp.training.entry import train

EXAMPLES = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("sweep"))


def network_loss(params, x, y, masks, activations, loss):
    """A dense network with the given activations, dropout masks multiplied in where given, and a loss."""
    h = x
    outputs = []
    for layer, activation in enumerate(activations):
        h = dense(h, params[2 * layer], params[2 * layer + 1])
        act = ACTIVATIONS[activation].engine
        h = h if act is None else act(h)
        if masks[layer] is not None:
            h = h * masks[layer]
        outputs.append(h)
    return LOSSES[loss].engine(h, y), outputs


def parameters(rng, dtype, sizes):
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        params += [Tensor(rng.standard_normal((a, b)).astype(dtype), requires_grad=True),
                   Tensor(0.1 * rng.standard_normal(b).astype(dtype), requires_grad=True)]  # fmt: skip
    return params


def batch(rng, dtype, sizes, n, loss, dropout):
    x = rng.standard_normal((n, sizes[0])).astype(dtype)
    if loss == "cross_entropy":
        y = rng.integers(0, sizes[-1], n)
    elif loss == "bce":
        y = (rng.random((n, 1)) > 0.5).astype(dtype)
    else:
        y = rng.standard_normal((n, sizes[-1])).astype(dtype)
    masks = [(rng.random((n, units)) >= dropout).astype(dtype) / dtype(1 - dropout) if dropout else None
             for units in sizes[1:-1]] + [None]  # fmt: skip
    return x, y, masks


CASES = list(itertools.product(sorted(ACTIVATIONS), sorted(LOSSES)))


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("activation", "loss"), CASES)
def test_compiled_network_matches_the_interpreter_bit_for_bit(activation, loss, dtype, dropout) -> None:
    rng = np.random.default_rng(CASES.index((activation, loss)))
    sizes = [3, 5, 4, 1 if loss == "bce" else 3]
    activations = [activation, activation, "identity"]
    interpreted = parameters(rng, dtype, sizes)
    compiled = [Tensor(p.data.copy(), requires_grad=True) for p in interpreted]
    x, y, masks = batch(rng, dtype, sizes, 8, loss, dropout)
    recorded, outputs = network_loss(compiled, x, y, masks, activations, loss)
    given = [m for m in masks if m is not None]
    program = compile_graph(recorded, compiled, [x, y, *given], outputs)
    for _ in range(3):  # new data and updated parameters each run: nothing of the recording is reused by mistake
        x, y, masks = batch(rng, dtype, sizes, 8, loss, dropout)
        value, outs = network_loss(interpreted, x, y, masks, activations, loss)
        for out in outs:
            out.retain_grad()
        value.backward()
        assert program.run([x, y, *[m for m in masks if m is not None]]).tobytes() == value.data.tobytes()
        for p, q, g in zip(interpreted, compiled, program.grads):
            assert g.dtype == p.grad.dtype and g.tobytes() == p.grad.tobytes()
            p.data -= 0.1 * p.grad
            q.data -= 0.1 * g
            p.grad = None
        for k, out in enumerate(outs):
            assert program.values[k].tobytes() == out.data.tobytes()
            assert program.gradients[k].tobytes() == out.grad.tobytes()


def test_compiled_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(5)
    w = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = Tensor(rng.standard_normal(4), requires_grad=True)
    x = rng.standard_normal((6, 3))
    program = compile_graph(ops.tanh(dense(x, w, b)).sum(), [w, b], [x])
    x = rng.standard_normal((6, 3))
    program.run([x])
    loss = lambda w, b: ops.tanh(dense(x, w, b)).sum()  # noqa: E731
    np.testing.assert_allclose(program.grads[0], numerical_gradient(loss, [w.data, b.data], 0), rtol=1e-7)
    np.testing.assert_allclose(program.grads[1], numerical_gradient(loss, [w.data, b.data], 1), rtol=1e-7)


def test_shared_parameters_broadcasting_and_indexing_compile_like_the_interpreter() -> None:
    # A parameter used twice, a broadcast that backward must sum back, a diamond and fancy indexing.
    rng = np.random.default_rng(1)
    w = Tensor(rng.standard_normal((4, 4)), requires_grad=True)
    c = Tensor(rng.standard_normal((1, 4)), requires_grad=True)

    def loss_of(x):
        h = ops.tanh(x @ w) * c
        h = ops.sigmoid(h @ w) + h
        return (ops.log_softmax(h[[0, 2, 2]], axis=1) ** 2.0).mean() + ops.max(h, axis=0).sum()

    x = rng.standard_normal((5, 4))
    program = compile_graph(loss_of(x), [w, c], [x])
    for _ in range(2):
        x = rng.standard_normal((5, 4))
        expected = loss_of(x)
        expected.backward()
        assert program.run([x]).tobytes() == expected.data.tobytes()
        assert program.grads[0].tobytes() == w.grad.tobytes() and program.grads[1].tobytes() == c.grad.tobytes()
        assert program.grads[1].shape == (1, 4)
        # Both gradients live in one flat buffer (w's copied in, as it accumulates two paths), in parameter order.
        assert program.flat_grad.tobytes() == w.grad.tobytes() + c.grad.tobytes()
        w.grad = c.grad = None


def test_a_parameter_the_loss_does_not_use_gets_no_gradient() -> None:
    w, unused = Tensor(np.ones((2, 2)), requires_grad=True), Tensor(np.ones(2), requires_grad=True)
    x = np.ones((3, 2))
    program = compile_graph((x @ w).sum(), [w, unused], [x])
    program.run([x])
    assert program.grads[1] is None and program.grads[0].tolist() == [[3.0, 3.0], [3.0, 3.0]]


def test_only_a_recorded_scalar_loss_compiles() -> None:
    w = Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(EngineError, match="scalar loss"):
        compile_graph(np.ones((3, 2)) @ w, [w], [])
    with pytest.raises(EngineError, match="watched tensor"):
        compile_graph((np.ones((3, 2)) @ w).sum(), [w], [], [Tensor(np.ones(2))])


# --- whole training runs, compiled and interpreted ----------------------------------------------------------------
def both_ways(config, overrides: list[str], tmp_path: Path) -> tuple[Path, Path]:
    flags = ("true", "false")
    runs = [train(config, [*overrides, f"training.compile={flag}"], output=tmp_path / flag) for flag in flags]
    assert runs[0].status == runs[1].status
    return runs[0].run_dir, runs[1].run_dir


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_trains_bit_identically_compiled(example: Path, dtype: str, tmp_path: Path) -> None:
    overrides = ["training.epochs=2", f"training.dtype={dtype}", "training.log_every=1"]
    assert_same_run(*both_ways(example, overrides, tmp_path))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dropout_and_a_short_last_batch_train_bit_identically_compiled(dtype: str, tmp_path: Path) -> None:
    layers = "model.layers=[{units: 16, dropout: 0.3}, {units: 8, activation: relu, dropout: 0.5}, {}]"
    overrides = ["training.epochs=3", "training.batch_size=48", f"training.dtype={dtype}", layers]
    compiled, interpreted = both_ways(CONFIGS / "quickstart.yaml", overrides, tmp_path)
    assert_same_run(compiled, interpreted)


def test_a_diverging_run_diverges_at_the_same_step_compiled(tmp_path: Path) -> None:
    overrides = ["optimizer.name=sgd", "optimizer.lr=1e6", "training.epochs=3", "training.log_every=1000"]
    compiled, interpreted = both_ways(CONFIGS / "sine.yaml", overrides, tmp_path)
    assert json.loads((compiled / "summary.json").read_text())["status"] == "diverged"
    assert_same_run(compiled, interpreted)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_dense_products_are_the_bits_of_matmul_at_every_shape(dtype: str) -> None:
    """Dense's array rules multiply with np.dot, which is cheaper than `@` on small matrices: they must give `@`'s
    bits exactly (forward, the input's gradient, and the weight's written into a flat buffer's view)."""
    rng = np.random.default_rng(0)
    sizes = [1, 2, 3, 7, 16, 17, 32, 100, 256, 784]
    rule = dense  # the Dense primitive every network layer records
    for n, k, m in itertools.product(sizes, repeat=3):
        if n * k * m > (100_000 if dtype == "float16" else 1_000_000):  # float16 has no BLAS: slow
            continue
        x, w, g = (rng.standard_normal(shape).astype(dtype) for shape in ((n, k), (k, m), (n, m)))
        b = rng.standard_normal(m).astype(dtype)
        expected = x @ w
        expected += b
        assert np.array_equal(rule.forward(x, w, b), expected)
        assert np.array_equal(rule.vjp(0, g, None, x, w, b), g @ w.T)
        flat = np.zeros(k * m + 3, dtype)
        into = flat[3:].reshape(k, m)  # an offset view, as a compiled step's gradient buffer holds it
        assert rule.vjp_into(into, 1, g, None, x, w, b) is into
        assert np.array_equal(into, x.T @ g)
        into_x = np.zeros(n * k, dtype).reshape(n, k)
        assert np.array_equal(rule.vjp_into(into_x, 0, g, None, x, w, b), g @ w.T)
