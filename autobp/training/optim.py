"""Optimizers, learning-rate schedules and gradient clipping, working on the raw arrays of parameter tensors.

Every optimizer updates `Tensor.data` in place (the network holds the same tensor objects) and returns the
update ΔW it applied to each parameter, which the trainer logs. All arithmetic stays in the parameter's dtype:
hyperparameters are Python floats, which NumPy never lets promote a float32 array.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from autobp.common.errors import ConfigError, DataError
from autobp.engine import Tensor
from autobp.spec.catalog import OPTIMIZERS, SCHEDULES


class Optimizer:
    """Base class: applies `_update` to every parameter that has a gradient; subclasses hold the formula."""

    slots: tuple[str, ...] = ()  # names of the per-parameter state arrays (moments, velocities)

    def __init__(self, params: Sequence[Tensor], *, decay: Sequence[bool], weight_decay: float = 0.0) -> None:
        if len(decay) != len(params):
            raise ValueError(f"got {len(params)} parameters but {len(decay)} weight-decay flags")
        self.params = list(params)
        self.decay = [bool(d) for d in decay]
        self.weight_decay = float(weight_decay)
        self.steps = 0
        self.state = {name: [np.zeros_like(p.data) for p in self.params] for name in self.slots}

    def step(self, lr: float) -> list[np.ndarray]:
        """Apply one update with learning rate `lr`; return the update ΔW = new − old of each parameter."""
        lr = float(lr)
        self.steps += 1
        return [self._step_param(i, p, lr) for i, p in enumerate(self.params)]

    def _step_param(self, i: int, p: Tensor, lr: float) -> np.ndarray:
        # A parameter the loss does not depend on has no gradient; like PyTorch, leave it alone.
        if p.grad is None:
            return np.zeros_like(p.data)
        delta = self._update(i, p.data, self._gradient(i, p), lr)
        p.data += delta
        return delta

    def _gradient(self, i: int, p: Tensor) -> np.ndarray:
        """The gradient the formula sees: p.grad plus the L2 term wd·θ where decay applies (p.grad is not touched)."""
        if not (self.weight_decay and self.decay[i]):
            return p.grad
        g = p.data * self.weight_decay
        g += p.grad
        return g

    def _update(self, i: int, theta: np.ndarray, g: np.ndarray, lr: float) -> np.ndarray:
        """The update ΔW for parameter `i` (values `theta`, gradient `g`); may advance its state, never `g`."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """A flat dict of plain arrays (step count and per-parameter state), ready for `np.savez`."""
        state = {"step": np.array(self.steps, dtype=np.int64)}
        for name, arrays in self.state.items():
            state.update({f"{name}.{i}": a.copy() for i, a in enumerate(arrays)})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore the state saved by `state_dict` exactly, so resumed training is bit-identical."""
        expected = self.state_dict()
        missing = sorted(expected.keys() - state.keys())
        unexpected = sorted(state.keys() - expected.keys())
        if missing or unexpected:
            raise DataError(
                f"the saved optimizer state does not fit this {type(self).__name__} optimizer "
                f"(missing {missing}, unexpected {unexpected}); resume with the optimizer it was saved with"
            )
        for key, target in expected.items():
            if np.shape(state[key]) != target.shape:
                raise DataError(
                    f"the saved optimizer state {key!r} has shape {np.shape(state[key])}, but the model needs "
                    f"{target.shape}; resume with the model it was saved with"
                )
        self.steps = int(state["step"])
        for name, arrays in self.state.items():
            for i, a in enumerate(arrays):
                np.copyto(a, state[f"{name}.{i}"])


class Sgd(Optimizer):
    """Plain gradient descent: θ ← θ − lr·g."""

    def _update(self, i: int, theta: np.ndarray, g: np.ndarray, lr: float) -> np.ndarray:
        return g * -lr


class Momentum(Optimizer):
    """Heavy-ball momentum in PyTorch's form: v ← μv + g; θ ← θ − lr·v."""

    slots = ("velocity",)

    def __init__(
        self, params: Sequence[Tensor], *, decay: Sequence[bool], weight_decay: float = 0.0, momentum: float = 0.9
    ) -> None:
        super().__init__(params, decay=decay, weight_decay=weight_decay)
        self.momentum = float(momentum)

    def _advance_velocity(self, i: int, g: np.ndarray) -> np.ndarray:
        v = self.state["velocity"][i]
        v *= self.momentum
        v += g
        return v

    def _update(self, i: int, theta: np.ndarray, g: np.ndarray, lr: float) -> np.ndarray:
        return self._advance_velocity(i, g) * -lr


class Nesterov(Momentum):
    """Nesterov momentum in PyTorch's form: v ← μv + g; θ ← θ − lr·(g + μv)."""

    def _update(self, i: int, theta: np.ndarray, g: np.ndarray, lr: float) -> np.ndarray:
        delta = self._advance_velocity(i, g) * self.momentum
        delta += g
        delta *= -lr
        return delta


class RmsProp(Optimizer):
    """RMSprop (Hinton): s ← ρs + (1−ρ)g²; θ ← θ − lr·g / (√s + eps)."""

    slots = ("square_avg",)

    def __init__(
        self,
        params: Sequence[Tensor],
        *,
        decay: Sequence[bool],
        weight_decay: float = 0.0,
        rho: float = 0.99,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, decay=decay, weight_decay=weight_decay)
        self.rho = float(rho)
        self.eps = float(eps)

    def _update(self, i: int, theta: np.ndarray, g: np.ndarray, lr: float) -> np.ndarray:
        s = self.state["square_avg"][i]
        # One scratch array serves as (1−ρ)g², then √s + eps, then the update itself.
        scratch = np.square(g)
        scratch *= 1.0 - self.rho
        s *= self.rho
        s += scratch
        np.sqrt(s, out=scratch)
        scratch += self.eps
        np.divide(g, scratch, out=scratch)
        scratch *= -lr
        return scratch


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction; weight decay, if any, is the L2 term added to the gradient."""

    slots = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Sequence[Tensor],
        *,
        decay: Sequence[bool],
        weight_decay: float = 0.0,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, decay=decay, weight_decay=weight_decay)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.eps = float(eps)

    def _update(self, i: int, theta: np.ndarray, g: np.ndarray, lr: float) -> np.ndarray:
        m = self.state["exp_avg"][i]
        v = self.state["exp_avg_sq"][i]
        # One scratch array serves as (1−β1)g, (1−β2)g², then √v̂ + eps, then the update itself.
        scratch = np.multiply(g, 1.0 - self.beta1)
        m *= self.beta1
        m += scratch
        np.square(g, out=scratch)
        scratch *= 1.0 - self.beta2
        v *= self.beta2
        v += scratch
        # θ ← θ − lr·m̂/(√v̂ + eps) with m̂ = m/(1−β1^t), v̂ = v/(1−β2^t); the corrections are folded into scalars.
        np.sqrt(v, out=scratch)
        scratch *= 1.0 / math.sqrt(1.0 - self.beta2**self.steps)
        scratch += self.eps
        np.divide(m, scratch, out=scratch)
        scratch *= -lr / (1.0 - self.beta1**self.steps)
        return scratch


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter): decoupled weight decay θ ← θ − lr·wd·θ, then the Adam step on the raw gradient."""

    def _gradient(self, i: int, p: Tensor) -> np.ndarray:
        return p.grad

    def _update(self, i: int, theta: np.ndarray, g: np.ndarray, lr: float) -> np.ndarray:
        delta = super()._update(i, theta, g, lr)
        if self.weight_decay and self.decay[i]:
            delta -= theta * (lr * self.weight_decay)
        return delta


# The update rule of each catalog optimizer; the catalog says which config keys it reads.
UPDATE_RULES: dict[str, type[Optimizer]] = {
    "sgd": Sgd, "momentum": Momentum, "nesterov": Nesterov, "rmsprop": RmsProp, "adam": Adam, "adamw": AdamW,
}  # fmt: skip


def build_optimizer(cfg: Any, params: Sequence[Tensor], decay: Sequence[bool]) -> Optimizer:
    """The optimizer `cfg.name` over `params`, with its hyperparameters read from `cfg` (an OptimizerConfig)."""
    if cfg.name not in UPDATE_RULES:
        raise ConfigError(f"optimizer.name: unknown optimizer {cfg.name!r}; use one of {', '.join(OPTIMIZERS)}")
    reads = {key: getattr(cfg, key) for key in OPTIMIZERS[cfg.name].reads}
    return UPDATE_RULES[cfg.name](params, decay=decay, weight_decay=cfg.weight_decay, **reads)


def learning_rate(cfg: Any, epoch: int, total_epochs: int) -> float:
    """The learning rate for 0-based `epoch` under the schedule `cfg.schedule`, starting from `cfg.lr`."""
    schedule = cfg.schedule
    if schedule.name == "constant":
        return float(cfg.lr)
    if schedule.name == "step":
        return float(cfg.lr * schedule.gamma ** (epoch // schedule.step_size))
    if schedule.name == "exponential":
        return float(cfg.lr * schedule.gamma**epoch)
    if schedule.name == "cosine":
        t_max = schedule.t_max if schedule.t_max is not None else total_epochs
        progress = min(epoch, t_max) / t_max
        return float(schedule.min_lr + (cfg.lr - schedule.min_lr) * (1.0 + math.cos(math.pi * progress)) / 2.0)
    raise ConfigError(f"optimizer.schedule.name: unknown schedule {schedule.name!r}; use one of {', '.join(SCHEDULES)}")


def global_grad_norm(params: Sequence[Tensor]) -> float:
    """The L2 norm of all gradients taken together, as if concatenated into one vector."""
    return math.sqrt(sum(float(np.vdot(p.grad, p.grad)) for p in params if p.grad is not None))


def clip_grad_norm(params: Sequence[Tensor], max_norm: float) -> float:
    """Rescale all gradients so their global norm is at most `max_norm`; return the norm before clipping."""
    norm = global_grad_norm(params)
    # A non-finite norm cannot be scaled back; leave it for the trainer's divergence check to report.
    if norm <= max_norm or not math.isfinite(norm):
        return norm
    scale = float(max_norm) / norm
    for p in params:
        if p.grad is not None:
            # A new array, not `*=`: the engine may hand one gradient array to several tensors, or a read-only view.
            p.grad = p.grad * scale
    return norm
