"""The trainer's forward and backward pass as compiled programs (`training.compile: true`), one per batch shape.

Each program is the engine's own recording of `Network.forward` and the loss, replayed (autobp.engine.compile):
the batch, its targets and the dropout masks are its inputs. The masks are drawn from the trainer's dropout
generator in the same order the interpreted forward pass draws them, so both paths give the same numbers, bit
for bit.
"""

from __future__ import annotations

import numpy as np

from autobp.engine import Primitive, Tensor
from autobp.engine.compile import Program, compile_graph
from autobp.model.network import Network, Trace

RECORDING_SEED = 0  # masks drawn while recording only mark where masks go; their values are never used


class CompiledSteps:
    """Forward and backward of one network and loss, a program per batch shape, compiled on first use."""

    def __init__(self, network: Network, loss_fn: Primitive, rng: np.random.Generator | None) -> None:
        self.network = network
        self.loss_fn = loss_fn
        self.rng = rng
        self.params = network.parameters()
        self.flat_grad: np.ndarray | None = None  # the last step's gradients as one array, if they share a dtype
        self._dropout = [layer for layer in network.layers if layer.dropout > 0.0] if rng is not None else []
        self._programs: dict[tuple[int, ...], tuple[Program, Trace, list[Tensor]]] = {}
        self._retained = False  # whether the trace's outputs hold gradients from a logged step

    def step(self, xb: np.ndarray, yb: np.ndarray, logging: bool) -> tuple[Trace, float]:
        """Loss and gradients for one batch: each parameter's `.grad` is set, as `loss.backward()` would set it.

        The trace's tensors hold this step's values; its pre-activations and outputs carry their gradients only
        when `logging`, as the interpreted pass retains them only then.
        """
        program, trace, tensors = self._programs.get(xb.shape) or self._compile(xb, yb)
        masks = [layer.dropout_mask(self.rng, len(xb)) for layer in self._dropout] if self._dropout else []
        loss = program.run((xb, yb, *masks))
        for param, grad in zip(self.params, program.grads):
            param.grad = grad
        for tensor, value in zip(tensors, program.values):
            tensor.data = value
        if logging or self._retained:
            for tensor, grad in zip(trace.pre_activations + trace.outputs, program.gradients):
                tensor.grad = grad if logging else None
            self._retained = logging
        self.flat_grad = program.flat_grad
        return trace, float(loss)

    def _compile(self, xb: np.ndarray, yb: np.ndarray) -> tuple[Program, Trace, list[Tensor]]:
        rng = None if self.rng is None else np.random.default_rng(RECORDING_SEED)
        recorded = self.network.forward(xb, rng)
        loss = self.loss_fn(recorded.output, yb)
        watched = recorded.pre_activations + recorded.outputs
        program = compile_graph(loss, self.params, [xb, yb, *recorded.masks], watched)
        # The trace handed to the trainer: plain tensors the program's values are put into at every step.
        outputs = [Tensor(f.data) for f in recorded.outputs]
        trace = Trace(output=outputs[-1], pre_activations=[Tensor(z.data) for z in recorded.pre_activations],
                      outputs=outputs, masks=[])  # fmt: skip
        self._programs[xb.shape] = program, trace, trace.pre_activations + outputs
        return self._programs[xb.shape]
