"""Hessian-vector products of whole network losses: forward over reverse (`hvp`) against central differences of
gradients, for every activation and every loss, in float64 to 1e-6 relative; and against reverse over reverse."""

from __future__ import annotations

import numpy as np
import pytest

from autobp.engine import Tensor, grad, gradients, hessian, hvp, relative_error
from autobp.model.network import Layer, Network, network_loss
from autobp.config.catalog import ACTIVATIONS, LOSSES

EPS = 1e-5  # central differences of gradients: O(ε²) truncation, O(ulp/ε) rounding, both far below 1e-6 here
ROWS, FEATURES, HIDDEN, OUTPUTS = 12, 3, 5, 3


def make_network(activation: str, outputs: int, rng: np.random.Generator) -> Network:
    sizes = [FEATURES, HIDDEN, HIDDEN, outputs]
    layers = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        weight = Tensor(rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in), requires_grad=True)
        bias = Tensor(rng.standard_normal(fan_out) * 0.1, requires_grad=True)
        last = index == len(sizes) - 2
        layers.append(Layer(f"layer{index}", weight, bias, "identity" if last else activation))
    return Network(layers)


def targets(loss: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    kind = LOSSES[loss].targets
    if kind == "labels":
        return rng.integers(0, OUTPUTS, ROWS), OUTPUTS
    if kind == "column":
        return rng.integers(0, 2, (ROWS, 1)).astype(np.float64), 1
    return rng.standard_normal((ROWS, OUTPUTS)), OUTPUTS


def problem(activation: str, loss: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    y, outputs = targets(loss, rng)
    network = make_network(activation, outputs, rng)
    x = rng.standard_normal((ROWS, FEATURES))
    params = [p.data.copy() for p in network.parameters()]
    vectors = [rng.standard_normal(p.shape) for p in params]
    return network_loss(network, x, y, loss), params, vectors


def gradient_differences(f, params, vectors, eps=EPS) -> list[np.ndarray]:
    """(∇f(θ + εv) − ∇f(θ − εv)) / 2ε: H·v from gradients alone."""
    gradient = grad(f, list(range(len(params))))
    above = gradient(*[p + eps * v for p, v in zip(params, vectors)])
    below = gradient(*[p - eps * v for p, v in zip(params, vectors)])
    return [(a - b) / (2 * eps) for a, b in zip(above, below)]


def flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([a.reshape(-1) for a in arrays])


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_hvp_of_a_network_loss_matches_differences_of_gradients(activation: str, loss: str) -> None:
    f, params, vectors = problem(activation, loss)
    exact = flat(hvp(f, params, vectors))
    assert np.all(np.isfinite(exact))
    assert relative_error(exact, flat(gradient_differences(f, params, vectors))) < 1e-6
    assert np.max(np.abs(exact)) > 1e-3  # a real curvature, not two zeros agreeing


@pytest.mark.parametrize("loss", ["mse", "cross_entropy", "bce"])
def test_forward_over_reverse_equals_reverse_over_reverse(loss: str) -> None:
    f, params, vectors = problem("tanh", loss, seed=3)
    xs = [Tensor(p, requires_grad=True) for p in params]
    first = gradients(f(*xs), xs, create_graph=True)  # gradients with a graph of their own
    directional = sum((g * v).sum() for g, v in zip(first, vectors))
    second = gradients(directional, xs)  # ∂⟨∇f, v⟩/∂θ = H·v
    np.testing.assert_allclose(flat(second), flat(hvp(f, params, vectors)), rtol=1e-10, atol=1e-12)


def test_hessian_is_symmetric_and_matches_its_columns_by_differences() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((6, 2)), rng.standard_normal((6, 1))
    w1, b1, w2, b2 = rng.standard_normal((2, 3)), rng.standard_normal(3), rng.standard_normal((3, 1)), np.zeros(1)
    network = Network([Layer("layer0", Tensor(w1), Tensor(b1), "softplus"),
                       Layer("layer1", Tensor(w2), Tensor(b2), "identity")])  # fmt: skip
    f = network_loss(network, x, y, "mse")
    params = [w1, b1, w2, b2]
    h = hessian(f, params)
    assert h.shape == (13, 13)
    np.testing.assert_allclose(h, h.T, atol=1e-12)
    for j in (0, 6, 9, 12):
        unit = np.zeros(13)
        unit[j] = 1.0
        pieces = np.split(unit, [6, 9, 12])
        column = flat(gradient_differences(f, params, [p.reshape(q.shape) for p, q in zip(pieces, params)]))
        assert relative_error(h[:, j], column) < 1e-6


def test_hvp_of_a_quadratic_is_its_matrix_times_the_vector() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 4))
    a = a + a.T
    x, v = rng.standard_normal(4), rng.standard_normal(4)
    (result,) = hvp(lambda t: 0.5 * (t * (Tensor(a) @ t)).sum(), [x], [v])
    np.testing.assert_allclose(result, a @ v, rtol=1e-12)
