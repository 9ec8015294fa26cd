"""Peer projects' gradient tests, ported to autobp's engine: every case HIPS autograd's tests/test_systematic.py,
test_numpy.py, test_core.py, test_graphs.py, test_binary_ops.py and test_scalar_ops.py and micrograd's
test/test_engine.py pose that autobp's primitives can express, each named by its source (file::test).

autograd's cases run through its `check_grads` as restated in peer_checks.py, at autograd's tolerances (1e-6) and
orders (2 by default, 3 where autograd asks for 3, 1 for test_core, which checks first derivatives only, with its
own 1e-4). Inputs follow autograd's (shapes, ranges; fresh seeded random values; no complex numbers). Functions
numpy has and autobp has no primitive for are written in autobp's primitives where that is what numpy computes
(min as −max(−x), var, outer, inner, dot on at most two dimensions); the others (tensordot, einsum, fft,
cumsum, …) are not ported. micrograd's cases compare with PyTorch there; here with the derivatives worked out by
hand and with central differences.
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
from peer_checks import check_grads

from autobp.engine import Tensor, grad, ops

RNG = np.random.default_rng(0)


def R(*shape: int) -> np.ndarray:  # autograd's tests: npr.randn(*shape)
    return RNG.standard_normal(shape)


def rand(*shape: int) -> np.ndarray:  # npr.rand(*shape)
    return RNG.random(shape)


@dataclass
class Case:
    source: str
    fn: Callable
    args: tuple
    order: int = 2
    modes: tuple[str, ...] = ("fwd", "rev")


CASES: list[Case] = []


def port(source: str, fn: Callable, *args: Any, order: int = 2, modes: tuple[str, ...] = ("fwd", "rev")) -> None:
    CASES.append(Case(source, fn, args, order, modes))


# numpy functions autobp has no single primitive for, in autobp's primitives
def amin(x: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    return -ops.max(-x, axis=axis, keepdims=keepdims)


def var(x: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    centered = x - ops.mean(x, axis=axis, keepdims=True)
    return ops.mean(centered * centered, axis=axis, keepdims=keepdims)


def std(x: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    return ops.sqrt(var(x, axis=axis, keepdims=keepdims))


def outer(x: Tensor, y: Tensor) -> Tensor:
    return x.reshape(-1, 1) * y.reshape(1, -1)


def dot(x: Tensor, y: Tensor) -> Tensor:  # np.dot where it is a product or a matrix product
    return x * y if x.ndim == 0 or y.ndim == 0 else x @ y


def inner(x: Tensor, y: Tensor) -> Tensor:
    if x.ndim == 0 or y.ndim == 0:
        return x * y
    return x @ (y.T if y.ndim > 1 else y)


def square(x: Tensor) -> Tensor:
    return x**2.0


def transform(lims: tuple[float, float], x: Any) -> np.ndarray:
    return np.asarray(x) * (lims[1] - lims[0]) + lims[0]


# --- autograd tests/test_systematic.py ---------------------------------------------------------------------------
def stat_check(name: str, fn: Callable, size_one: bool = True) -> None:
    """numpy_utils.stat_check: a scalar, then arrays with axis None/0(/1) and keepdims both ways (real inputs)."""
    src = f"autograd tests/test_systematic.py::test_{name}"
    for x in (3.5, R()):
        port(src, fn, x)
    for x, axis, keep in itertools.product([R(3), R(2, 3), R(1, 3)], [None, 0], [True, False]):
        port(src, lambda t, a=axis, k=keep: fn(t, axis=a, keepdims=k), x)
    for x, axis, keep in itertools.product([R(2, 3), R(1, 3)], [None, 0, 1], [True, False]):
        port(src, lambda t, a=axis, k=keep: fn(t, axis=a, keepdims=k), x)


for _name, _fn in [("max", ops.max), ("mean", ops.mean), ("min", amin), ("sum", ops.sum), ("var", var)]:
    stat_check(_name, _fn)
# std: autograd's inputs include zero variances (a scalar, a reduction over one entry), where √ has no derivative.
for _x, _axis in [(R(3), None), (R(3), 0), (R(2, 3), None), (R(2, 3), 0), (R(2, 3), 1), (R(1, 3), 1)]:
    for _keep in (True, False):
        port("autograd tests/test_systematic.py::test_std", lambda t, a=_axis, k=_keep: std(t, axis=a, keepdims=k), _x)


def unary_ufunc_check(name: str, fn: Callable, lims: tuple[float, float] = (-2.0, 2.0)) -> None:
    for x in (transform(lims, 0.4), transform(lims, rand(2)), transform(lims, rand(3, 2)), transform(lims, rand(1, 2))):
        port(f"autograd tests/test_systematic.py::test_{name}", fn, x)


unary_ufunc_check("sin", ops.sin)
unary_ufunc_check("abs", ops.abs, (0.1, 4.0))
unary_ufunc_check("absolute", ops.abs, (0.1, 4.0))
unary_ufunc_check("cos", ops.cos)
unary_ufunc_check("exp", ops.exp)
unary_ufunc_check("log", ops.log, (0.2, 2.0))
unary_ufunc_check("sqrt", ops.sqrt, (1.0, 3.0))
unary_ufunc_check("square", square)
unary_ufunc_check("tanh", ops.tanh)


def binary_ufunc_check(name: str, fn: Callable, lims_a=(-2.0, 2.0), lims_b=(-2.0, 2.0)) -> None:
    shapes = [0.6, rand(2), rand(3, 2), rand(1, 2)]
    for a, b in itertools.product(shapes, shapes):
        port(f"autograd tests/test_systematic.py::test_{name}", fn, transform(lims_a, a), transform(lims_b, b))


binary_ufunc_check("add", operator.add)
binary_ufunc_check("true_divide", operator.truediv, lims_b=(0.8, 1.2))
binary_ufunc_check("true_divide_neg", operator.truediv, lims_b=(-0.3, -2.0))
binary_ufunc_check("op_mul", operator.mul)
binary_ufunc_check("op_add", operator.add)
binary_ufunc_check("op_sub", operator.sub)
for _name, _fn in [("maximum", ops.maximum), ("minimum", ops.minimum)]:
    for _a, _b in itertools.product([R(1), R(1, 4), R(3, 4)], [R(1), R(1, 4), R(3, 4)]):
        port(f"autograd tests/test_systematic.py::test_{_name}", _fn, _a, _b)
for _axes in [None, (0, 1, 2), (0, 2, 1), (2, 0, 1), (2, 1, 0), (1, 0, 2), (1, 2, 0)]:
    port("autograd tests/test_systematic.py::test_transpose", lambda t, a=_axes: ops.transpose(t, axes=a), R(2, 3, 4))
for _a, _b in itertools.product([1.5, R(3), R(2, 3)], [0.3, R(3), R(4, 3)]):
    port("autograd tests/test_systematic.py::test_inner", inner, _a, _b)
for _a, _b in itertools.product([1.5, R(3), R(2, 3), R(2, 2, 3)], [0.3, R(3), R(3, 4)]):
    if not (np.ndim(_a) == 3 and np.ndim(_b) == 2):  # np.dot of 3-D by 2-D is not a matrix product
        port("autograd tests/test_systematic.py::test_dot", dot, _a, _b, order=3)
port("autograd tests/test_systematic.py::test_outer", outer, R(3), R(3), order=3)
for _a, _b in itertools.product([R(3), R(2, 3), R(2, 2, 3)], [R(3), R(3, 4), R(2, 3, 4)]):
    port("autograd tests/test_systematic.py::test_matmul", ops.matmul, _a, _b)
port("autograd tests/test_systematic.py::test_matmul_broadcast", ops.matmul, R(1, 2, 2), R(3, 2, 1))
port("autograd tests/test_systematic.py::test_concatenate_1ist", lambda a, b: ops.concatenate(a, b, axis=0), R(1), R(3))
for _axis in (0, 1):
    port("autograd tests/test_systematic.py::test_concatenate_2d",
         lambda a, b, k=_axis: ops.concatenate(a, b, axis=k), R(2, 2), R(2, 2))  # fmt: skip
for _axis in (0, 1, 2):
    port("autograd tests/test_systematic.py::test_concatenate_3d",
         lambda a, b, k=_axis: ops.concatenate(a, b, axis=k), R(2, 2, 2), R(2, 2, 2))  # fmt: skip
for _axis in (0, 1):
    port("autograd tests/test_systematic.py::test_stack_1d", lambda a, k=_axis: ops.stack(a, axis=k), R(2))
    port("autograd tests/test_systematic.py::test_stack_1d", lambda a, b, k=_axis: ops.stack(a, b, axis=k), R(2), R(2))

# --- autograd tests/test_numpy.py --------------------------------------------------------------------------------
NP = "autograd tests/test_numpy.py::test_"
_mat1, _mat2, _v1, _v2, _v3 = R(10, 11), R(10, 11), R(10), R(11), R(11)
for _a, _b in [(_mat1, _v2), (_mat1, _mat2.T), (_v1, _mat1), (_v2, _v3)]:
    port(NP + "dot", dot, _a, _b)
for _a, _b in [(_mat1, R()), (R(), _mat1), (_v1, R()), (R(), _v1)]:
    port(NP + "dot_with_floats", dot, _a, _b)
for _ in range(3):
    port(NP + "outer", outer, _v2, _v3)
port(NP + "max", ops.max, R(10, 11))
port(NP + "max_axis", lambda x: ops.max(x, axis=1), R(3, 4, 5))
port(NP + "max_axis_keepdims", lambda x: ops.max(x, axis=1, keepdims=True), R(3, 4, 5))
port(NP + "min", amin, R(10, 11))
port(NP + "min_axis", lambda x: amin(x, axis=1), R(3, 4, 5))
port(NP + "min_axis_keepdims", lambda x: amin(x, axis=1, keepdims=True), R(3, 4, 5))
port(NP + "sum_1", ops.sum, R(10, 11))
port(NP + "sum_2", lambda x: ops.sum(x, axis=0), R(10, 11))
port(NP + "sum_3", lambda x: ops.sum(x, axis=0, keepdims=True), R(10, 11))
port(NP + "sum_with_axis_tuple", lambda x: ops.sum(x, axis=(1, 2)), R(10, 11, 7))
port(NP + "plain_numpy_reductions_on_box", lambda x, y: x + y, R(10, 11), R(10, 11))
port(NP + "mean_1", ops.mean, R(10, 11))
port(NP + "mean_2", lambda x: ops.mean(x, axis=0), R(10, 11))
port(NP + "mean_3", lambda x: ops.mean(x, axis=0, keepdims=True), R(10, 11))
_A = R(5, 6, 4)
port(NP + "index_ints", lambda x: x[3, 0, 1], _A)
port(NP + "index_slice", lambda x: x[::-1, 2:4, :], _A)
port(NP + "index_lists", lambda x: x[[0, 1, 2], :, :], _A)
port(NP + "index_mixed", lambda x: x[3, 2:, [1, 3]], _A)
port(NP + "vector_slice", lambda x: x[2:4], R(5))
port(NP + "index_slice_fanout", lambda x: x[::-1, 2:4, :] + x[::-1, 3:5, :], _A)
port(NP + "index_multiple_slices", lambda x: x[2:6][1:3], R(7))
port(NP + "reshape_method", lambda x: x.reshape((5 * 4, 6)), _A)
port(NP + "reshape_call", lambda x: ops.reshape(x, shape=(5 * 4, 6)), _A)
port(NP + "reshape_method_nolist", lambda x: x.reshape(5 * 4, 6), _A)
port(NP + "ravel_method", lambda x: x.reshape(-1), _A)
_B4 = R(4, 6, 4)
port(NP + "simple_concatenate", lambda x: ops.concatenate(Tensor(_A), x), _B4)
port(NP + "concatenate_axis_0", lambda x: ops.concatenate(Tensor(_A), x, Tensor(_A)), R(5, 6, 4))
port(NP + "concatenate_axis_1", lambda x: ops.concatenate(Tensor(_A), x, Tensor(_A), axis=1), R(5, 6, 4))
port(NP + "transpose", lambda x: x.T, R(8, 8))
port(NP + "clip", lambda x: ops.clip(x, low=0.1, high=1.1), R(5, 5))
port(NP + "1d_array", lambda x: ops.stack(x, x * 1.0, x + 2.5), 3.0)
port(NP + "2d_array", lambda x: ops.stack(ops.stack(x, x * 1.0, x + 2.5), ops.stack(x**2.0, x, x / 2.0)), 3.0)
port(NP + "1d_array_fanout", lambda x: (a := ops.stack(x, x * 1.0, x + 2.5)) + a, 3.0)
port(NP + "2d_array_fanout",
     lambda x: (a := ops.stack(ops.stack(x, x * 1.0, x + 2.5), ops.stack(x**2.0, x, x / 2.0))) + a, 3.0)  # fmt: skip
_C = R(4, 5) > 0
port(NP + "where", lambda x, y: ops.where(_C, x, y), R(4, 5), R(4, 5))
port(NP + "squeeze_func", lambda x: x.reshape(5, 4), R(5, 1, 4))
port(NP + "expand_dims", lambda x: x.reshape(5, 1, 1, 4), R(5, 1, 4))
port(NP + "multi_index", lambda x: x[[0, 0]].sum(), R(3))
port(NP + "multi_index2", lambda x: x[[0, 1, 0]].sum(), R(3))
port(NP + "index_dot_slices", lambda x: x[:2] @ x[2:], R(4))
port(NP + "max_equal_values", lambda x: ops.max(ops.stack(x, x)), 1.0)
_half = Tensor(np.array(0.5))
for _x in (1.0, -1.0):
    port(NP + "max_equal_values_2d",
         lambda x: ops.max(ops.stack(ops.stack(x, x), ops.stack(x, _half)), axis=1), _x)  # fmt: skip
    port(NP + "min_3_way_equality", lambda x: amin(ops.stack(ops.stack(x, x, x), ops.stack(x, _half, _half),
                                                             ops.stack(_half, _half, _half), ops.stack(x, x, _half)),
                                                   axis=0), _x)  # fmt: skip
port(NP + "maximum_equal_values", lambda x: ops.maximum(x, x), 1.0)
for _x in (1.0, -1.0, 2.0):
    port(NP + "maximum_equal_values_2d", lambda x: ops.maximum(
        ops.stack(x, x, _half), ops.stack(ops.stack(x, _half, x), ops.stack(x, x, _half))), _x)  # fmt: skip
# --- autograd tests/test_binary_ops.py ---------------------------------------------------------------------------
BIN = "autograd tests/test_binary_ops.py::test_"
_pairs = list(itertools.product([2.0, R(4), R(3, 4), R(1, 4)], repeat=2))
for _a, _b in _pairs:
    port(BIN + "mul", operator.mul, _a, _b)
    port(BIN + "add", operator.add, _a, _b)
    port(BIN + "sub", operator.sub, _a, _b)
    port(BIN + "div", operator.truediv, np.sqrt(np.square(_a) + 0.5), np.sqrt(np.square(_b) + 0.5))
    port(BIN + "pow", operator.pow, np.abs(_a) + 1.1, _b)

# --- autograd tests/test_scalar_ops.py ---------------------------------------------------------------------------
SC = "autograd tests/test_scalar_ops.py::test_"
for _x in (1.1, -1.1):
    port(SC + "abs", lambda x: 3.0 * ops.abs(x), _x)
    port(SC + "absolute", lambda x: 3.0 * ops.abs(x), _x)
port(SC + "abs", lambda x: 3.0 * ops.abs(x), 0.0, order=1)
port(SC + "absolute", lambda x: 3.0 * ops.abs(x), 0.0, order=1)
port(SC + "sin", lambda x: 3.0 * ops.sin(x), R())
port(SC + "exp", lambda x: 3.0 * ops.exp(x), R())
port(SC + "log", lambda x: 3.0 * ops.log(x), abs(R()))
port(SC + "neg", lambda x: 3.0 * -x, R())
port(SC + "cos", lambda x: 3.0 * ops.cos(x), R())
port(SC + "tanh", lambda x: 3.0 * ops.tanh(x), R())
port(SC + "sqrt", lambda x: 3.0 * ops.sqrt(x), 10.0 * rand())
_y = R() ** 2 + 1.0
port(SC + "power_arg0", lambda x: x**_y, rand() ** 2 + 1.0)
_x0 = R() ** 2
port(SC + "power_arg1", lambda y: Tensor(_x0) ** y, rand() ** 2)
port(SC + "power_arg1_zero", lambda y: Tensor(np.array(0.0)) ** y, rand() ** 2)
for _name in ("divide_arg0", "divide_arg1", "true_divide_arg0", "true_divide_arg1"):
    port(SC + _name, operator.truediv, rand(), rand())
for _name in ("multiply_arg0", "multiply_arg1"):
    port(SC + _name, operator.mul, rand(), rand())
port(SC + "reciprocal", lambda x: 1.0 / x, rand())
port(SC + "negative", ops.negative, rand())

# --- autograd tests/test_graphs.py -------------------------------------------------------------------------------
GR = "autograd tests/test_graphs.py::test_"


def fanout(x: Tensor) -> Tensor:
    return ops.sin(ops.sin(x) + ops.sin(x))


port(GR + "grad_fanout", fanout, R())
port(GR + "grad_fanout", grad(fanout), rand())
_randv = R(10)


def _sin_dot(x: Tensor) -> Tensor:
    return ops.sin(x @ _randv)


def _vector_product(x: Tensor, v: Tensor) -> Tensor:
    return ops.sin(v @ grad(_sin_dot)(x))


port(GR + "hess_vector_prod", _sin_dot, R(10))
port(GR + "hess_vector_prod", _vector_product, R(10), R(10))
port(GR + "enclosing_scope_ref", lambda x: x * grad(lambda y: x * y)(np.array(2.0)), 1.0)
port(GR + "enclosing_scope_ref_2", lambda x: x * grad(lambda y: y * x)(np.array(2.0)), 1.0)


def _mutating(a: Tensor) -> Tensor:
    b = a + 1.0
    return (a + b) + (b + 1.5)


def _mutating_indexed(a: Tensor) -> Tensor:
    b = a + 1.0
    return (a + b) + (b[0] + 1.5)


port(GR + "mutating_outgrad", _mutating, R(5))
port(GR + "mutating_outgrad_from_indexing", _mutating_indexed, R(5))
# test_third_derivative: autograd's test takes grad of fun three times (not of each other), checked at order 2.
port(GR + "third_derivative", fanout, R())
for _ in range(3):
    port(GR + "third_derivative", grad(fanout), rand())


def _two(x: Tensor, y: Tensor) -> Tensor:
    return ops.sin(ops.sin(x) + ops.sin(y))


port(GR + "third_derivative_other_args", _two, R(), R())
for _argnum in (0, 1, 0):
    port(GR + "third_derivative_other_args", grad(_two, _argnum), R(), R())
port(GR + "third_derivative_other_args2", _two, R(), R())
for _argnum in (1, 0, 1):
    port(GR + "third_derivative_other_args2", grad(_two, _argnum), R(), R())
for _name, _axis, _keep, _shape in [("", None, True, (3, 3)), ("_axis0", 0, False, (3, 1)), ("_axis1", 1, False, (1, 3)),
                                    ("_axis0_keepdims", 0, True, (3, 1)), ("_axis1_keepdims", 1, True, (1, 3))]:  # fmt: skip
    def _singleton(x: Tensor, a=_axis, k=_keep) -> Tensor:
        return ops.sum(ops.sin(x), axis=a, keepdims=k)

    port(GR + "singleton_array_output" + _name, _singleton, R(*_shape))
    port(GR + "singleton_array_output" + _name, lambda x, f=_singleton: ops.sum(grad(f)(x)), R(*_shape))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.source.split('::')[1]}-{i}" for i, c in enumerate(CASES)])
def test_autograd_case(case: Case) -> None:
    check_grads(case.fn, *case.args, order=case.order, modes=case.modes)


# --- autograd tests/test_graphs.py: cases with exact answers --------------------------------------------------
def test_graphs_grad_const_and_identity() -> None:
    """autograd tests/test_graphs.py::test_grad_const and ::test_grad_identity."""
    assert grad(lambda x: Tensor(np.array(1.0)))(2.0) == 0.0
    df = grad(lambda x: x)
    assert df(2.0) == 1.0
    assert grad(lambda x: df(x))(2.0) == 0.0


def test_numpy_mean_var_std_of_lists_of_boxes() -> None:
    """autograd tests/test_numpy.py::test_mean_list_of_boxes, ::test_var_list_of_boxes, ::test_std_list_of_boxes."""
    assert grad(lambda x: ops.mean(ops.stack(x, x + 2.0)))(0.0) == 1.0
    assert grad(lambda x: var(ops.stack(x, x + 2.0)))(0.0) == 0.0
    assert grad(lambda x: std(ops.stack(x, x + 2.0)))(0.0) == 0.0


def test_scalar_power_with_zero_exponent_at_zero() -> None:
    """autograd tests/test_scalar_ops.py::test_power_arg0, the y == 0 special case (autograd issue #116)."""
    fun = lambda x: x**0.0  # noqa: E731
    assert grad(fun)(0.0) == 0.0
    assert grad(lambda x: grad(fun)(x))(0.0) == 0.0


def test_binary_comparisons_have_zero_gradients() -> None:
    """autograd tests/test_binary_ops.py::test_comparison_grads: comparisons are constants (zero gradients)."""
    compare = [operator.lt, operator.le, operator.gt, operator.ge]
    for a, b in _pairs:
        for op in compare:
            f = lambda x, y, op=op: Tensor(np.sum(op(x, y)) + 0.0) + 0.0 * (x.sum() + y.sum())  # noqa: E731
            gx, gy = grad(f, [0, 1])(a, b)
            assert np.all(gx == 0) and np.all(gy == 0)


@pytest.mark.parametrize("name,fun", [("add", operator.add), ("sub", operator.sub), ("div", operator.truediv),
                                      ("mul", operator.mul), ("pow", operator.pow)])  # fmt: skip
def test_core_binary_functions(name: str, fun: Callable) -> None:
    """autograd tests/test_core.py::test_{add,sub,div,mul,pow}: grad against a central difference (step 1e-4)
    in each argument at (0.7, 1.8), to 1e-4 absolute plus 1e-4 relative (its check_close)."""
    x, y, eps = 0.7, 1.8, 1e-4
    gx, gy = grad(fun, [0, 1])(x, y)
    nx = (fun(Tensor(x + eps / 2), Tensor(y)).item() - fun(Tensor(x - eps / 2), Tensor(y)).item()) / eps
    ny = (fun(Tensor(x), Tensor(y + eps / 2)).item() - fun(Tensor(x), Tensor(y - eps / 2)).item()) / eps
    assert abs(gx - nx) < 1e-4 + 1e-4 * abs(nx)
    assert abs(gy - ny) < 1e-4 + 1e-4 * abs(ny)


# --- micrograd test/test_engine.py ----------------------------------------------------------------------------
def test_micrograd_sanity_check() -> None:
    """micrograd test/test_engine.py::test_sanity_check (there against PyTorch; here against the hand-worked
    derivative and central differences)."""
    def f(x: Tensor) -> Tensor:
        z = 2 * x + 2 + x
        q = z.relu() + z * x
        h = (z * z).relu()
        return h + q + q * x

    x = Tensor(-4.0, requires_grad=True)
    y = f(x)
    y.backward()
    assert y.item() == -20.0  # z = −10, q = 40, h = 100
    assert x.grad == 46.0  # y = z² + z·x·(1 + x) where z < 0: 6z + (6x + 2)(1 + x) + 3x² + 2x
    check_grads(f, -4.0)


def test_micrograd_more_ops() -> None:
    """micrograd test/test_engine.py::test_more_ops, at its tolerance 1e-6 (values from micrograd's README, which
    PyTorch agrees with), plus central differences at order 2."""
    def g_of(a: Tensor, b: Tensor) -> Tensor:
        c = a + b
        d = a * b + b**3
        c = c + c + 1
        c = c + 1 + c + (-a)
        d = d + d * 2 + (b + a).relu()
        d = d + 3 * d + (b - a).relu()
        e = c - d
        f = e**2
        g = f / 2.0
        return g + 10.0 / f

    a, b = Tensor(-4.0, requires_grad=True), Tensor(2.0, requires_grad=True)
    g = g_of(a, b)
    g.backward()
    assert abs(g.item() - 24.70408163265306) < 1e-6
    assert abs(a.grad - 138.83381924198252) < 1e-6
    assert abs(b.grad - 645.5772594752186) < 1e-6
    check_grads(g_of, -4.0, 2.0)


def test_every_port_names_its_source() -> None:
    sources = {c.source.split("::")[0] for c in CASES}
    assert sources == {f"autograd tests/{name}.py" for name in
                       ("test_systematic", "test_numpy", "test_binary_ops", "test_scalar_ops", "test_graphs")}
    assert all(c.order >= 2 for c in CASES if "abs" not in c.source)  # order 1 only where autograd asks for it
