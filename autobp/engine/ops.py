"""The primitives: for each operation its forward rule, its VJP and its JVP, side by side.

Every rule works on raw numpy arrays. `vjp(i, g, out, *args)` returns Jᵢᵀg, the gradient for argument i given the
gradient g of the output; `jvp(i, t, out, *args)` returns Jᵢt, the output's change for a change t of argument i.
Rules may return gradients of the broadcast shape: `backward` sums them back to the argument's shape in one place.
`vjp_graph` and `jvp_graph` are the same rules on tensors, written in these operations so that they can be
differentiated in turn; a primitive defines them only where its array rules use numpy functions tensors lack.
"""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np

from autobp.engine.tensor import Primitive, Tensor


def data_of(value: Any) -> Any:
    """A tensor's array, or the value itself if it is not a tensor (a constant argument)."""
    return value.data if type(value) is Tensor else value


class Elementwise(Primitive):
    """An op with a diagonal Jacobian: both rules multiply by the local derivative ∂out/∂argᵢ.

    On tensors the local derivative is `partial_graph`: `partial` itself where its arithmetic works on tensors,
    its value as a constant where it is piecewise constant (`piecewise`: its own derivative is 0 wherever it
    exists), or a primitive's own version."""

    piecewise = False

    def partial(self, i: int, out: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        raise NotImplementedError

    def partial_graph(self, i: int, out: Tensor, *args: Any, **kwargs: Any) -> Any:
        if self.piecewise:
            return self.partial(i, out.data, *map(data_of, args), **kwargs)
        return self.partial(i, out, *args, **kwargs)

    def vjp(self, i, g, out, *args, **kwargs):
        return g * self.partial(i, out, *args, **kwargs)

    def jvp(self, i, t, out, *args, **kwargs):
        return t * self.partial(i, out, *args, **kwargs)

    def vjp_graph(self, i, g, out, *args, **kwargs):
        return g * self.partial_graph(i, out, *args, **kwargs)

    jvp_graph = vjp_graph


# --- arithmetic ------------------------------------------------------------------------------------------------
class Add(Primitive):
    name = "add"

    def forward(self, x, y):
        return x + y

    def vjp(self, i, g, out, x, y):
        return g

    def jvp(self, i, t, out, x, y):
        return t


class Subtract(Primitive):
    name = "subtract"

    def forward(self, x, y):
        return x - y

    def vjp(self, i, g, out, x, y):
        return g if i == 0 else -g

    def jvp(self, i, t, out, x, y):
        return t if i == 0 else -t


class Negative(Primitive):
    name = "negative"

    def forward(self, x):
        return -x

    def vjp(self, i, g, out, x):
        return -g

    def jvp(self, i, t, out, x):
        return -t


class Multiply(Elementwise):
    name = "multiply"

    def forward(self, x, y):
        return x * y

    def partial(self, i, out, x, y):
        return y if i == 0 else x


class Divide(Elementwise):
    name = "divide"

    def forward(self, x, y):
        return x / y

    def partial(self, i, out, x, y):
        return 1.0 / y if i == 0 else -out / y


class Power(Elementwise):
    """x ** y. Where the function is flat its derivative is 0, as HIPS autograd defines it: ∂/∂x of x ** 0 is 0 at
    x = 0 (not 0 · 0⁻¹), and ∂/∂y of 0 ** y is 0 (not 0 · log 0)."""

    name = "power"

    def forward(self, x, y):
        return x**y

    def partial(self, i, out, x, y):
        if i == 0:
            return y * x ** np.where(y != 0, y - 1, 1)
        return out * np.log(np.where(x != 0, x, 1))

    def partial_graph(self, i, out, x, y):
        if i == 0:
            if type(y) is Tensor:
                return y * x ** where(y.data != 0, y - 1, np.ones_like(y.data))
            return y * x ** np.where(y != 0, y - 1, 1)
        if type(x) is Tensor:
            return out * log(where(x.data != 0, x, np.ones_like(x.data)))
        return out * np.log(np.where(x != 0, x, 1))


# --- elementwise functions and activations ---------------------------------------------------------------------
# The activations' constants: the ONNX export and the graph view read them through the catalog.
LEAKY_SLOPE = 0.01  # leaky_relu's slope below zero
ELU_ALPHA = 1.0  # elu's limit −α far below zero


def logistic(x: np.ndarray) -> np.ndarray:
    """σ(x) = 1 / (1 + e⁻ˣ) on an array, in the tanh form, which never overflows (unlike e⁻ˣ at x = −1e4)."""
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


class Exp(Elementwise):
    name = "exp"

    def forward(self, x):
        return np.exp(x)

    def partial(self, i, out, x):
        return out


class Log(Elementwise):
    name = "log"

    def forward(self, x):
        return np.log(x)

    def partial(self, i, out, x):
        return 1.0 / x


class Sin(Elementwise):
    name = "sin"

    def forward(self, x):
        return np.sin(x)

    def partial(self, i, out, x):
        return np.cos(x)

    def partial_graph(self, i, out, x):
        return cos(x)


class Cos(Elementwise):
    name = "cos"

    def forward(self, x):
        return np.cos(x)

    def partial(self, i, out, x):
        return -np.sin(x)

    def partial_graph(self, i, out, x):
        return -sin(x)


class Tanh(Elementwise):
    name = "tanh"

    def forward(self, x):
        return np.tanh(x)

    def partial(self, i, out, x):
        return 1.0 - out * out


class Sigmoid(Elementwise):
    name = "sigmoid"

    def forward(self, x):
        return logistic(x)

    def partial(self, i, out, x):
        return out * (1.0 - out)


class Relu(Elementwise):
    name = "relu"
    piecewise = True

    def forward(self, x):
        return np.maximum(x, 0.0)

    def partial(self, i, out, x):
        return x > 0.0


class LeakyRelu(Elementwise):
    name = "leaky_relu"
    piecewise = True

    def forward(self, x, slope=LEAKY_SLOPE):
        return np.where(x > 0.0, x, x * slope)

    def partial(self, i, out, x, slope=LEAKY_SLOPE):
        one, small = x.dtype.type(1.0), x.dtype.type(slope)
        return np.where(x > 0.0, one, small)


class Elu(Elementwise):
    name = "elu"

    def forward(self, x, alpha=ELU_ALPHA):
        return np.where(x > 0.0, x, alpha * np.expm1(np.minimum(x, 0.0)))

    def partial(self, i, out, x, alpha=ELU_ALPHA):
        return np.where(x > 0.0, x.dtype.type(1.0), out + alpha)

    def partial_graph(self, i, out, x, alpha=ELU_ALPHA):
        return where(x.data > 0.0, np.ones_like(x.data), out + alpha)


class Softplus(Elementwise):
    name = "softplus"

    def forward(self, x):
        return np.logaddexp(0.0, x)

    def partial(self, i, out, x):
        return logistic(x)

    def partial_graph(self, i, out, x):
        return sigmoid(x)


class Abs(Elementwise):
    name = "abs"
    piecewise = True

    def forward(self, x):
        return np.abs(x)

    def partial(self, i, out, x):
        return np.sign(x)


class Sqrt(Elementwise):
    name = "sqrt"

    def forward(self, x):
        return np.sqrt(x)

    def partial(self, i, out, x):
        return 0.5 / out


class Maximum(Elementwise):
    name = "maximum"
    piecewise = True

    def forward(self, x, y):
        return np.maximum(x, y)

    def partial(self, i, out, x, y):
        # Ties share the gradient equally, the symmetric choice at the kink.
        first, second = (x, y) if i == 0 else (y, x)
        return (first > second) + out.dtype.type(0.5) * (first == second)


class Minimum(Elementwise):
    name = "minimum"
    piecewise = True

    def forward(self, x, y):
        return np.minimum(x, y)

    def partial(self, i, out, x, y):
        first, second = (x, y) if i == 0 else (y, x)
        return (first < second) + out.dtype.type(0.5) * (first == second)


class Clip(Elementwise):
    name = "clip"
    piecewise = True

    def forward(self, x, low=None, high=None):
        return np.clip(x, low, high)

    def partial(self, i, out, x, low=None, high=None):
        return out == x


class Where(Primitive):
    """where(condition, x, y): the condition is a plain boolean array and gets no gradient."""

    name = "where"

    def forward(self, condition, x, y):
        return np.where(condition, x, y)

    def vjp(self, i, g, out, condition, x, y):
        return np.where(condition, g, 0.0) if i == 1 else np.where(condition, 0.0, g)

    jvp = vjp

    def vjp_graph(self, i, g, out, condition, x, y):
        zero = np.zeros_like(g.data)
        return where(condition, g, zero) if i == 1 else where(condition, zero, g)

    jvp_graph = vjp_graph


# --- reductions ------------------------------------------------------------------------------------------------
def _expand(g: np.ndarray, axis: Any, keepdims: bool) -> np.ndarray:
    """Put back the axes a reduction removed, so `g` broadcasts against the reduced input."""
    if keepdims or axis is None:
        return g
    return np.expand_dims(g, axis)


def _expand_graph(g: Tensor, axis: Any, keepdims: bool) -> Tensor:
    """`_expand` on a tensor: a reshape to the reduced input's rank with size-1 axes where it was reduced."""
    if keepdims or axis is None:
        return g
    return reshape(g, shape=np.expand_dims(g.data, axis).shape)


class Sum(Primitive):
    name = "sum"

    def forward(self, x, axis=None, keepdims=False):
        return np.sum(x, axis=axis, keepdims=keepdims)

    def vjp(self, i, g, out, x, axis=None, keepdims=False):
        return np.broadcast_to(_expand(g, axis, keepdims), x.shape)

    def jvp(self, i, t, out, x, axis=None, keepdims=False):
        return np.sum(t, axis=axis, keepdims=keepdims)

    def vjp_graph(self, i, g, out, x, axis=None, keepdims=False):
        return broadcast_to(_expand_graph(g, axis, keepdims), shape=x.shape)

    def jvp_graph(self, i, t, out, x, axis=None, keepdims=False):
        return sum(t, axis=axis, keepdims=keepdims)


class Mean(Primitive):
    name = "mean"

    def forward(self, x, axis=None, keepdims=False):
        return np.mean(x, axis=axis, keepdims=keepdims)

    def vjp(self, i, g, out, x, axis=None, keepdims=False):
        return np.broadcast_to(_expand(g, axis, keepdims) * (out.size / x.size), x.shape)

    def jvp(self, i, t, out, x, axis=None, keepdims=False):
        return np.mean(t, axis=axis, keepdims=keepdims)

    def vjp_graph(self, i, g, out, x, axis=None, keepdims=False):
        return broadcast_to(_expand_graph(g, axis, keepdims) * (out.size / x.size), shape=x.shape)

    def jvp_graph(self, i, t, out, x, axis=None, keepdims=False):
        return mean(t, axis=axis, keepdims=keepdims)


class Max(Primitive):
    name = "max"

    def forward(self, x, axis=None, keepdims=False):
        return np.max(x, axis=axis, keepdims=keepdims)

    def _share(self, out, x, axis, keepdims):
        # Each maximal entry gets an equal share (ties split the gradient, as in numpy-based autodiff systems).
        hit = x == _expand(out, axis, keepdims)
        return hit / np.sum(hit, axis=axis, keepdims=True, dtype=x.dtype)

    def vjp(self, i, g, out, x, axis=None, keepdims=False):
        return _expand(g, axis, keepdims) * self._share(out, x, axis, keepdims)

    def jvp(self, i, t, out, x, axis=None, keepdims=False):
        return np.sum(t * self._share(out, x, axis, keepdims), axis=axis, keepdims=keepdims)

    def vjp_graph(self, i, g, out, x, axis=None, keepdims=False):
        return _expand_graph(g, axis, keepdims) * self._share(out.data, x.data, axis, keepdims)

    def jvp_graph(self, i, t, out, x, axis=None, keepdims=False):
        return sum(t * self._share(out.data, x.data, axis, keepdims), axis=axis, keepdims=keepdims)


class LogSumExp(Primitive):
    name = "logsumexp"

    def forward(self, x, axis=None, keepdims=False):
        peak = np.max(x, axis=axis, keepdims=True)
        peak = np.where(np.isfinite(peak), peak, 0.0)  # all -inf rows stay -inf instead of nan
        total = np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True)) + peak
        return total if keepdims else np.squeeze(total, axis=axis)

    def _softmax(self, out, x, axis, keepdims):
        return np.exp(x - _expand(out, axis, keepdims))

    def vjp(self, i, g, out, x, axis=None, keepdims=False):
        return _expand(g, axis, keepdims) * self._softmax(out, x, axis, keepdims)

    def jvp(self, i, t, out, x, axis=None, keepdims=False):
        return np.sum(t * self._softmax(out, x, axis, keepdims), axis=axis, keepdims=keepdims)

    def _softmax_graph(self, out, x, axis, keepdims):
        return exp(x - _expand_graph(out, axis, keepdims))

    def vjp_graph(self, i, g, out, x, axis=None, keepdims=False):
        return _expand_graph(g, axis, keepdims) * self._softmax_graph(out, x, axis, keepdims)

    def jvp_graph(self, i, t, out, x, axis=None, keepdims=False):
        return sum(t * self._softmax_graph(out, x, axis, keepdims), axis=axis, keepdims=keepdims)


class LogSoftmax(Primitive):
    name = "log_softmax"

    def forward(self, x, axis=-1):
        return x - LOGSUMEXP.forward(x, axis=axis, keepdims=True)

    def vjp(self, i, g, out, x, axis=-1):
        return g - np.exp(out) * np.sum(g, axis=axis, keepdims=True)

    def jvp(self, i, t, out, x, axis=-1):
        return t - np.sum(np.exp(out) * t, axis=axis, keepdims=True)

    def vjp_graph(self, i, g, out, x, axis=-1):
        return g - exp(out) * sum(g, axis=axis, keepdims=True)

    def jvp_graph(self, i, t, out, x, axis=-1):
        return t - sum(exp(out) * t, axis=axis, keepdims=True)


# --- shapes and indexing ---------------------------------------------------------------------------------------
class Reshape(Primitive):
    name = "reshape"

    def forward(self, x, shape):
        return np.reshape(x, shape)

    def vjp(self, i, g, out, x, shape):
        return np.reshape(g, x.shape)

    def jvp(self, i, t, out, x, shape):
        return np.reshape(t, shape)

    def vjp_graph(self, i, g, out, x, shape):
        return reshape(g, shape=x.shape)

    def jvp_graph(self, i, t, out, x, shape):
        return reshape(t, shape=shape)


class Transpose(Primitive):
    name = "transpose"

    def forward(self, x, axes=None):
        return np.transpose(x, axes)

    def vjp(self, i, g, out, x, axes=None):
        return np.transpose(g, None if axes is None else np.argsort(axes))

    def jvp(self, i, t, out, x, axes=None):
        return np.transpose(t, axes)

    def vjp_graph(self, i, g, out, x, axes=None):
        return transpose(g, axes=None if axes is None else tuple(np.argsort(axes)))

    def jvp_graph(self, i, t, out, x, axes=None):
        return transpose(t, axes=axes)


class GetItem(Primitive):
    name = "getitem"

    def forward(self, x, index):
        return x[index]

    def vjp(self, i, g, out, x, index):
        # Scatter-add: an entry picked several times (fancy indexing) collects every gradient sent to it.
        full = np.zeros_like(x)
        np.add.at(full, index, g)
        return full

    def jvp(self, i, t, out, x, index):
        return t[index]

    def vjp_graph(self, i, g, out, x, index):
        return index_add(g, index=index, shape=x.shape)


class IndexAdd(Primitive):
    """A zero array of `shape` with g added at `index` (repeated entries collect every addend): getitem's VJP."""

    name = "index_add"

    def forward(self, g, index, shape):
        full = np.zeros(shape, g.dtype)
        np.add.at(full, index, g)
        return full

    def vjp(self, i, g, out, x, index, shape):
        return g[index]

    def jvp(self, i, t, out, x, index, shape):
        return self.forward(t, index, shape)

    def jvp_graph(self, i, t, out, x, index, shape):
        return index_add(t, index=index, shape=shape)


class BroadcastTo(Primitive):
    """x repeated along new leading axes and its size-1 axes to `shape` (numpy broadcasting, as a copy)."""

    name = "broadcast_to"

    def forward(self, x, shape):
        return np.broadcast_to(x, shape).copy()

    def vjp(self, i, g, out, x, shape):
        return g  # summed back to x's shape by the reverse pass, as for any broadcast

    def jvp(self, i, t, out, x, shape):
        return np.broadcast_to(t, shape)

    def jvp_graph(self, i, t, out, x, shape):
        return broadcast_to(t, shape=shape)


def _block(axis: int, start: int, stop: int, ndim: int) -> tuple:
    index = [slice(None)] * ndim
    index[axis] = slice(start, stop)
    return tuple(index)


class Concatenate(Primitive):
    name = "concatenate"

    def forward(self, *xs, axis=0):
        return np.concatenate(xs, axis=axis)

    def _where(self, i, xs, axis, ndim):
        start = builtins.sum(x.shape[axis] for x in xs[:i])
        return _block(axis, start, start + xs[i].shape[axis], ndim)

    def vjp(self, i, g, out, *xs, axis=0):
        return g[self._where(i, xs, axis, g.ndim)]

    def jvp(self, i, t, out, *xs, axis=0):
        full = np.zeros_like(out)
        full[self._where(i, xs, axis, out.ndim)] = t
        return full

    def jvp_graph(self, i, t, out, *xs, axis=0):
        return index_add(t, index=self._where(i, xs, axis, out.ndim), shape=out.shape)


class Stack(Primitive):
    name = "stack"

    def forward(self, *xs, axis=0):
        return np.stack(xs, axis=axis)

    def vjp(self, i, g, out, *xs, axis=0):
        return np.take(g, i, axis=axis)

    def jvp(self, i, t, out, *xs, axis=0):
        full = np.zeros_like(out)
        np.moveaxis(full, axis, 0)[i] = t
        return full

    def _at(self, i, axis, ndim):
        return (slice(None),) * (axis % ndim) + (i,)

    def vjp_graph(self, i, g, out, *xs, axis=0):
        return g[self._at(i, axis, out.ndim)]

    def jvp_graph(self, i, t, out, *xs, axis=0):
        return index_add(t, index=self._at(i, axis, out.ndim), shape=out.shape)


class MatMul(Primitive):
    """x @ y with numpy's rules: batched stacks broadcast, a 1-D operand is a row (left) or a column (right)."""

    name = "matmul"

    def forward(self, x, y):
        return np.matmul(x, y)

    def vjp(self, i, g, out, x, y):
        # Restore the axes numpy dropped for vector operands, so both cases are plain matrix products.
        if y.ndim == 1:
            g = g[..., None]
        if x.ndim == 1:
            g = g[..., None, :]
        if i == 0:
            gx = g @ np.swapaxes(y if y.ndim > 1 else y[:, None], -1, -2)
            return gx[..., 0, :] if x.ndim == 1 else gx
        gy = np.swapaxes(x if x.ndim > 1 else x[None, :], -1, -2) @ g
        return gy[..., 0] if y.ndim == 1 else gy

    def jvp(self, i, t, out, x, y):
        return t @ y if i == 0 else x @ t

    def vjp_graph(self, i, g, out, x, y):
        # The same products on tensors: vector operands as 1×k rows and k×1 columns, g with those axes put back.
        xm = x if x.ndim > 1 else reshape(x, shape=(1, x.shape[0]))
        ym = y if y.ndim > 1 else reshape(y, shape=(y.shape[0], 1))
        shape = out.shape + (1,) if y.ndim == 1 else out.shape
        gm = reshape(g, shape=shape[:-1] + (1,) + shape[-1:] if x.ndim == 1 else shape)
        if i == 0:
            gx = gm @ _swap(ym)
            return gx if x.ndim > 1 else reshape(gx, shape=gx.shape[:-2] + gx.shape[-1:])
        gy = _swap(xm) @ gm
        return gy if y.ndim > 1 else reshape(gy, shape=gy.shape[:-1])


def _swap(a: Any) -> Any:
    """a with its last two axes exchanged."""
    axes = tuple(range(a.ndim - 2)) + (a.ndim - 1, a.ndim - 2)
    return transpose(a, axes=axes) if type(a) is Tensor else np.transpose(a, axes)


ADD, SUBTRACT, NEGATIVE, MULTIPLY, DIVIDE, POWER = Add(), Subtract(), Negative(), Multiply(), Divide(), Power()
LOGSUMEXP = LogSumExp()

add, subtract, negative, multiply, divide, power = ADD, SUBTRACT, NEGATIVE, MULTIPLY, DIVIDE, POWER
exp, log, sin, cos, tanh, sigmoid = Exp(), Log(), Sin(), Cos(), Tanh(), Sigmoid()
relu, leaky_relu, elu, softplus, abs, sqrt = Relu(), LeakyRelu(), Elu(), Softplus(), Abs(), Sqrt()
maximum, minimum, clip, where = Maximum(), Minimum(), Clip(), Where()
sum, mean, max, logsumexp, log_softmax = Sum(), Mean(), Max(), LOGSUMEXP, LogSoftmax()
reshape, transpose, getitem, concatenate, stack, matmul = Reshape(), Transpose(), GetItem(), Concatenate(), Stack(), MatMul()
index_add, broadcast_to = IndexAdd(), BroadcastTo()
