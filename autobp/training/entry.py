"""The ways into training: train a config into a new run directory, run a prepared one into a given folder (a
sweep's trial), or resume a run.

    result = autobp.train("configs/quickstart.yaml", overrides=["optimizer.lr=0.003"])
    result.run_dir, result.status, result.summary

A run ends `completed` (last epoch or max_steps), `stopped_early`, `diverged` (a non-finite loss or gradient),
`interrupted` (Ctrl-C), `failed` (anything unexpected) or, in a sweep with early_terminate, `pruned`; each keeps its
logs and writes model.npz and summary.json.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Callable, Sequence

from autobp.common import files
from autobp.common.errors import ConfigError
from autobp.common.runtime import keep_freed_memory
from autobp.common.text import flatten
from autobp.config.configfile import dump_config, load_config
from autobp.config.models import Config, check_name
from autobp.model.dataset import Dataset
from autobp.model.prepare import prepare
from autobp.rundir import layout as rundir
from autobp.rundir.status import Status
from autobp.training import recovery
from autobp.training.ending import RunResult, conclude
from autobp.training.gradstats import TARGET_LOGGED_STEPS
from autobp.training.progress import Progress
from autobp.training.state import STOP_SIGNALS, StopRequests, now
from autobp.training.trainer import EpochHook, Trainer, nothing_trained

EXTENSIBLE_KEYS = {"training.epochs", "training.max_steps"}  # what --resume may change


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
        raise nothing_trained(exc) from None
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
        raise nothing_trained(exc) from None
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
    previous = recovery.previous_summary(run_dir / rundir.SUMMARY_FILE, notes)
    if previous is not None and previous.status.finished and not extended:
        return RunResult(run_dir, previous.status, previous, nothing_to_do=True)
    state = recovery.load_checkpoint(run_dir)
    recovery.check_extension(run_dir, config, state)
    keep_freed_memory()
    trainer = Trainer(config, dataset, run_dir, Progress(quiet))
    trainer.resumed = [*(previous.resumed if previous else []), now()]
    where = trainer.restore(state, notes)  # every file read and checked before the first write
    try:
        trainer.mark_running()  # first write: from here on, nothing on disk may say the run has finished
        files.remove_orphans(run_dir)  # temporaries of writers killed mid-write (a checkpoint is ~ the model's size)
        recovery.cut_logs(run_dir, trainer.columns, trainer.kept)
        files.write_atomic(saved_path, dump_config(config))
    except OSError as exc:
        error = nothing_trained(exc)
        with contextlib.suppress(OSError):  # if even summary.json cannot be written, it says running: resumable
            conclude(run_dir, trainer.summary_now(Status.FAILED, {"error": str(error)}))
        raise error from None
    if announce is not None:
        announce(where)
    return trainer.run()
