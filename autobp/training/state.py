"""The parts of a run's state that a checkpoint must carry besides the weights and the optimizer: early stopping,
the random streams, the clock and where the epoch under way began. Each owns its state and its `state_dict` /
`load_state_dict`, as the optimizers do.

State dicts hold plain arrays keyed by name, so checkpoint.npz stays readable with `np.load`.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Sequence

import numpy as np

from autobp.config.catalog import lower_is_better
from autobp.training.metrics import Meter

State = dict[str, np.ndarray]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # what ends a run cleanly at the next step
# Independent random streams derived from the one seed, so e.g. adding dropout does not change the shuffling.
INIT_STREAM, SHUFFLE_STREAM, DROPOUT_STREAM = 1, 2, 3


def now() -> str:
    """The local time as ISO 8601, to the second."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


class EarlyStopping:
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs; remember the best
    epoch's weights so they can be restored."""

    def __init__(self, monitor: str, patience: int, min_delta: float) -> None:
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.sign = 1.0 if lower_is_better(monitor) else -1.0
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_weights: State | None = None
        self.waited = 0

    def may_stop_after_next_epoch(self) -> bool:
        """Whether the coming epoch can be the last (its last step must then be logged)."""
        return self.waited >= self.patience - 1

    def update(self, value: float | None, epoch: int, weights: Callable[[], State]) -> bool:
        """Take an epoch's monitored value; True when training should stop. `weights` is called on improvement."""
        if value is None:
            return False
        if self.best_value is None or self.sign * (self.best_value - value) > self.min_delta:
            self.best_value, self.best_epoch, self.best_weights, self.waited = value, epoch, weights(), 0
            return False
        self.waited += 1
        return self.waited >= self.patience

    def state_dict(self) -> State:
        state = {
            "best_value": np.array(np.nan if self.best_value is None else self.best_value),
            "best_epoch": np.array(-1 if self.best_epoch is None else self.best_epoch),
            "waited": np.array(self.waited),
        }
        return state | {f"best.{key}": value for key, value in (self.best_weights or {}).items()}

    def load_state_dict(self, state: State) -> None:
        epoch = int(state["best_epoch"])
        self.best_epoch = None if epoch < 0 else epoch
        self.best_value = None if epoch < 0 else float(state["best_value"])
        self.waited = int(state["waited"])
        weights = {key.removeprefix("best."): value for key, value in state.items() if key.startswith("best.")}
        self.best_weights = weights or None


class RandomStreams:
    """The seeded generators of a run: shuffling, and dropout where the network has any."""

    def __init__(self, seed: int, dropout: bool) -> None:
        self.shuffle = np.random.default_rng([seed, SHUFFLE_STREAM])
        self.dropout = np.random.default_rng([seed, DROPOUT_STREAM]) if dropout else None

    def epoch_order(self, n: int, window: int | None) -> np.ndarray:
        """An epoch's order of n rows: a permutation of them all, or (window) windows of that many contiguous rows
        in a shuffled order, each shuffled within itself; a window of n rows or more is the whole permutation."""
        if window is None or window >= n:
            return self.shuffle.permutation(n)
        starts = self.shuffle.permutation(np.arange(0, n, window))
        return np.concatenate([start + self.shuffle.permutation(min(window, n - start)) for start in starts])

    def state_dict(self) -> State:
        states = {"shuffle": self.shuffle.bit_generator.state}
        if self.dropout is not None:
            states["dropout"] = self.dropout.bit_generator.state
        return {"rngs": np.array(json.dumps(states))}  # 128-bit generator states do not fit numeric arrays

    def load_state_dict(self, state: State) -> None:
        states = json.loads(str(state["rngs"]))
        self.shuffle.bit_generator.state = states["shuffle"]
        if self.dropout is not None:
            self.dropout.bit_generator.state = states["dropout"]


class Clock:
    """Training time across processes: when the run first started, and the seconds trained before this process."""

    def __init__(self) -> None:
        self.started = now()
        self.before = 0.0
        self._since = time.perf_counter()

    def start(self) -> None:
        """Count from now (the time spent preparing is not training time)."""
        self._since = time.perf_counter()

    def seconds(self) -> float:
        """Training seconds so far, over every process that trained this run."""
        return self.before + time.perf_counter() - self._since

    def state_dict(self) -> State:
        return {"seconds": np.array(self.seconds()), "started": np.array(self.started)}

    def load_state_dict(self, state: State) -> None:
        self.before = float(state["seconds"])
        self.started = str(state["started"])


class StopRequests:
    """Turns SIGINT (Ctrl-C) and SIGTERM into a request the training loop honours at the next step boundary, so a
    step is never cut in half and the files written on the way out are complete. Further signals while the run
    winds down are absorbed (a second Ctrl-C must not lose the weights). Only the main thread can take signals;
    elsewhere (e.g. a Dask worker thread) KeyboardInterrupt keeps its usual meaning."""

    def __init__(self, signals: Sequence[int] = STOP_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.signals}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is None:
            self.received = signum

    def check(self) -> None:
        """Raise KeyboardInterrupt if a stop was requested."""
        if self.received is not None:
            raise KeyboardInterrupt


@dataclass
class EpochStart:
    """Where the epoch under way began: the shuffling stream's state before it drew the epoch's order, the step
    count, and the epoch's training metrics so far. A checkpoint taken inside an epoch (Ctrl-C, max_steps) carries
    it, so that resuming replays the same order from the same batch: bit for bit the uninterrupted run."""

    shuffle: dict
    first_step: int
    meter: Meter

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"epoch_start.shuffle": np.array(json.dumps(self.shuffle)), "epoch_start.step": np.array(self.first_step)}
        return state | {f"epoch_meter.{key}": value for key, value in self.meter.state_dict().items()}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], meter: Meter) -> EpochStart | None:
        """The epoch start a checkpoint holds, or None for a checkpoint taken between epochs."""
        if "epoch_start.step" not in state:
            return None
        meter.load_state_dict({k.removeprefix("epoch_meter."): v for k, v in state.items() if k.startswith("epoch_meter.")})
        return cls(json.loads(str(state["epoch_start.shuffle"])), int(state["epoch_start.step"]), meter)
