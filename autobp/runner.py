"""The runner: train a network from a config and leave a run directory behind.

    result = autobp.train("configs/quickstart.yaml", overrides=["optimizer.lr=0.003"])
    result.run_dir, result.status, result.summary

A run ends `completed` (last epoch or max_steps), `stopped_early`, `diverged` (a non-finite loss or gradient),
`interrupted` (Ctrl-C) or `failed` (anything unexpected); each keeps its logs and writes model.npz and summary.json.
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import autobp
from autobp import checkpoint, rundir
from autobp.builder import Layer, Network, Trace, build_network
from autobp.compiled import CompiledSteps
from autobp.config import Config, check_name
from autobp.configfile import config_from_dict, dump_config, flatten, load_config
from autobp.data import Dataset, load_dataset, resolve_config
from autobp.errors import EXIT_DIVERGED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, AutobpError, ConfigError, DataError
from autobp.gradstats import COLUMNS as GRADIENT_COLUMNS
from autobp.gradstats import TARGET_LOGGED_STEPS, GradientLog, log_interval, total, verdicts
from autobp.metrics import LOSSES, Meter, evaluate, loss_targets, metric_names
from autobp.optim import build_optimizer, clip_grad_norm, learning_rate
from autobp.progress import Progress
from autobp.report import format_number
from autobp.runtime import keep_freed_memory

EXIT_CODES = {
    "completed": EXIT_OK,
    "stopped_early": EXIT_OK,
    "diverged": EXIT_DIVERGED,
    "interrupted": EXIT_INTERRUPTED,
    "failed": EXIT_FAILED,
}
AUTO_CHECKPOINT_SECONDS = 10.0  # checkpoint_every: auto writes a checkpoint at most this often
EXTENSIBLE_KEYS = {"training.epochs", "training.max_steps"}  # what --resume may change
# Independent random streams derived from the one seed, so e.g. adding dropout does not change the shuffling.
INIT_STREAM, SHUFFLE_STREAM, DROPOUT_STREAM = 1, 2, 3


@dataclass
class RunResult:
    """What a finished run leaves: its directory, final status and summary (summary.json's content)."""

    run_dir: Path
    status: str
    summary: dict[str, Any]
    verdicts: list[str] = field(default_factory=list)
    nothing_to_do: bool = False  # --resume of a run that had already finished

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]


class Diverged(Exception):
    """A non-finite loss or gradient at `step`; `layer` is the first layer whose gradient went non-finite."""

    def __init__(self, step: int, layer: str | None) -> None:
        super().__init__(f"non-finite {'loss' if layer is None else 'gradient in ' + layer} at step {step}")
        self.step = step
        self.layer = layer


def prepare(config: Config | dict | str | Path, overrides: Sequence[str] = ()) -> tuple[Config, Dataset]:
    """Load and validate the config, load its data, resolve the config against it and check `model.init_from`:
    everything that can be wrong is found before a run directory exists (ConfigError/DataError)."""
    source = "<config>"
    if isinstance(config, Config):
        config = config.model_dump(mode="json")
    if isinstance(config, dict):
        config = config_from_dict(config, overrides)
    else:
        source = str(config)
        config = load_config(config, overrides)
    try:
        dataset = load_dataset(config)
        resolved = resolve_config(config, dataset)
        if resolved.model.init_from:
            build_network(resolved, dataset.n_features, np.random.default_rng(0))  # loads and checks the file
        return resolved, dataset
    except (ConfigError, DataError) as err:
        raise type(err)(f"{source}: {err}") from None


def train(
    config: Config | dict | str | Path,
    overrides: Sequence[str] = (),
    *,
    name: str | None = None,
    output: str | Path | None = None,
    quiet: bool = True,
) -> RunResult:
    """Train from a config (path, dict or Config) with `--set`-style overrides into a new run directory."""
    if name is not None:
        try:
            check_name(name)
        except ValueError as err:
            raise ConfigError(f"--name {name!r}: {err}") from None
    extra = [f"name={name}"] * (name is not None) + [f"output.dir={output}"] * (output is not None)
    config, dataset = prepare(config, [*overrides, *extra])
    rundir.check_free_space(Path(config.output.dir), estimated_size(config, dataset))
    run_dir = rundir.create_run_dir(Path(config.output.dir), config.name)
    return run(config, dataset, run_dir, quiet=quiet)


def estimated_size(config: Config, dataset: Dataset) -> int:
    """Roughly how many bytes a run writes: model, checkpoint (parameters, optimizer moments, best weights), logs."""
    sizes = [dataset.n_features] + [layer.units or dataset.n_outputs for layer in config.model.layers]
    parameters = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    batch = config.training.batch_size or max(len(dataset.X_train), 1)
    steps = config.training.epochs * max(1, math.ceil(len(dataset.X_train) / batch))
    if config.training.max_steps is not None:
        steps = min(steps, config.training.max_steps)
    logged = min(steps, 2 * TARGET_LOGGED_STEPS) if config.training.log_every == "auto" else steps // config.training.log_every + 2
    return parameters * 8 * 6 + logged * len(sizes) * 250 + config.training.epochs * 200


def run(config: Config, dataset: Dataset, run_dir: Path, *, quiet: bool = True) -> RunResult:
    """Train a prepared config (see `prepare`) into `run_dir`, an existing empty folder."""
    keep_freed_memory()
    rundir.write_atomic(run_dir / rundir.CONFIG_FILE, dump_config(config))
    return Trainer(config, dataset, run_dir, Progress(quiet)).run()


def resume(run_dir: str | Path, overrides: Sequence[str] = (), *, quiet: bool = True) -> RunResult:
    """Continue a run from its last checkpoint, or extend a finished one (`training.epochs`, `training.max_steps`)."""
    run_dir = Path(run_dir)
    saved_path = run_dir / rundir.CONFIG_FILE
    if not saved_path.is_file():
        raise ConfigError(f"--resume {run_dir}: not a run directory (no {rundir.CONFIG_FILE})")
    saved = load_config(saved_path)
    config, dataset = prepare(saved_path, overrides)
    before, after = flatten(saved.model_dump(mode="json")), flatten(config.model_dump(mode="json"))
    differing = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    changed = sorted(differing - EXTENSIBLE_KEYS)
    if changed:
        raise ConfigError(
            f"--resume {run_dir}: cannot change {', '.join(changed)}; only training.epochs and training.max_steps "
            "can be changed when resuming (start a new run for anything else)"
        )
    previous = rundir.read_json(run_dir / rundir.SUMMARY_FILE) if (run_dir / rundir.SUMMARY_FILE).exists() else {}
    if previous.get("status") in ("completed", "stopped_early") and not differing:
        return RunResult(run_dir, previous["status"], previous, [], nothing_to_do=True)
    keep_freed_memory()
    trainer = Trainer(config, dataset, run_dir, Progress(quiet))
    trainer.restore(checkpoint.load(run_dir), resumed=[*previous.get("resumed", []), _now()])
    rundir.write_atomic(saved_path, dump_config(config))
    return trainer.run()


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _rows_if_any(path: Path) -> list[dict[str, str]]:
    return rundir.read_rows(path) if path.exists() else []


class Trainer:
    """One training run: the network, its optimizer and data, the loop, and everything it writes."""

    def __init__(self, config: Config, dataset: Dataset, run_dir: Path, progress: Progress) -> None:
        self.config = config
        self.dataset = dataset
        self.run_dir = run_dir
        self.progress = progress
        seed = config.seed
        self.network: Network = build_network(config, dataset.n_features, np.random.default_rng([seed, INIT_STREAM]))
        self.params = self.network.parameters()
        self.optimizer = build_optimizer(config.optimizer, self.params, self.network.decay_mask())
        self.shuffle_rng = np.random.default_rng([seed, SHUFFLE_STREAM])
        uses_dropout = any(layer.dropout > 0 for layer in self.network.layers)
        self.dropout_rng = np.random.default_rng([seed, DROPOUT_STREAM]) if uses_dropout else None
        dtype = np.dtype(config.training.dtype)
        self.loss_fn = LOSSES[config.loss]
        self.compiled = CompiledSteps(self.network, self.loss_fn, self.dropout_rng) if config.training.compile else None
        with np.errstate(over="ignore"):  # values beyond float32's range become inf; training then reports it
            self.X = dataset.X_train.astype(dtype, copy=False)
            self.y = loss_targets(dataset.y_train, config.loss, dtype)
            self.X_val = dataset.X_val.astype(dtype, copy=False)
            self.y_val = loss_targets(dataset.y_val, config.loss, dtype)
        training = config.training
        self.batch_size = training.batch_size or len(self.X)
        self.steps_per_epoch = math.ceil(len(self.X) / self.batch_size)
        self.total_steps = training.epochs * self.steps_per_epoch
        if training.max_steps is not None:
            self.total_steps = min(self.total_steps, training.max_steps)
        self.metric = metric_names(dataset.task)[0]
        self.step = 0
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"value": None, "epoch": None, "state": None, "waited": 0}
        self.started = _now()
        self.resumed: list[str] = []
        self.elapsed_before = 0.0  # training seconds before this process took over (resume)
        self._gradient_rows: list[dict[str, Any]] = []  # logged before a resume, for the end-of-run verdicts
        self._last_checkpoint = time.monotonic()

    def restore(self, state: checkpoint.Checkpoint | None, resumed: list[str]) -> None:
        """Continue from a checkpoint: state, counters, and the logs cut back to it (None: start over)."""
        self.resumed = resumed
        epoch, step = (0, 0) if state is None else (state.epoch, state.step)
        metrics_path = self.run_dir / rundir.METRICS_FILE
        gradients_path = self.run_dir / rundir.GRADIENTS_FILE
        metrics = [r for r in _rows_if_any(metrics_path) if int(r["epoch"]) <= epoch]
        gradients = [r for r in _rows_if_any(gradients_path) if int(r["step"]) <= step]
        rundir.rewrite_rows(metrics_path, self._metric_columns(), metrics)
        rundir.rewrite_rows(gradients_path, GRADIENT_COLUMNS, gradients)
        self.history = [{k: rundir.parse_cell(k, v) for k, v in row.items()} for row in metrics]
        self._gradient_rows = [{k: rundir.parse_cell(k, v) for k, v in row.items()} for row in gradients]
        if state is None:
            return
        self.network.load_state_dict(state.parameters, f"{self.run_dir / checkpoint.CHECKPOINT_FILE}")
        self.optimizer.load_state_dict(state.optimizer)
        self.shuffle_rng.bit_generator.state = state.rngs["shuffle"]
        if self.dropout_rng is not None:
            self.dropout_rng.bit_generator.state = state.rngs["dropout"]
        self.epoch, self.step = state.epoch, state.step
        self.best = {"value": state.best_value, "epoch": state.best_epoch, "state": state.best_parameters,
                     "waited": state.waited}  # fmt: skip
        self.elapsed_before = state.seconds
        self.started = state.started

    def _checkpoint_due(self, finished: bool) -> bool:
        every = self.config.training.checkpoint_every
        if every is None:
            return False
        if finished:
            return True
        if every == "auto":
            return time.monotonic() - self._last_checkpoint >= AUTO_CHECKPOINT_SECONDS
        return self.epoch % every == 0

    def _save_checkpoint(self, seconds: float) -> None:
        rngs = {"shuffle": self.shuffle_rng.bit_generator.state}
        if self.dropout_rng is not None:
            rngs["dropout"] = self.dropout_rng.bit_generator.state
        checkpoint.save(self.run_dir, checkpoint.Checkpoint(
            epoch=self.epoch, step=self.step, seconds=seconds, started=self.started,
            parameters=self.network.state_dict(), optimizer=self.optimizer.state_dict(), rngs=rngs,
            best_value=self.best["value"], best_epoch=self.best["epoch"], waited=self.best["waited"],
            best_parameters=self.best["state"],
        ))  # fmt: skip
        self._last_checkpoint = time.monotonic()

    # --- the loop ----------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        clock = time.perf_counter()
        outcome: dict[str, Any] = {}
        metrics_log = rundir.CsvLog(self.run_dir / rundir.METRICS_FILE, self._metric_columns())
        gradient_log = rundir.CsvLog(self.run_dir / rundir.GRADIENTS_FILE, GRADIENT_COLUMNS)
        self.grads = GradientLog(self.network, gradient_log, log_interval(self.config.training.log_every, self.total_steps))
        self.grads.remember(self._gradient_rows)
        self.progress.start(self.total_steps, self.config.name, self.step)
        try:
            # Overflow is how divergence starts; it is detected and reported, so numpy need not warn about it.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                status = self._train(metrics_log, clock)
        except Diverged as exc:
            status = "diverged"
            outcome["diverged"] = {"step": exc.step, "layer": exc.layer, "reason": str(exc)}
        except KeyboardInterrupt:
            status = "interrupted"
        except Exception as exc:  # noqa: BLE001 — any failure must still leave a readable run directory
            status = "failed"
            outcome["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            self.progress.close()
            self.grads.flush()
            metrics_log.close()
            gradient_log.close()
        seconds = self.elapsed_before + time.perf_counter() - clock
        summary = self._summary(status, seconds, outcome)
        try:
            self._save_model()
            rundir.write_json(self.run_dir / rundir.SUMMARY_FILE, summary)
        except OSError as exc:
            raise AutobpError(
                f"{self.run_dir}: the run ended ({status}) but its results could not be written "
                f"({exc.strerror or exc}); the logs written until then are kept"
            ) from None
        return RunResult(self.run_dir, status, summary, verdicts(self.network, self.grads.history))

    def _train(self, metrics_log: rundir.CsvLog, clock: float) -> str:
        training = self.config.training
        while self.epoch < training.epochs and self.step < self.total_steps:
            self.epoch += 1
            lr = learning_rate(self.config.optimizer, self.epoch - 1, training.epochs)
            train_metrics = self._train_epoch(lr)
            seconds = self.elapsed_before + time.perf_counter() - clock
            row = self._epoch_row(train_metrics, lr, seconds)
            self.history.append(row)
            metrics_log.write([[row[c] for c in metrics_log.columns]])
            metrics_log.flush()
            self.grads.flush()
            self.progress.update(self.step, row, self.metric)
            stop = self._should_stop(row)
            if self._checkpoint_due(stop or self.epoch >= training.epochs or self.step >= self.total_steps):
                self._save_checkpoint(seconds)
            if stop:
                self.network.load_state_dict(self.best["state"])
                return "stopped_early"
        if training.early_stopping is not None and self.best["state"] is not None:
            self.network.load_state_dict(self.best["state"])
        return "completed"

    def _train_epoch(self, lr: float) -> dict[str, float | None]:
        meter = Meter(self.dataset.task, self.config.loss, self.dataset)
        order = self.shuffle_rng.permutation(len(self.X))
        may_end = self._may_stop_after_this_epoch()
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            step = self.step + 1
            ends = step == self.total_steps or (may_end and start + self.batch_size >= len(order))
            self._train_step(step, self.X[batch], self.y[batch], lr, meter, self.grads.wants(step, ends))
            self.step = step  # counts completed updates only
            if self.step >= self.total_steps:
                break
        return meter.result()

    def _train_step(self, step: int, xb: np.ndarray, yb: np.ndarray, lr: float, meter: Meter, logging: bool) -> None:
        if self.compiled is not None:
            trace, value = self.compiled.step(xb, yb, logging)
        else:
            trace = self.network.forward(xb, self.dropout_rng, retain=logging)
            loss = self.loss_fn(trace.output, yb)
            loss.backward()
            value = float(loss.data)
        sums = self._check_finite(step, value, trace, logging)
        meter.add(trace.output.data, yb, value)
        before = self.grads.before_update(step, trace, sums[0::2]) if logging else None
        if self.config.optimizer.clip_grad_norm is not None:
            clip_grad_norm(self.params, self.config.optimizer.clip_grad_norm)
        updates = self.optimizer.step(lr)
        for p in self.params:
            p.grad = None
        if before is not None:
            self.grads.after_update(step, self.epoch, before, updates)

    def _check_finite(self, step: int, loss: float, trace: Trace, logging: bool) -> list[float]:
        """Raise Diverged on a non-finite loss or gradient; return each gradient's sum (the log reuses them; a
        compiled step that is not logged checks its one flat gradient buffer instead and returns no sums)."""
        # Summing each gradient is a cheap test: the sum is finite unless some entry is (or the sum overflows).
        flat = None if self.compiled is None else self.compiled.flat_grad
        if flat is not None and math.isfinite(loss) and math.isfinite(total(flat)):
            return [total(p.grad) for p in self.params] if logging else []  # one pass when the log needs no sums
        sums = [total(p.grad) for p in self.params]
        if math.isfinite(loss) and all(map(math.isfinite, sums)):
            return sums
        layer = next((layer.name for layer in self.network.layers if not layer_gradients_finite(layer)), None)
        if layer is None and math.isfinite(loss):
            return sums  # only a sum overflowed: every entry is finite
        self.grads.after_update(step, self.epoch, self.grads.before_update(step, trace, sums[0::2]), None)
        raise Diverged(step, layer)

    # --- evaluation and early stopping -------------------------------------------------------------------------
    def evaluate(self, X: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
        """Loss and accuracy/R² of the current network on (X, y)."""
        meter = Meter(self.dataset.task, self.config.loss, self.dataset)
        evaluate(self.network, meter, X, y)
        return meter.result()

    def _epoch_row(self, train: dict[str, float | None], lr: float, seconds: float) -> dict[str, Any]:
        val = self.evaluate(self.X_val, self.y_val)
        return {
            "epoch": self.epoch,
            "step": self.step,
            "train_loss": train["loss"],
            "val_loss": val["loss"],
            f"train_{self.metric}": train[self.metric],
            f"val_{self.metric}": val[self.metric],
            "lr": lr,
            "seconds": round(seconds, 6),
        }

    def _metric_columns(self) -> list[str]:
        return ["epoch", "step", "train_loss", "val_loss", f"train_{self.metric}", f"val_{self.metric}", "lr", "seconds"]

    def _may_stop_after_this_epoch(self) -> bool:
        stopping = self.config.training.early_stopping
        return stopping is not None and self.best["waited"] >= stopping.patience - 1

    def _should_stop(self, row: dict[str, Any]) -> bool:
        stopping = self.config.training.early_stopping
        if stopping is None:
            return False
        value = row[stopping.monitor]
        if value is None:
            return False
        sign = 1.0 if stopping.monitor.endswith("loss") else -1.0  # minimise losses, maximise accuracy and R²
        best = self.best["value"]
        if best is None or sign * (best - value) > stopping.min_delta:
            self.best.update(value=value, epoch=self.epoch, state=self.network.state_dict(), waited=0)
            return False
        self.best["waited"] += 1
        return self.best["waited"] >= stopping.patience

    # --- what the run leaves -----------------------------------------------------------------------------------
    def _save_model(self) -> None:
        arrays = self.network.state_dict()
        data = self.dataset
        extras = {
            "x_mean": data.x_mean, "x_std": data.x_std, "y_mean": data.y_mean, "y_std": data.y_std,
            "feature_names": np.array(data.feature_names, dtype=str),
            "target_names": np.array(data.target_names, dtype=str),
            "class_names": None if data.class_names is None else np.array(data.class_names, dtype=str),
        }  # fmt: skip
        arrays.update({key: value for key, value in extras.items() if value is not None})
        rundir.write_npz(self.run_dir / rundir.MODEL_FILE, arrays)

    def _summary(self, status: str, seconds: float, outcome: dict[str, Any]) -> dict[str, Any]:
        # Only an epoch's last batch can be short, so whole epochs plus full batches count the examples exactly.
        epochs, batches = divmod(self.step, self.steps_per_epoch)
        samples = epochs * len(self.X) + batches * self.batch_size
        return {
            "status": status,
            **outcome,
            "name": self.config.name,
            "run_dir": str(self.run_dir),
            "task": self.dataset.task,
            "epochs": self.epoch,
            "epochs_completed": len(self.history),
            "steps": self.step,
            "seconds": round(seconds, 6),
            "steps_per_second": self.step / seconds if seconds > 0 else None,
            "samples_per_second": samples / seconds if seconds > 0 else None,
            "final": {k: v for k, v in (self.history[-1] if self.history else {}).items() if k not in ("seconds",)},
            "best": self._best_metrics(),
            "early_stopping": None if self.best["epoch"] is None else {
                "monitor": self.config.training.early_stopping.monitor, "best_epoch": self.best["epoch"],
                "best_value": self.best["value"], "restored": True,
            },  # fmt: skip
            "started": self.started,
            **({"resumed": self.resumed} if self.resumed else {}),
            "ended": _now(),
            "versions": {"autobp": autobp.__version__, "numpy": np.__version__, "python": platform.python_version()},
        }

    def _best_metrics(self) -> dict[str, dict[str, Any]]:
        best = {}
        for key in ("train_loss", "val_loss", f"train_{self.metric}", f"val_{self.metric}"):
            rows = [row for row in self.history if row[key] is not None and math.isfinite(row[key])]
            if not rows:
                continue
            pick = min if key.endswith("loss") else max
            row = pick(rows, key=lambda r: r[key])
            best[key] = {"value": row[key], "epoch": row["epoch"]}
        return best


def format_summary(result: RunResult) -> str:
    """The end-of-run report: status, final and best metrics, speed, one gradient verdict per layer, the path."""
    summary = result.summary
    lines = [f"{summary['name']}: {result.status} after {summary['epochs']} epochs, {summary['steps']} steps "
             f"in {summary['seconds']:.2f} s ({summary['steps_per_second'] or 0:.0f} steps/s)"]  # fmt: skip
    if "diverged" in summary:
        lines.append(f"  diverged: {summary['diverged']['reason']}")
    if "error" in summary:
        lines.append(f"  error: {summary['error']}")
    final = summary["final"]
    for key, best in summary["best"].items():
        lines.append(f"  {key:<16} final {format_number(final.get(key)):<10}  best {format_number(best['value']):<10} (epoch {best['epoch']})")
    if result.verdicts:
        lines.append("gradients (median ‖∂L/∂f_i‖ over logged steps):")
        lines += [f"  {line}" for line in result.verdicts]
    lines.append(f"run directory: {result.run_dir}")
    return "\n".join(lines)


def layer_gradients_finite(layer: Layer) -> bool:
    return bool(np.isfinite(layer.weight.grad).all() and np.isfinite(layer.bias.grad).all())
