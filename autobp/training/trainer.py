"""The training loop: one run's network, optimizer and data, its steps and epochs, divergence, checkpoints, and
everything it writes as it goes (metrics.csv, gradients.csv, histograms, instruments, model.npz, summary.json)."""

from __future__ import annotations

import math
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

import autobp
from autobp.common import files
from autobp.common.errors import AutobpError, DataError
from autobp.common.runtime import blas_build
from autobp.common.text import plural, shorten
from autobp.config.catalog import LOSSES, task_metric
from autobp.config.models import Config
from autobp.model.dataset import Dataset
from autobp.model.mapped import BatchReader, MappedRows
from autobp.model.network import Layer, Network, Trace, build_network
from autobp.rundir import checkpoint
from autobp.rundir import instruments as instrument_file
from autobp.rundir import layout as rundir
from autobp.rundir.histograms import HistogramLog
from autobp.rundir.logs import MetricsColumns, open_gradient_log, untimed
from autobp.rundir.status import Status
from autobp.rundir.summary import Divergence, EarlyStop, Summary, write_summary
from autobp.training import recovery
from autobp.training.compiled import CompiledSteps
from autobp.training.ending import RunResult, conclude, save_model
from autobp.training.gradstats import GradientLog, log_interval, total
from autobp.training.metrics import Meter, evaluate, loss_targets
from autobp.training.optim import build_optimizer, clip_grad_norm, learning_rate
from autobp.training.progress import Progress
from autobp.training.state import INIT_STREAM, Clock, EarlyStopping, EpochStart, RandomStreams, StopRequests, now

if TYPE_CHECKING:  # loaded by a run that asks for instruments (they are off by default)
    from autobp.training.instruments import Instruments

AUTO_CHECKPOINT_SECONDS = 10.0  # checkpoint_every: auto writes a checkpoint at most this often
# Called at each epoch end that training would continue past, with the epoch and its metrics row; True, or the
# reason as text, stops the run there as `pruned` (a sweep's early termination; the text is summary.json's reason).
EpochHook = Callable[[int, dict[str, Any]], "bool | str"]


class Diverged(Exception):
    """A non-finite loss or gradient at `step`; `layer` is the first layer whose gradient went non-finite."""

    def __init__(self, step: int, layer: str | None) -> None:
        super().__init__("non-finite loss" if layer is None else f"first non-finite gradient in {layer}")
        self.step = step
        self.layer = layer


def nothing_trained(exc: OSError) -> AutobpError:
    """A write that failed before training began (exit 1)."""
    return AutobpError(f"{files.describe_write_error(exc)}; nothing was trained")


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
        self.columns = MetricsColumns(self.metric)
        self.step = 0
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.kept = recovery.KeptLogs()  # set by restore
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
        self.instruments: Instruments | None = None
        if training.instruments is not None:
            from autobp.training.instruments import Instruments

            self.instruments = Instruments(self.network, training.instruments, training.log_every, self.total_steps,
                                           config.loss)  # fmt: skip

    def restore(self, state: checkpoint.Checkpoint | None, notes: Sequence[str] = ()) -> str:
        """Continue from a checkpoint: state and counters, and the log rows up to it, all read and checked without
        writing anything (`recovery.cut_logs` then writes the logs back to it); None: start over. Returns where the run
        continues, in words, with `notes` and what was found damaged on the way."""
        notes = list(notes)
        where = self._restore(state, notes)
        return "; ".join([where, *notes])

    def _restore(self, state: checkpoint.Checkpoint | None, notes: list[str]) -> str:
        epoch, step = (0, 0) if state is None else (state.epoch, state.step)
        self.kept = recovery.kept_logs(self.run_dir, self.columns, epoch, step, notes)
        self.history = self.kept.history()
        dropped = recovery.dropped(self.kept.dropped)
        if state is None:
            instrument_file.rows_through(self.run_dir, 0, notes)
            return f"no checkpoint to resume from: starting again from epoch 1{dropped}"
        self.histograms.keep_until(recovery.earlier_histograms(self.run_dir, notes), step)
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
        return f"resuming from {where}{dropped}"

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
            metrics_log = self.columns.open_log(self.run_dir)
            gradient_log = open_gradient_log(self.run_dir)
            if self.instruments is not None:
                self.instruments.log = instrument_file.open_log(self.run_dir)
        except OSError as exc:
            raise nothing_trained(exc) from None
        self._logs = (metrics_log, gradient_log, *([self.instruments.log] if self.instruments is not None else []))
        self.grads = GradientLog(self.network, gradient_log, log_interval(self.config.training.log_every, self.total_steps),
                                 keep=not self.resumed)  # a resumed run's file holds earlier rows too  # fmt: skip
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
            save_model(self.run_dir, self.network, self.dataset)
        except OSError as exc:
            summary.status, summary.error = Status.FAILED, files.describe_write_error(exc)
        try:
            # A failed run may have failed writing gradients.csv: judge it from what the file holds.
            conclude(self.run_dir, summary, config=self.config,
                     gradient_rows=None if summary.status == Status.FAILED else self.grads.written)  # fmt: skip
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
        rows_of = _row_gatherer(self.X, order, self.batch_size, self.config.data.shuffle == "exact")
        # Bound once: at tiny size the loop's own lookups are a measurable part of a step.
        size, rows, last_step, meter = self.batch_size, len(order), self.total_steps, start.meter
        train_step, targets_of, wants, tick, check = (self._train_step, self.y.take, self.grads.wants,
                                                      self.progress.tick, self.requests.check)  # fmt: skip
        observes = None if self.instruments is None else self.instruments.observes
        try:
            for begin in range((self.step - start.first_step) * size, rows, size):
                step = self.step + 1
                last_batch = begin + size >= rows
                ends = step == last_step or (may_end and last_batch)
                train_step(step, rows_of(begin), targets_of(order[begin : begin + size], 0), lr, meter,
                           wants(step, ends), observes is not None and observes(step))  # fmt: skip
                self.step = step  # counts completed updates only
                tick(step)
                check()
                if step >= last_step:
                    return meter.result(), last_batch
            return meter.result(), True
        finally:
            if isinstance(rows_of, BatchReader):
                rows_of.close()

    def _train_step(self, step: int, xb: np.ndarray, yb: np.ndarray, lr: float, meter: Meter, logging: bool,
                    observed: bool = False) -> None:  # fmt: skip
        """One update; `logging` logs its gradient statistics, `observed` hands it to the instruments."""
        compiled = self.compiled
        if compiled is not None:
            trace, value = compiled.step(xb, yb, logging or observed)
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
        flat = compiled.flat_grad if compiled is not None and clip is None else None
        updates = self.optimizer.step(lr, flat)
        if observed:
            self.instruments.after_update(step, updates)
        if compiled is None:  # backward adds to a gradient; a compiled step sets every one afresh
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
        return self.columns.row(self.epoch, self.step, train, self.evaluate(self.X_val, self.y_val), lr, seconds)

    # --- what the run leaves -----------------------------------------------------------------------------------
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
            best=self.columns.best(self.history),
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
        return untimed(self.history[epoch - 1] if 0 < epoch <= len(self.history) else {})


def _row_gatherer(X: np.ndarray | MappedRows, order: np.ndarray, batch_size: int,
                  scattered: bool) -> Callable[[int], np.ndarray]:  # fmt: skip
    """The batch starting at position `begin` of the epoch's order, as a function of `begin`: for an array, `take`,
    the same copy several times faster than fancy indexing at batch size; mapped rows read ahead (BatchReader)."""
    if isinstance(X, MappedRows):
        return BatchReader(X, order, batch_size, scattered)
    return lambda begin: X.take(order[begin : begin + batch_size], axis=0)


def layer_gradients_finite(layer: Layer) -> bool:
    return bool(np.isfinite(layer.weight.grad).all() and np.isfinite(layer.bias.grad).all())
