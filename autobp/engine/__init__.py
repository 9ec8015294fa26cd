"""autobp's automatic differentiation engine: tensors on numpy, reverse and forward mode.

    from autobp.engine import Tensor, ops
    x = Tensor([[1.0, 2.0]], requires_grad=True)
    y = ops.tanh(x @ w).sum()
    y.backward()          # x.grad now holds ∂y/∂x
    hvp(f, [w], [v])      # H·v of a scalar f(w), forward over reverse
"""

from autobp.engine import nn, ops
from autobp.engine.functional import (
    GradcheckResult, grad, gradcheck, hessian, hvp, jvp, numerical_gradient, relative_error, vjp,
)
from autobp.engine.nn import binary_cross_entropy, cross_entropy, dense, huber, mae, mse
from autobp.engine.tensor import (
    EngineError, Node, Primitive, Tensor, forward_mode, gradients, no_grad, recorded, unbroadcast,
)

__all__ = [
    "EngineError",
    "GradcheckResult",
    "Node",
    "Primitive",
    "Tensor",
    "binary_cross_entropy",
    "cross_entropy",
    "dense",
    "forward_mode",
    "grad",
    "gradcheck",
    "gradients",
    "hessian",
    "hvp",
    "huber",
    "jvp",
    "mae",
    "mse",
    "nn",
    "no_grad",
    "numerical_gradient",
    "ops",
    "recorded",
    "relative_error",
    "unbroadcast",
    "vjp",
]
