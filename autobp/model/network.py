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
from autobp.config.catalog import ACTIVATIONS, INITS, LOSSES
from autobp.config.models import Config


def fitting_init(activation: str) -> str:
    """The initialisation that keeps a layer's signal about the same size through it: He for the ReLU family, whose
    units pass half their input, Xavier for the others."""
    return "he" if ACTIVATIONS[activation].family == "relu" else "xavier"


def fitting_std(activation: str, fan_in: int, fan_out: int) -> float:
    """The standard deviation of the weights `fitting_init` draws for a (fan_in, fan_out) layer."""
    return INITS[fitting_init(activation)].std(fan_in, fan_out, scale=0.0)  # he and xavier do not scale


MODEL_FILE = "model.npz"  # a trained network's weights (and what prediction needs), in every run directory


def load_model_file(path: Path) -> dict[str, np.ndarray]:
    """A model.npz's arrays, checked as a whole (see check_model) before anything uses them."""
    arrays = load_npz(path)
    problems = check_model(arrays)
    if problems:
        raise DataError(f"{path}: " + "; ".join(problems[:5]) + " — the file is damaged or was not written by autobp")
    return arrays


def check_model(arrays: dict[str, np.ndarray]) -> list[str]:
    """What makes a model.npz inconsistent: layers that do not chain, names and statistics that do not fit the
    first layer's inputs or the last layer's outputs, statistics that are not finite or a scale that is not > 0."""
    weights = []
    while f"layer{len(weights)}.weight" in arrays:
        weights.append(arrays[f"layer{len(weights)}.weight"])
    problems = []
    fan_in = None
    for index, weight in enumerate(weights):
        bias = arrays.get(f"layer{index}.bias")
        if weight.ndim != 2 or bias is None or bias.shape != weight.shape[1:]:
            shapes = f"{weight.shape} and {None if bias is None else bias.shape}"
            problems.append(f"layer{index}.weight and layer{index}.bias have shapes {shapes}, not (in, out) and (out,)")
        elif fan_in is not None and weight.shape[0] != fan_in:
            problems.append(f"layer{index}.weight takes {weight.shape[0]} inputs, the layer before gives {fan_in}")
        elif weight.dtype.kind == bias.dtype.kind == "f" and not all(np.isfinite(a).all() for a in (weight, bias)):
            problems.append(f"layer{index} holds weights that are not finite (a run that diverged keeps them: train "
                            "it again with a smaller optimizer.lr)")  # fmt: skip
        fan_in = weight.shape[-1] if weight.ndim == 2 else None
    if problems or not weights:
        return problems or ["no layer0.weight"]
    inputs, outputs = weights[0].shape[0], weights[-1].shape[1]
    problems += _names(arrays, "feature_names", {inputs}, f"the {inputs} inputs of layer0")
    problems += _statistics(arrays, "x", inputs)
    if "class_names" in arrays:
        choices = {outputs, 2} if outputs == 1 else {outputs}  # bce: one logit for two classes
        problems += _names(arrays, "class_names", choices, f"the {outputs} outputs of the last layer")
        problems += _names(arrays, "target_names", None, "")
    else:
        problems += _names(arrays, "target_names", {outputs}, f"the {outputs} outputs of the last layer")
        problems += _statistics(arrays, "y", outputs)
    return problems


def _names(arrays: dict[str, np.ndarray], key: str, lengths: set[int] | None, what: str) -> list[str]:
    """A list of names, if the file has it: text, one dimension, and one of `lengths` long (any, if None)."""
    names = arrays.get(key)
    if names is None:
        return []
    if names.ndim != 1 or names.dtype.kind != "U" or not names.size:
        return [f"{key} is {names.dtype} {names.shape}, not a list of names"]
    return [] if lengths is None or len(names) in lengths else [f"{key} has {len(names)} names for {what}"]


def _statistics(arrays: dict[str, np.ndarray], prefix: str, size: int) -> list[str]:
    """The standardization statistics {prefix}_mean, {prefix}_std: both or neither, (size,) finite, the scale > 0."""
    mean, std = arrays.get(f"{prefix}_mean"), arrays.get(f"{prefix}_std")
    if mean is None and std is None:
        return []
    for key, value in ((f"{prefix}_mean", mean), (f"{prefix}_std", std)):
        if value is None or value.shape != (size,) or value.dtype.kind not in "iuf":
            found = "missing" if value is None else f"{value.dtype} {value.shape}"
            return [f"{key} is {found}, not {size} numbers"]
        if not np.isfinite(value).all():
            return [f"{key} holds values that are not finite"]
    return [] if (std > 0).all() else [f"{prefix}_std holds a scale ≤ 0"]


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
            weight = INITS[spec.init].draw(fan_in, spec.units, config.model.init_scale, rng).astype(dtype)
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
        network.load_state_dict(load_model_file(weights_file(Path(config.model.init_from))),
                                f"model.init_from ({config.model.init_from})")
    return network
