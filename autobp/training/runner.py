"""The runner: train a network from a config and leave a run directory behind.

    result = autobp.train("configs/quickstart.yaml", overrides=["optimizer.lr=0.003"])
    result.run_dir, result.status, result.summary

A run ends `completed` (last epoch or max_steps), `stopped_early`, `diverged` (a non-finite loss or gradient),
`interrupted` (Ctrl-C), `failed` (anything unexpected) or, in a sweep with early_terminate, `pruned`; each keeps its
logs and writes model.npz and summary.json.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import autobp
from autobp.common import files
from autobp.common.errors import AutobpError, ConfigError, DataError
from autobp.common.runtime import blas_build, keep_freed_memory
from autobp.common.text import flatten, format_number, plural, shorten
from autobp.health import describe, judge
from autobp.model.dataset import Dataset
from autobp.model.mapped import BatchReader, MappedRows
from autobp.model.network import MODEL_FILE, Layer, Network, Trace, build_network
from autobp.model.prepare import prepare
from autobp.rundir import checkpoint
from autobp.rundir import instruments as instrument_file
from autobp.rundir import layout as rundir
from autobp.rundir.histograms import HistogramLog, Histograms
from autobp.rundir.histograms import read as read_histograms
from autobp.rundir.reader import read_run
from autobp.rundir.status import Status
from autobp.rundir.summary import Best, Divergence, EarlyStop, Summary, read_summary, write_summary
from autobp.config.catalog import LOSSES, lower_is_better, task_metric
from autobp.config.models import Config, check_name
from autobp.config.configfile import dump_config, load_config
from autobp.training.compiled import CompiledSteps
from autobp.training.gradstats import COLUMNS as GRADIENT_COLUMNS
from autobp.training.gradstats import TARGET_LOGGED_STEPS, GradientLog, log_interval, total
from autobp.training.instruments import Instruments
from autobp.training.metrics import Meter, evaluate, loss_targets
from autobp.training.optim import build_optimizer, clip_grad_norm, learning_rate
from autobp.training.progress import Progress
from autobp.training.state import INIT_STREAM, STOP_SIGNALS, Clock, EarlyStopping, RandomStreams, StopRequests, now

AUTO_CHECKPOINT_SECONDS = 10.0  # checkpoint_every: auto writes a checkpoint at most this often
EXTENSIBLE_KEYS = {"training.epochs", "training.max_steps"}  # what --resume may change
# Called at each epoch end that training would continue past, with the epoch and its metrics row; True, or the
# reason as text, stops the run there as `pruned` (a sweep's early termination; the text is summary.json's reason).
EpochHook = Callable[[int, dict[str, Any]], "bool | str"]


@dataclass
class RunResult:
    """What a finished run leaves: its directory, final status and summary (summary.json's content)."""

    run_dir: Path
    status: Status
    summary: Summary
    nothing_to_do: bool = False  # --resume of a run that had already finished

    @property
    def exit_code(self) -> int:
        return self.status.exit_code


class Diverged(Exception):
    """A non-finite loss or gradient at `step`; `layer` is the first layer whose gradient went non-finite."""

    def __init__(self, step: int, layer: str | None) -> None:
        super().__init__("non-finite loss" if layer is None else f"first non-finite gradient in {layer}")
        self.step = step
        self.layer = layer


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
    rundir.ensure_output_dir(Path(config.output.dir))  # before the free-space check, which needs the folder
    rundir.check_free_space(Path(config.output.dir), estimated_size(config, dataset))
    try:
        run_dir = rundir.create_run_dir(Path(config.output.dir), config.name, {rundir.CONFIG_FILE: dump_config(config)})
    except OSError as exc:
        raise _nothing_trained(exc) from None
    return _train_in(config, dataset, run_dir, quiet)  # config.yaml is in the folder from the start


def estimated_size(config: Config, dataset: Dataset) -> int:
    """Roughly how many bytes a run writes: model, checkpoint (parameters, optimizer moments, best weights), logs."""
    sizes = [dataset.n_features] + [layer.units or dataset.n_outputs for layer in config.model.layers]
    parameters = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    batch = config.training.batch_size or max(len(dataset.X_train), 1)
    steps = config.training.epochs * max(1, math.ceil(len(dataset.X_train) / batch))
    if config.training.max_steps is not None:
        steps = min(steps, config.training.max_steps)
    logged = min(steps, 2 * TARGET_LOGGED_STEPS) if config.training.log_every == "auto" else steps // config.training.log_every + 2
    instruments = config.training.instruments
    instrumented = 0 if instruments is None else logged if instruments.every == "auto" else steps // instruments.every + 1
    return parameters * 8 * 6 + (logged + instrumented) * len(sizes) * 250 + config.training.epochs * 200


def run(
    config: Config, dataset: Dataset, run_dir: Path, *, quiet: bool = True, on_epoch: EpochHook | None = None,
    stop_signals: Sequence[int] = STOP_SIGNALS,
) -> RunResult:
    """Train a prepared config (see `prepare`) into `run_dir`, an existing empty folder; `on_epoch` may prune it.
    `stop_signals` end the run cleanly at the next step (a pool worker leaves SIGTERM to its pool, which uses it to
    end broken workers)."""
    try:
        files.write_atomic(run_dir / rundir.CONFIG_FILE, dump_config(config))
    except OSError as exc:
        raise _nothing_trained(exc) from None
    return _train_in(config, dataset, run_dir, quiet, on_epoch, stop_signals)


def _train_in(
    config: Config, dataset: Dataset, run_dir: Path, quiet: bool, on_epoch: EpochHook | None = None,
    stop_signals: Sequence[int] = STOP_SIGNALS,
) -> RunResult:
    """Train into `run_dir`, which already holds the config.yaml of `config`."""
    keep_freed_memory()
    trainer = Trainer(config, dataset, run_dir, Progress(quiet), on_epoch)
    trainer.requests = StopRequests(stop_signals)
    with files.exclusive(run_dir):  # a new folder: nobody else holds it, but --resume of it must wait its turn
        return trainer.run()


def resume(
    run_dir: str | Path, overrides: Sequence[str] = (), *, quiet: bool = True, announce: Callable[[str], None] | None = None
) -> RunResult:
    """Continue a run from its last checkpoint, or extend a finished one (`training.epochs`, `training.max_steps`);
    `announce` is told where the run continues before training starts."""
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
    with files.exclusive(run_dir) as taken:
        if not taken:
            raise ConfigError(f"--resume {run_dir}: another autobp process is training this run; wait for it to end")
        return _continue(run_dir, config, dataset, bool(differing), quiet, announce)


def _continue(
    run_dir: Path, config: Config, dataset: Dataset, extended: bool, quiet: bool,
    announce: Callable[[str], None] | None,
) -> RunResult:  # fmt: skip
    """`resume` once the run is known to be this process's alone."""
    saved_path = run_dir / rundir.CONFIG_FILE
    notes: list[str] = []
    previous = _previous_summary(run_dir / rundir.SUMMARY_FILE, notes)
    if previous is not None and previous.status.finished and not extended:
        return RunResult(run_dir, previous.status, previous, nothing_to_do=True)
    state = _load_checkpoint(run_dir)
    _check_extension(run_dir, config, state)
    keep_freed_memory()
    trainer = Trainer(config, dataset, run_dir, Progress(quiet))
    trainer.resumed = [*(previous.resumed if previous else []), now()]
    where = trainer.restore(state, notes)  # every file read and checked before the first write
    try:
        trainer.mark_running()  # first write: from here on, nothing on disk may say the run has finished
        files.remove_orphans(run_dir)  # temporaries of writers killed mid-write (a checkpoint is ~ the model's size)
        trainer.cut_logs()
        files.write_atomic(saved_path, dump_config(config))
    except OSError as exc:
        error = _nothing_trained(exc)
        with contextlib.suppress(OSError):  # if even summary.json cannot be written, it says running: resumable
            conclude(run_dir, trainer.summary_now(Status.FAILED, {"error": str(error)}))
        raise error from None
    if announce is not None:
        announce(where)
    return trainer.run()


def _nothing_trained(exc: OSError) -> AutobpError:
    """A write that failed before training began (exit 1)."""
    return AutobpError(f"{files.describe_write_error(exc)}; nothing was trained")


def _previous_summary(path: Path, notes: list[str]) -> Summary | None:
    """summary.json of the run being resumed; a damaged one is a note (the checkpoint says where the run is)."""
    if not path.exists():
        return None
    try:
        return read_summary(path)
    except DataError as err:
        notes.append(f"{err}: ignored, the checkpoint says where the run is")
        return None


def _load_checkpoint(run_dir: Path) -> checkpoint.Checkpoint | None:
    try:
        return checkpoint.load(run_dir)
    except DataError as err:
        raise DataError(f"{err}; --resume cannot continue from it (move it away to train this run again from "
                        "epoch 1)") from None


def _check_extension(run_dir: Path, config: Config, state: checkpoint.Checkpoint | None) -> None:
    """A run can be extended, never shortened: a shorter run is a new run (nothing is changed when refused)."""
    if state is None:
        return
    training = config.training
    if training.epochs < state.epoch:
        raise ConfigError(f"--resume {run_dir}: training.epochs={training.epochs}, but the run has already trained "
                          f"{plural(state.epoch, 'epoch')}; a run can be extended, not shortened (start a new run)")
    if training.max_steps is not None and training.max_steps < state.step:
        raise ConfigError(f"--resume {run_dir}: training.max_steps={training.max_steps}, but the run has already "
                          f"taken {plural(state.step, 'step')}; a run can be extended, not shortened (start a new run)")


def _intact_rows(path: Path, columns: list[str], notes: list[str]) -> list[dict[str, str]]:
    """A log's rows (text as read) that are whole: a row cut short by a kill or a failed write, or otherwise
    damaged, is dropped with a note; an unreadable log is a note and no rows (both are rewritten from here)."""
    if not path.exists():
        return []
    try:
        rows = files.read_rows(path)
    except DataError as err:
        notes.append(f"{err}: rewritten from the checkpoint on")
        return []
    if rows and not files.ends_a_line(path):
        rows[-1] = {}  # cut mid-write: even a last number that parses may be missing digits
    required = ("epoch", "step") if "step" in columns else ("epoch",)
    intact = [row for row in rows if files.whole_row(row, columns, required)]
    if len(intact) < len(rows):
        notes.append(f"{path.name}: {plural(len(rows) - len(intact), 'damaged row')} dropped")
    return intact


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


class Trainer:
    """One training run: the network, its optimizer and data, the loop, and everything it writes."""

    def __init__(
        self, config: Config, dataset: Dataset, run_dir: Path, progress: Progress, on_epoch: EpochHook | None = None
    ) -> None:
        self.config = config
        self.on_epoch = on_epoch
        self.dataset = dataset
        self.run_dir = run_dir
        self.progress = progress
        seed = config.seed
        self.network: Network = build_network(config, dataset.n_features, np.random.default_rng([seed, INIT_STREAM]))
        self.params = self.network.parameters()
        self.optimizer = build_optimizer(config.optimizer, self.params, self.network.decay_mask())
        self.streams = RandomStreams(seed, dropout=any(layer.dropout > 0 for layer in self.network.layers))
        dtype = np.dtype(config.training.dtype)
        self.loss_fn = LOSSES[config.loss].engine
        self.compiled = CompiledSteps(self.network, self.loss_fn, self.streams.dropout) if config.training.compile else None
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
        self.metric = task_metric(dataset.task)
        self.step = 0
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self._kept_rows: tuple[list[dict[str, str]], list[dict[str, str]]] = ([], [])  # set by restore
        stopping = training.early_stopping
        self.stopper = None if stopping is None else EarlyStopping(stopping.monitor, stopping.patience, stopping.min_delta)
        self.clock = Clock()
        self.resumed: list[str] = []
        self.requests = StopRequests()
        self._logs: tuple[files.CsvLog, ...] = ()  # synced to disk before each checkpoint
        self._epoch_start: EpochStart | None = None  # set while an epoch is under way (or was cut short)
        self._restored_epoch: int | None = None  # the epoch whose weights early stopping put back
        self._pruned_reason: str | None = None  # what `on_epoch` said when it stopped the run
        self._last_checkpoint = time.monotonic()
        self.histograms = HistogramLog([layer.name for layer in self.network.layers], self.total_steps)
        self.instruments = None if training.instruments is None else Instruments(
            self.network, training.instruments, training.log_every, self.total_steps, config.loss)  # fmt: skip

    def restore(self, state: checkpoint.Checkpoint | None, notes: Sequence[str] = ()) -> str:
        """Continue from a checkpoint: state and counters, and the log rows up to it, all read and checked without
        writing anything (`cut_logs` then writes the logs back to it); None: start over. Returns where the run
        continues, in words, with `notes` and what was found damaged on the way."""
        notes = list(notes)
        where = self._restore(state, notes)
        return "; ".join([where, *notes])

    def _restore(self, state: checkpoint.Checkpoint | None, notes: list[str]) -> str:
        epoch, step = (0, 0) if state is None else (state.epoch, state.step)
        metrics_path = self.run_dir / rundir.METRICS_FILE
        gradients_path = self.run_dir / rundir.GRADIENTS_FILE
        logged = _intact_rows(metrics_path, self._metric_columns(), notes)
        metrics = [r for r in logged if int(r["epoch"]) <= epoch]
        gradients = [r for r in _intact_rows(gradients_path, GRADIENT_COLUMNS, notes) if int(r["step"]) <= step]
        self._kept_rows = (metrics, gradients)
        self.history = [{k: files.parse_cell(k, v) for k, v in row.items()} for row in metrics]
        dropped = len(logged) - len(metrics)
        if state is None:
            instrument_file.rows_through(self.run_dir, 0, notes)
            return f"no checkpoint to resume from: starting again from epoch 1{_dropped(dropped)}"
        self.histograms.keep_until(self._earlier_histograms(notes), step)
        path = self.run_dir / checkpoint.CHECKPOINT_FILE
        self.network.load_state_dict(state.parameters, str(path))
        try:
            self.optimizer.load_state_dict(state.optimizer)
            for owner in self._state_owners():
                owner.load_state_dict(state.state)
            self._epoch_start = EpochStart.from_state(state.state, self._new_meter())
        except KeyError as missing:
            raise DataError(f"{path}: not an autobp checkpoint (missing {missing})") from None
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:  # a state of the wrong kind: text, JSON
            problem = shorten(str(exc) or type(exc).__name__, 200)
            raise DataError(f"{path}: not an autobp checkpoint ({problem})") from None
        self.epoch, self.step = state.epoch, state.step
        if self.instruments is not None:  # rows the checkpoint holds as pending are written again, with α
            pending = self.instruments.resume_step
            instrument_file.rows_through(self.run_dir, step if pending is None else pending - 1, notes)
        where = f"the checkpoint of epoch {epoch}"
        if self._epoch_start is not None:
            batches = step - self._epoch_start.first_step
            where = f"the checkpoint inside epoch {epoch + 1}, after {plural(batches, 'batch', 'batches')} (step {step})"
        return f"resuming from {where}{_dropped(dropped)}"

    def cut_logs(self) -> None:
        """Rewrite metrics.csv and gradients.csv with the rows `restore` kept (the ones up to the checkpoint)."""
        metrics, gradients = self._kept_rows
        files.rewrite_rows(self.run_dir / rundir.METRICS_FILE, self._metric_columns(), metrics)
        files.rewrite_rows(self.run_dir / rundir.GRADIENTS_FILE, GRADIENT_COLUMNS, gradients)

    def _earlier_histograms(self, notes: list[str]) -> Histograms | None:
        try:
            return read_histograms(self.run_dir)
        except DataError as err:
            notes.append(f"{err}: its earlier snapshots are dropped")
            return None

    def _new_meter(self) -> Meter:
        return Meter(self.dataset.task, self.config.loss, self.dataset)

    def _state_owners(self) -> list[EarlyStopping | RandomStreams | Clock | Instruments]:
        return [owner for owner in (self.stopper, self.streams, self.clock, self.instruments) if owner is not None]

    def _checkpoint_due(self, finished: bool) -> bool:
        every = self.config.training.checkpoint_every
        if every is None:
            return False
        if finished:
            return True
        if every == "auto":
            return time.monotonic() - self._last_checkpoint >= AUTO_CHECKPOINT_SECONDS
        return self.epoch % every == 0

    def _save_checkpoint(self) -> None:
        for log in self._logs:
            if not log.closed:
                log.sync()
        owners = [*self._state_owners(), *([self._epoch_start] if self._epoch_start is not None else [])]
        state = {key: value for owner in owners for key, value in owner.state_dict().items()}
        completed = self.epoch - (self._epoch_start is not None)  # an epoch cut short resumes where it stopped
        checkpoint.save(self.run_dir, checkpoint.Checkpoint(
            epoch=completed, step=self.step, parameters=self.network.state_dict(),
            optimizer=self.optimizer.state_dict(), state=state,
        ))  # fmt: skip
        self.histograms.save(self.run_dir)
        self._last_checkpoint = time.monotonic()
        self.histograms = HistogramLog([layer.name for layer in self.network.layers], self.total_steps)

    # --- the loop ----------------------------------------------------------------------------------------------
    def mark_running(self) -> None:
        """summary.json says `running` while the run trains, so that a run killed outright never reads as finished."""
        write_summary(self.run_dir / rundir.SUMMARY_FILE, self.summary_now(Status.RUNNING, {}))

    def summary_now(self, status: Status, outcome: dict[str, Any]) -> Summary:
        """summary.json as it stands: `status` and `outcome` with what the run has trained so far."""
        return self._summary(status, self.clock.seconds(), outcome)

    def run(self) -> RunResult:
        self.clock.start()
        outcome: dict[str, Any] = {}
        try:
            self.mark_running()
            metrics_log = files.CsvLog(self.run_dir / rundir.METRICS_FILE, self._metric_columns())
            gradient_log = files.CsvLog(self.run_dir / rundir.GRADIENTS_FILE, GRADIENT_COLUMNS)
            if self.instruments is not None:
                self.instruments.log = instrument_file.open_log(self.run_dir)
        except OSError as exc:
            raise _nothing_trained(exc) from None
        self._logs = (metrics_log, gradient_log, *([self.instruments.log] if self.instruments is not None else []))
        self.grads = GradientLog(self.network, gradient_log, log_interval(self.config.training.log_every, self.total_steps))
        self.progress.start(self.total_steps, self.config.name, self.step)
        with self.requests:
            return self._run_and_record(metrics_log, gradient_log, outcome)

    def _run_and_record(self, metrics_log: files.CsvLog, gradient_log: files.CsvLog, outcome: dict[str, Any]) -> RunResult:
        """Train, then write what the run leaves whatever ended it; signals wait for the files to be written."""
        try:
            # Overflow is how divergence starts; it is detected and reported, so numpy need not warn about it.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                status = self._train(metrics_log)
            if self._pruned_reason is not None:
                outcome["reason"] = self._pruned_reason
        except Diverged as exc:
            status = Status.DIVERGED
            outcome.update(diverged=Divergence(step=exc.step, epoch=self.epoch, layer=exc.layer, reason=str(exc)))
        except KeyboardInterrupt:
            status = Status.INTERRUPTED
        except OSError as exc:  # a failed write (disk full, file-size limit): the files before it are intact
            status = Status.FAILED
            outcome["error"] = files.describe_write_error(exc)
        except Exception as exc:  # noqa: BLE001 — any failure must still leave a readable run directory
            status = Status.FAILED
            outcome["error"] = f"{type(exc).__name__}: {exc}"
        self.progress.close()
        unwritten = self._write_logs(*self._logs)
        if unwritten is not None and status != Status.FAILED:
            status, outcome = Status.FAILED, {"error": unwritten}
        return self._leave(self._summary(status, self.clock.seconds(), outcome))

    def _write_logs(self, *logs: files.CsvLog) -> str | None:
        """Write out what the logs and histograms still hold; the first write that failed, described, or None."""
        failed = []
        finish = [self.instruments.finish] if self.instruments is not None else []
        for write in (self.grads.flush, *finish, lambda: self.histograms.save(self.run_dir), *(log.close for log in logs)):
            try:
                write()
            except OSError as exc:
                failed.append(files.describe_write_error(exc))
        return failed[0] if failed else None

    def _leave(self, summary: Summary) -> RunResult:
        """Write the checkpoint (when interrupted), model.npz and summary.json. A write that fails makes the run
        `failed`, which summary.json still records if it can be written; if not, it keeps saying `running`."""
        try:
            if summary.status == Status.INTERRUPTED and self.config.training.checkpoint_every is not None:
                self._save_checkpoint()
            self._save_model()
        except OSError as exc:
            summary.status, summary.error = Status.FAILED, files.describe_write_error(exc)
        try:
            conclude(self.run_dir, summary)
        except OSError as exc:
            ended = f"{summary.status}: {summary.error}" if summary.error else str(summary.status)
            raise AutobpError(f"{files.describe_write_error(exc)}; the run ended {ended}, and {rundir.SUMMARY_FILE} "
                              f"still says running; `autobp train --resume {self.run_dir}` continues it once there "
                              "is room") from None  # fmt: skip
        return RunResult(self.run_dir, summary.status, summary)

    def _train(self, metrics_log: files.CsvLog) -> Status:
        training = self.config.training
        pruned = False
        while self.epoch < training.epochs and self.step < self.total_steps:
            self.epoch += 1
            lr = learning_rate(self.config.optimizer, self.epoch - 1, training.epochs)
            train_metrics, finished = self._train_epoch(lr)
            if finished:
                self._epoch_start = None
            row = self._epoch_row(train_metrics, lr, self.clock.seconds())
            self.history.append(row)
            metrics_log.write([[row[c] for c in metrics_log.columns]])
            metrics_log.flush()
            self.grads.flush()
            if self.instruments is not None:
                self.instruments.flush()
            self.progress.update(self.step, row, self.metric)
            stop = self.stopper is not None and self.stopper.update(row[self.stopper.monitor], self.epoch,
                                                                    self.network.state_dict)  # fmt: skip
            ending = stop or self.epoch >= training.epochs or self.step >= self.total_steps
            verdict = not ending and self.on_epoch is not None and self.on_epoch(self.epoch, row)
            pruned = bool(verdict)
            if pruned and isinstance(verdict, str):
                self._pruned_reason = verdict
            if self._checkpoint_due(ending or pruned):
                self._save_checkpoint()
            if stop:
                self._restore_best()
                return Status.STOPPED_EARLY
            if pruned:
                break
        if self.stopper is not None and self.stopper.best_weights is not None:
            self._restore_best()
        return Status.PRUNED if pruned else Status.COMPLETED

    def _restore_best(self) -> None:
        if self.stopper.best_epoch == len(self.history):  # the last epoch was the best: nothing to put back
            return
        self.network.load_state_dict(self.stopper.best_weights)
        self._restored_epoch = self.stopper.best_epoch

    def _train_epoch(self, lr: float) -> tuple[dict[str, float | None], bool]:
        """Train on the epoch's batches (from where a checkpoint inside it stopped); the epoch's training metrics,
        and whether every batch was done (max_steps can end an epoch early)."""
        start = self._epoch_start
        if start is None:
            start = self._epoch_start = EpochStart(self.streams.shuffle.bit_generator.state, self.step, self._new_meter())
        else:
            self.streams.shuffle.bit_generator.state = start.shuffle
        order = self.streams.epoch_order(len(self.X), self.config.data.shuffle_window)
        may_end = self.stopper is not None and self.stopper.may_stop_after_next_epoch()
        tick = self.progress.tick
        rows_of = _row_gatherer(self.X, order, self.batch_size, self.config.data.shuffle == "exact")
        try:
            first = (self.step - start.first_step) * self.batch_size
            for begin in range(first, len(order), self.batch_size):
                batch = order[begin : begin + self.batch_size]
                step = self.step + 1
                last_batch = begin + self.batch_size >= len(order)
                ends = step == self.total_steps or (may_end and last_batch)
                self._train_step(step, rows_of(begin), self.y.take(batch, 0), lr, start.meter,
                                 self.grads.wants(step, ends),
                                 self.instruments is not None and self.instruments.observes(step))  # fmt: skip
                self.step = step  # counts completed updates only
                tick(step)
                self.requests.check()
                if self.step >= self.total_steps:
                    return start.meter.result(), last_batch
            return start.meter.result(), True
        finally:
            if isinstance(rows_of, BatchReader):
                rows_of.close()

    def _train_step(self, step: int, xb: np.ndarray, yb: np.ndarray, lr: float, meter: Meter, logging: bool,
                    observed: bool = False) -> None:  # fmt: skip
        """One update; `logging` logs its gradient statistics, `observed` hands it to the instruments."""
        if self.compiled is not None:
            trace, value = self.compiled.step(xb, yb, logging or observed)
        else:
            trace = self.network.forward(xb, self.streams.dropout, retain=logging or observed)
            loss = self.loss_fn(trace.output, yb)
            loss.backward()
            value = float(loss.data)
        weight_sums = self._check_finite(step, value, trace, logging)
        meter.add(trace.output.data, yb, value)
        if self.histograms.wants(step):
            self.histograms.record(step, self.epoch, [(layer.weight.grad, layer.weight.data, z.data)
                                                      for layer, z in zip(self.network.layers, trace.pre_activations)])
        before = self.grads.before_update(step, trace, weight_sums) if logging else None
        if observed:
            self.instruments.before_update(step, self.epoch, xb, yb, trace,
                                           self.loss_fn.per_example(trace.output.data, yb), value, lr)  # fmt: skip
        clip = self.config.optimizer.clip_grad_norm
        if clip is not None:
            clip_grad_norm(self.params, clip)  # new gradient arrays: the flat buffer no longer holds them
        flat = self.compiled.flat_grad if self.compiled is not None and clip is None else None
        updates = self.optimizer.step(lr, flat)
        if observed:
            self.instruments.after_update(step, updates)
        if self.compiled is None:  # backward adds to a gradient; a compiled step sets every one afresh
            for p in self.params:
                p.grad = None
        if before is not None:
            self.grads.after_update(step, self.epoch, before, updates)

    def _check_finite(self, step: int, loss: float, trace: Trace, logging: bool) -> list[float]:
        """Raise Diverged on a non-finite loss or gradient; return each weight gradient's sum, which the log
        reuses (a compiled step checks its one flat gradient buffer instead, and returns no sums unless logged)."""
        # Summing each gradient is a cheap test: the sum is finite unless some entry is (or the sum overflows).
        flat = None if self.compiled is None else self.compiled.flat_grad
        if flat is not None and math.isfinite(loss) and math.isfinite(total(flat)):
            return [total(layer.weight.grad) for layer in self.network.layers] if logging else []
        sums = [total(p.grad) for p in self.params]
        if math.isfinite(loss) and all(map(math.isfinite, sums)):
            return sums[0::2]
        layer = next((layer.name for layer in self.network.layers if not layer_gradients_finite(layer)), None)
        if layer is None and math.isfinite(loss):
            return sums[0::2]  # only a sum overflowed: every entry is finite
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
        files.write_npz(self.run_dir / MODEL_FILE, arrays)

    def _summary(self, status: Status, seconds: float, outcome: dict[str, Any]) -> Summary:
        # Only an epoch's last batch can be short, so whole epochs plus full batches count the examples exactly.
        epochs, batches = divmod(self.step, self.steps_per_epoch)
        samples = epochs * len(self.X) + batches * self.batch_size
        return Summary(
            status=status,
            **outcome,
            name=self.config.name,
            run_dir=str(self.run_dir),
            task=self.dataset.task,
            epochs=self.epoch,
            epochs_completed=len(self.history),
            steps=self.step,
            seconds=round(seconds, 6),
            steps_per_second=self.step / seconds if seconds > 0 else None,
            samples_per_second=samples / seconds if seconds > 0 else None,
            final=self._metrics_of(len(self.history)),
            saved=self._metrics_of(self._restored_epoch or len(self.history)),
            best=self._best_metrics(),
            early_stopping=None if self.stopper is None or self.stopper.best_epoch is None else EarlyStop(
                monitor=self.stopper.monitor, best_epoch=self.stopper.best_epoch,
                best_value=self.stopper.best_value, restored=self._restored_epoch is not None,
            ),  # fmt: skip
            started=self.clock.started,
            resumed=self.resumed,
            ended=now(),
            versions={"autobp": autobp.__version__, "numpy": np.__version__, **blas_build(),
                      "python": platform.python_version()},
        )

    def _metrics_of(self, epoch: int) -> dict[str, Any]:
        """metrics.csv's row of `epoch` (1-based; 0: none), less its time column."""
        row = self.history[epoch - 1] if 0 < epoch <= len(self.history) else {}
        return {key: value for key, value in row.items() if key != "seconds"}

    def _best_metrics(self) -> dict[str, Best]:
        best = {}
        for key in ("train_loss", "val_loss", f"train_{self.metric}", f"val_{self.metric}"):
            rows = [row for row in self.history if row[key] is not None and math.isfinite(row[key])]
            if not rows:
                continue
            pick = min if lower_is_better(key) else max
            row = pick(rows, key=lambda r: r[key])
            best[key] = Best(value=row[key], epoch=row["epoch"])
        return best


def _row_gatherer(X: np.ndarray | MappedRows, order: np.ndarray, batch_size: int,
                  scattered: bool) -> Callable[[int], np.ndarray]:  # fmt: skip
    """The batch starting at position `begin` of the epoch's order, as a function of `begin`: for an array, `take`,
    the same copy several times faster than fancy indexing at batch size; mapped rows read ahead (BatchReader)."""
    if isinstance(X, MappedRows):
        return BatchReader(X, order, batch_size, scattered)
    return lambda begin: X.take(order[begin : begin + batch_size], axis=0)


def _dropped(count: int) -> str:
    return f" ({plural(count, 'later logged epoch')} dropped)" if count else ""


def conclude(run_dir: Path, summary: Summary) -> None:
    """Judge the run's gradient health from the logs it left (as `autobp report` will) and write summary.json."""
    summary.health = judge(read_run(run_dir, summary=summary))
    write_summary(run_dir / rundir.SUMMARY_FILE, summary)


def format_summary(result: RunResult) -> str:
    """The end-of-run report: status, final and best metrics, speed, each layer's gradient verdict, the diagnoses
    with their suggestions (the same judgement as `autobp report`), and the path."""
    summary = result.summary
    lines = [f"{summary.name}: {summary.status} after {trained(summary)}, {plural(summary.steps, 'step')} in "
             f"{summary.seconds:.2f} s ({summary.steps_per_second or 0:,.0f} steps/s)"]
    if summary.diverged is not None:
        diverged = summary.diverged
        lines.append(f"  diverged at step {diverged.step} (epoch {diverged.epoch}): {diverged.reason}")
    if summary.error is not None:
        lines.append(f"  error: {summary.error}")
    stop = summary.early_stopping
    restored = stop is not None and stop.restored
    if restored:
        lines.append(f"  model.npz holds epoch {stop.best_epoch}, the best by {stop.monitor} (early stopping restored "
                     "its weights); the values below are that model's")  # fmt: skip
    label = f"epoch {stop.best_epoch}" if restored else "final"
    for key, best in summary.best.items():
        value = format_number((summary.saved if restored else summary.final).get(key))
        lines.append(f"  {key:<16} {label} {value:<10}  best {format_number(best.value):<10} (epoch {best.epoch})")
    health = summary.health
    if health is not None and health.layers:
        lines.append("gradients (median ‖∂L/∂f_i‖ over logged steps):")
        lines += [f"  {describe(verdict)}" for verdict in health.layers]
    if health is not None and health.diagnoses:
        lines.append("diagnoses (most likely cause first):")
        for diagnosis in health.diagnoses:
            where = f" ({diagnosis.layer})" if diagnosis.layer else ""
            lines.append(f"  {diagnosis.kind}{where}: {diagnosis.message}; suggestion: {diagnosis.suggestion}")
        lines.append(f"  details: autobp report {result.run_dir}")
    lines.append(f"run directory: {result.run_dir}")
    if summary.status.resumable:
        lines.append(f"continue it with: autobp train --resume {result.run_dir}")
    return "\n".join(lines)


def trained(summary: Summary) -> str:
    """`723 epochs and 1 batch`: the epochs finished, and the batches of an epoch cut short (Ctrl-C, max_steps)."""
    batches = summary.steps - int(summary.final.get("step") or 0)  # the last finished epoch's row ends at its step
    text = plural(summary.epochs_completed, "epoch")
    return text + (f" and {plural(batches, 'batch', 'batches')}" if batches > 0 else "")


def layer_gradients_finite(layer: Layer) -> bool:
    return bool(np.isfinite(layer.weight.grad).all() and np.isfinite(layer.bias.grad).all())
