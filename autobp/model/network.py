"""From a validated config to a network on the engine: layers f_i = σ_i(f_{i-1} W_i + b_i), composed in order.

Layers are named `layer0`, `layer1`, … — the names used in every log and file. A forward pass returns every
layer's pre-activation z_i and output f_i, so the trainer can observe the gradient that reaches each of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from autobp.common.errors import ConfigError, DataError
from autobp.common.files import load_npz
from autobp.engine import Tensor, dense
from autobp.spec.catalog import ACTIVATIONS, LOSSES
from autobp.spec.config import Config


def init_weights(kind: str, fan_in: int, fan_out: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A (fan_in, fan_out) weight matrix: xavier (Glorot uniform), he and lecun (normal), or plain normal/uniform."""
    shape = (fan_in, fan_out)
    if kind == "xavier":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape)
    if kind == "he":
        return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    if kind == "lecun":
        return rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)
    if kind == "normal":
        return rng.standard_normal(shape) * scale
    if kind == "uniform":
        return rng.uniform(-scale, scale, shape)
    raise ValueError(f"unknown init {kind!r}")


MODEL_FILE = "model.npz"  # a trained network's weights (and what prediction needs), in every run directory


def weights_file(path: Path) -> Path:
    """The weights a path names: a model.npz, or a run directory (its model.npz)."""
    return path / MODEL_FILE if path.is_dir() else path


@dataclass
class Layer:
    """One layer: its parameters, activation and dropout rate."""

    name: str
    weight: Tensor
    bias: Tensor
    activation: str
    dropout: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        return self.weight.shape

    def dropout_mask(self, rng: np.random.Generator | None, n: int) -> np.ndarray | None:
        """The inverted-dropout mask for a batch of n (kept units scaled by 1/(1−p)); None without rng or dropout."""
        if rng is None or self.dropout == 0.0:
            return None
        keep = rng.random((n, self.weight.shape[1])) >= self.dropout
        return (keep * (1.0 / (1.0 - self.dropout))).astype(self.weight.dtype)

    def forward(self, x: np.ndarray | Tensor, mask: np.ndarray | None) -> tuple[Tensor, Tensor]:
        """(pre-activation z, output f), f multiplied by the dropout `mask` if one is given (training)."""
        z = dense(x, self.weight, self.bias)
        act = ACTIVATIONS[self.activation].engine
        f = z if act is None else act(z)
        if mask is not None:
            f = f * mask
        return z, f


@dataclass
class Trace:
    """Everything one forward pass computed: the network output, and per layer z_i and f_i."""

    output: Tensor
    pre_activations: list[Tensor]
    outputs: list[Tensor]
    masks: list[np.ndarray]  # the dropout masks drawn, in layer order


@dataclass
class Network:
    """The composed network y = (f_K ∘ … ∘ f_1)(x)."""

    layers: list[Layer]

    def forward(self, x: np.ndarray, rng: np.random.Generator | None = None, retain: bool = False) -> Trace:
        """Run every layer; with `retain` each z_i and f_i keeps the gradient ∂L/∂z_i, ∂L/∂f_i that reaches it."""
        h: np.ndarray | Tensor = x
        pre, outs, masks = [], [], []
        for layer in self.layers:
            mask = layer.dropout_mask(rng, len(x))
            z, h = layer.forward(h, mask)
            if retain:
                z.retain_grad()
                h.retain_grad()
            pre.append(z)
            outs.append(h)
            if mask is not None:
                masks.append(mask)
        return Trace(output=h, pre_activations=pre, outputs=outs, masks=masks)

    def __call__(self, x: np.ndarray) -> Tensor:
        return self.forward(x).output

    def parameters(self) -> list[Tensor]:
        """All parameters in a fixed order: layer0.weight, layer0.bias, layer1.weight, …"""
        return [p for layer in self.layers for p in (layer.weight, layer.bias)]

    def decay_mask(self) -> list[bool]:
        """Which parameters weight decay applies to: the weights, not the biases."""
        return [flag for _ in self.layers for flag in (True, False)]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters as `layer{i}.weight` (in×out) and `layer{i}.bias`, copied."""
        state = {}
        for layer in self.layers:
            state[f"{layer.name}.weight"] = layer.weight.data.copy()
            state[f"{layer.name}.bias"] = layer.bias.data.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray], source: str = "the saved parameters") -> None:
        """Copy saved parameters in, checking that every name and shape matches this network."""
        problems = []
        for layer in self.layers:
            for key, tensor in ((f"{layer.name}.weight", layer.weight), (f"{layer.name}.bias", layer.bias)):
                if key not in state:
                    problems.append(f"{key} is missing")
                elif np.shape(state[key]) != tensor.shape:
                    problems.append(f"{key} has shape {np.shape(state[key])}, the network needs {tensor.shape}")
                elif np.asarray(state[key]).dtype.kind not in "biuf":
                    problems.append(f"{key} holds {np.asarray(state[key]).dtype} values, not real numbers")
        if problems:
            raise DataError(f"{source} do not fit this network: " + "; ".join(problems))
        for layer in self.layers:
            layer.weight.data[...] = state[f"{layer.name}.weight"]
            layer.bias.data[...] = state[f"{layer.name}.bias"]


LossOfParameters = Callable[..., Tensor]


def network_loss(network: Network, x: np.ndarray, y: np.ndarray, loss: str) -> LossOfParameters:
    """The loss on the batch (x, y) as a function of parameter tensors (W0, b0, W1, b1, …), in the order of
    `network.parameters()`: the network's layers without dropout (for gradcheck, `hvp`, curvature)."""
    activations = [ACTIVATIONS[layer.activation].engine for layer in network.layers]
    loss_fn = LOSSES[loss].engine

    def loss_of(*params: Tensor) -> Tensor:
        h: np.ndarray | Tensor = x
        for index, activation in enumerate(activations):
            h = dense(h, params[2 * index], params[2 * index + 1])
            if activation is not None:
                h = activation(h)
        return loss_fn(h, y)

    return loss_of


def build_network(config: Config, n_inputs: int, rng: np.random.Generator) -> Network:
    """The network a resolved config describes (every layer's units known), initialised from `rng`."""
    dtype = np.dtype(config.training.dtype)
    layers = []
    fan_in = n_inputs
    for index, spec in enumerate(config.model.layers):
        if spec.units is None:
            raise ConfigError(f"model.layers.{index}.units: unknown; resolve the config against its data first")
        with np.errstate(over="ignore"):  # a huge init_scale overflows float32 to inf: training reports it
            weight = init_weights(spec.init, fan_in, spec.units, config.model.init_scale, rng).astype(dtype)
        bias = np.zeros(spec.units, dtype=dtype)
        layers.append(
            Layer(
                name=f"layer{index}",
                weight=Tensor(weight, requires_grad=True),
                bias=Tensor(bias, requires_grad=True),
                activation=spec.activation,
                dropout=spec.dropout,
            )
        )
        fan_in = spec.units
    network = Network(layers)
    if config.model.init_from:
        network.load_state_dict(load_npz(weights_file(Path(config.model.init_from))),
                                f"model.init_from ({config.model.init_from})")
    return network
