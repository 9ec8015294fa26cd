"""Optimizers, learning-rate schedules and gradient clipping, working on the raw arrays of parameter tensors.

Every optimizer updates `Tensor.data` in place (the network holds the same tensor objects) and returns the
update ΔW it applied to each parameter, which the trainer logs. All arithmetic stays in the parameter's dtype:
hyperparameters are Python floats, which NumPy never lets promote a float32 array. They have no defaults here:
the config model (autobp.config.models.OptimizerConfig) owns them, and `build_optimizer` passes them on.

When the parameters share a dtype, each state array is a view into one flat array per slot, laid out as a compiled
step lays out its gradients (`flat_views`): given that flat gradient, one call per formula updates every parameter.
The parameters themselves are moved into such a flat array too (each `Tensor.data` becomes a view holding the same
values), so that applying every update is one addition. Every formula works entry by entry, so the numbers are the
same as parameter by parameter, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import is_
from typing import Any

import numpy as np

from autobp.common.errors import ConfigError, DataError
from autobp.engine import Tensor
from autobp.engine.compile import flat_views
from autobp.config.catalog import OPTIMIZERS, SCHEDULES


class Optimizer:
    """Base class: applies `_update` to every parameter that has a gradient; subclasses hold the formula."""

    slots: tuple[str, ...] = ()  # names of the per-parameter state arrays (moments, velocities)

    def __init__(self, params: Sequence[Tensor], *, decay: Sequence[bool], weight_decay: float) -> None:
        if len(decay) != len(params):
            raise ValueError(f"got {len(params)} parameters but {len(decay)} weight-decay flags")
        self.params = list(params)
        self.decay = [bool(d) for d in decay]
        self.weight_decay = float(weight_decay)
        self.steps = 0
        layouts = {name: flat_views(self.params) for name in (*self.slots, "update", "param")}
        self._flat: dict[str, np.ndarray] | None = None  # each slot's (the update's, the parameters') flat array
        if None in layouts.values():
            self.state = {name: [np.zeros_like(p.data) for p in self.params] for name in self.slots}
            return
        self._flat = {name: layout[0] for name, layout in layouts.items()}
        self.state = {name: layouts[name][1] for name in self.slots}
        self._update_views = layouts["update"][1]
        self._param_views = layouts["param"][1]
        for p, view in zip(self.params, self._param_views):
            np.copyto(view, p.data)
            p.data = view

    def step(self, lr: float, flat_grad: np.ndarray | None = None) -> list[np.ndarray]:
        """Apply one update with learning rate `lr`; return the update ΔW = new − old of each parameter.

        `flat_grad` holds every parameter's gradient in `flat_views` layout (as a compiled step leaves them);
        without weight decay the update is then one call per formula, and ΔW are views the next step overwrites.
        """
        lr = float(lr)
        self.steps += 1
        if flat_grad is not None and self._flat is not None and not self.weight_decay:
            return self._step_flat(flat_grad, lr)
        return [self._step_param(i, p, lr) for i, p in enumerate(self.params)]

    def _step_flat(self, flat_grad: np.ndarray, lr: float) -> list[np.ndarray]:
        self._update(None, flat_grad, lr, self._flat["update"])
        if all(map(is_, [p.data for p in self.params], self._param_views)):
            self._flat["param"] += self._flat["update"]
        else:  # a parameter's array was replaced since: update each where it now is
            for p, delta in zip(self.params, self._update_views):
                p.data += delta
        return list(self._update_views)

    def _step_param(self, i: int, p: Tensor, lr: float) -> np.ndarray:
        # A parameter the loss does not depend on has no gradient; like PyTorch, leave it alone.
        if p.grad is None:
            return np.zeros_like(p.data)
        delta = np.empty_like(p.data)
        self._update(i, self._gradient(i, p), lr, delta)
        p.data += delta
        return delta

    def _slot(self, name: str, i: int | None) -> np.ndarray:
        """State `name` of parameter `i`, or of every parameter at once (i None) as one flat array."""
        return self._flat[name] if i is None else self.state[name][i]

    def _gradient(self, i: int, p: Tensor) -> np.ndarray:
        """The gradient the formula sees: p.grad plus the L2 term wd·θ where decay applies (p.grad is not touched)."""
        if not (self.weight_decay and self.decay[i]):
            return p.grad
        g = p.data * self.weight_decay
        g += p.grad
        return g

    def _update(self, i: int | None, g: np.ndarray, lr: float, out: np.ndarray) -> None:
        """Write into `out` the update ΔW for parameter `i` (all at once if None) with gradient `g`; may advance
        its state, never `g`."""
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

    def _update(self, i: int | None, g: np.ndarray, lr: float, out: np.ndarray) -> None:
        np.multiply(g, -lr, out=out)


class Momentum(Optimizer):
    """Heavy-ball momentum in PyTorch's form: v ← μv + g; θ ← θ − lr·v."""

    slots = ("velocity",)

    def __init__(
        self, params: Sequence[Tensor], *, decay: Sequence[bool], weight_decay: float, momentum: float
    ) -> None:
        super().__init__(params, decay=decay, weight_decay=weight_decay)
        self.momentum = float(momentum)

    def _advance_velocity(self, i: int | None, g: np.ndarray) -> np.ndarray:
        v = self._slot("velocity", i)
        v *= self.momentum
        v += g
        return v

    def _update(self, i: int | None, g: np.ndarray, lr: float, out: np.ndarray) -> None:
        np.multiply(self._advance_velocity(i, g), -lr, out=out)


class Nesterov(Momentum):
    """Nesterov momentum in PyTorch's form: v ← μv + g; θ ← θ − lr·(g + μv)."""

    def _update(self, i: int | None, g: np.ndarray, lr: float, out: np.ndarray) -> None:
        np.multiply(self._advance_velocity(i, g), self.momentum, out=out)
        out += g
        out *= -lr


class RmsProp(Optimizer):
    """RMSprop (Hinton): s ← ρs + (1−ρ)g²; θ ← θ − lr·g / (√s + eps)."""

    slots = ("square_avg",)

    def __init__(
        self,
        params: Sequence[Tensor],
        *,
        decay: Sequence[bool],
        weight_decay: float,
        rho: float,
        eps: float,
    ) -> None:
        super().__init__(params, decay=decay, weight_decay=weight_decay)
        self.rho = float(rho)
        self.eps = float(eps)

    def _update(self, i: int | None, g: np.ndarray, lr: float, out: np.ndarray) -> None:
        s = self._slot("square_avg", i)
        # `out` serves as (1−ρ)g², then √s + eps, then the update itself.
        np.square(g, out=out)
        out *= 1.0 - self.rho
        s *= self.rho
        s += out
        np.sqrt(s, out=out)
        out += self.eps
        np.divide(g, out, out=out)
        out *= -lr


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction; weight decay, if any, is the L2 term added to the gradient."""

    slots = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Sequence[Tensor],
        *,
        decay: Sequence[bool],
        weight_decay: float,
        beta1: float,
        beta2: float,
        eps: float,
    ) -> None:
        super().__init__(params, decay=decay, weight_decay=weight_decay)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.eps = float(eps)

    def _update(self, i: int | None, g: np.ndarray, lr: float, out: np.ndarray) -> None:
        m = self._slot("exp_avg", i)
        v = self._slot("exp_avg_sq", i)
        # `out` serves as (1−β1)g, (1−β2)g², then √v̂ + eps, then the update itself.
        np.multiply(g, 1.0 - self.beta1, out=out)
        m *= self.beta1
        m += out
        np.square(g, out=out)
        out *= 1.0 - self.beta2
        v *= self.beta2
        v += out
        # θ ← θ − lr·m̂/(√v̂ + eps) with m̂ = m/(1−β1^t), v̂ = v/(1−β2^t); the corrections are folded into scalars.
        np.sqrt(v, out=out)
        out *= 1.0 / math.sqrt(1.0 - self.beta2**self.steps)
        out += self.eps
        np.divide(m, out, out=out)
        out *= -lr / (1.0 - self.beta1**self.steps)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter): decoupled weight decay θ ← θ − lr·wd·θ, then the Adam step on the raw gradient."""

    def _gradient(self, i: int, p: Tensor) -> np.ndarray:
        return p.grad

    def _update(self, i: int | None, g: np.ndarray, lr: float, out: np.ndarray) -> None:
        super()._update(i, g, lr, out)
        if self.weight_decay and self.decay[i]:  # with weight decay, updates go parameter by parameter (i is set)
            out -= self.params[i].data * (lr * self.weight_decay)


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
    if schedule.name not in SCHEDULES:
        raise ConfigError(f"optimizer.schedule.name: unknown schedule {schedule.name!r}; use one of "
                          f"{', '.join(SCHEDULES)}")  # fmt: skip
    entry = SCHEDULES[schedule.name]
    return float(entry.rate(cfg.lr, epoch, total_epochs, **{key: getattr(schedule, key) for key in entry.reads}))


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
