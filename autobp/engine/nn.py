"""Fused primitives for networks: the dense layer and the losses.

Fusing keeps the graph small (one node per layer instead of a matmul and an add) and lets each loss use the
numerically stable form of its gradient. Every loss is the mean over all elements of the batch, with no ½ factor.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autobp.engine import ops
from autobp.engine.ops import data_of
from autobp.engine.tensor import Primitive, Tensor


class Dense(Primitive):
    """x W + b for a batch x of shape (n, in), W of shape (in, out) and b of shape (out,)."""

    name = "dense"

    # The array rules multiply with np.dot: on two matrices it makes the same BLAS call as `@` (the same bits,
    # checked by the engine's tests) with less of the ufunc machinery around it, a fifth less time at a small
    # layer's size. `vjp` keeps `@`, which tensors define too: derivatives of derivatives run it on tensors.
    def forward(self, x, w, b):
        out = np.dot(x, w)
        out += b
        return out

    def vjp(self, i, g, out, x, w, b):
        if i == 0:
            return g @ w.T
        if i == 1:
            return x.T @ g
        return g.sum(axis=0)

    def vjp_into(self, into, i, g, out, x, w, b):
        """`vjp` written into `into`, an array of the argument's shape (compiled steps' gradient buffers)."""
        # Positional `out` arguments: keyword parsing would cost as much as these small products themselves.
        if i == 0:
            return np.dot(g, w.T, into)
        if i == 1:
            return np.dot(x.T, g, into)
        return np.add.reduce(g, 0, None, into)  # what g.sum(axis=0) calls

    def jvp(self, i, t, out, x, w, b):
        if i == 0:
            return t @ w
        if i == 1:
            return x @ t
        return t


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def mean(terms: np.ndarray) -> np.generic:
    """`np.mean(terms)` of a float32 or float64 array (float16 np.mean sums in float32): the same operations without
    its Python layers, which cost more than the sum itself on a small batch (a loss is taken at every step)."""
    total = np.add.reduce(terms, None)
    return total.dtype.type(total / np.intp(terms.size))


class Loss(Primitive):
    """A loss L(prediction, target) = mean of a pointwise term; its rules come from the pointwise slope.

    `slope(pred, target, scale)` returns scale · ∂term/∂pred: folding the scalar in saves a pass over the batch.
    On tensors the slope is `slope_graph(pred, target)`, ∂term/∂pred in engine operations (`slope` itself where
    its arithmetic works on tensors).
    """

    def slope(self, pred: np.ndarray, target: np.ndarray, scale: float, **kwargs: float) -> np.ndarray:
        raise NotImplementedError

    def terms(self, pred: np.ndarray, target: np.ndarray, **kwargs: float) -> np.ndarray:
        """The pointwise term, whose mean is the loss."""
        raise NotImplementedError

    def forward(self, pred, target, **kwargs):
        return mean(self.terms(pred, target, **kwargs))

    def per_example(self, pred: np.ndarray, target: np.ndarray, **kwargs: float) -> np.ndarray:
        """ℓ_n, each example's loss: its terms' mean, so that the loss is the mean of ℓ_n over the batch."""
        terms = self.terms(pred, target, **kwargs)
        return terms.reshape(len(terms), -1).mean(axis=1)

    def slope_graph(self, pred: Tensor, target: Any, **kwargs: float) -> Tensor:
        return self.slope(pred, target, 1.0, **kwargs)

    def vjp_graph(self, i, g, out, pred, target, **kwargs):
        s = self.slope_graph(pred, target, **kwargs) * (g * (1.0 / pred.size))
        return s if i == 0 else -s

    def jvp_graph(self, i, t, out, pred, target, **kwargs):
        s = ops.sum(self.slope_graph(pred, target, **kwargs) * t) * (1.0 / pred.size)
        return s if i == 0 else -s

    def vjp(self, i, g, out, pred, target, **kwargs):
        s = self.slope(pred, target, float(g) / pred.size, **kwargs)
        return s if i == 0 else -s

    def jvp(self, i, t, out, pred, target, **kwargs):
        s = self.slope(pred, target, 1.0 / pred.size, **kwargs)
        return np.sum(s * t) if i == 0 else -np.sum(s * t)


class MeanSquaredError(Loss):
    name = "mse"

    def terms(self, pred, target):
        diff = pred - target
        return diff * diff

    def slope(self, pred, target, scale):
        return (pred - target) * (2.0 * scale)


class MeanAbsoluteError(Loss):
    name = "mae"

    def terms(self, pred, target):
        return np.abs(pred - target)

    def slope(self, pred, target, scale):
        return np.sign(pred - target) * scale

    def slope_graph(self, pred, target):
        return np.sign(data_of(pred) - data_of(target))  # piecewise constant: no second derivative


class Huber(Loss):
    """½r² for |r| ≤ δ, δ(|r| − ½δ) beyond: quadratic near the target, linear (robust) far from it."""

    name = "huber"

    def terms(self, pred, target, delta=1.0):
        r = np.abs(pred - target)
        return np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta))

    def slope(self, pred, target, scale, delta=1.0):
        return np.clip(pred - target, -delta, delta) * scale

    def slope_graph(self, pred, target, delta=1.0):
        return ops.clip(pred - target, low=-delta, high=delta)


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy from logits z and targets y in [0, 1]: max(z, 0) − zy + log(1 + e^−|z|)."""

    name = "binary_cross_entropy"

    def terms(self, logits, target):
        return np.maximum(logits, 0.0) - logits * target + np.log1p(np.exp(-np.abs(logits)))

    def slope(self, logits, target, scale):
        return (ops.logistic(logits) - target) * scale

    def slope_graph(self, logits, target):
        return ops.sigmoid(logits) - target

    def vjp(self, i, g, out, logits, target):
        if i == 0:
            return super().vjp(i, g, out, logits, target)
        return logits * (-float(g) / logits.size)  # ∂/∂y of the pointwise term is −z

    def jvp(self, i, t, out, logits, target):
        if i == 0:
            return super().jvp(i, t, out, logits, target)
        return -np.sum(logits * t) / logits.size

    def vjp_graph(self, i, g, out, logits, target):
        if i == 0:
            return super().vjp_graph(i, g, out, logits, target)
        return logits * (g * (-1.0 / logits.size))

    def jvp_graph(self, i, t, out, logits, target):
        if i == 0:
            return super().jvp_graph(i, t, out, logits, target)
        return ops.sum(logits * t) * (-1.0 / logits.size)


class CrossEntropy(Primitive):
    """Softmax cross-entropy from logits (n, classes) and integer labels (n,), averaged over the batch."""

    name = "cross_entropy"

    def forward(self, logits, labels):
        return mean(self.per_example(logits, labels))

    def per_example(self, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """ℓ_n, each example's loss, whose mean is the loss."""
        peak = logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits - peak).sum(axis=1)) + peak[:, 0]
        return log_norm - logits[np.arange(len(labels)), labels]

    def _slope(self, logits, labels, scale):
        # (softmax − onehot) / batch size: the famously simple gradient of the fused pair.
        s = _softmax(logits)
        s[np.arange(len(labels)), labels] -= 1.0
        s *= scale / len(labels)
        return s

    def vjp(self, i, g, out, logits, labels):
        return self._slope(logits, labels, float(g))

    def jvp(self, i, t, out, logits, labels):
        return np.sum(self._slope(logits, labels, 1.0) * t)

    def _slope_graph(self, logits, labels):
        onehot = np.zeros_like(logits.data)
        onehot[np.arange(len(labels)), labels] = 1.0
        return (ops.exp(ops.log_softmax(logits, axis=1)) - onehot) * (1.0 / len(labels))

    def vjp_graph(self, i, g, out, logits, labels):
        return self._slope_graph(logits, labels) * g

    def jvp_graph(self, i, t, out, logits, labels):
        return ops.sum(self._slope_graph(logits, labels) * t)


dense = Dense()
mse = MeanSquaredError()
mae = MeanAbsoluteError()
huber = Huber()
binary_cross_entropy = BinaryCrossEntropy()
cross_entropy = CrossEntropy()
