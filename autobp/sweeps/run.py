"""`autobp sweep`: run many trials (the values of a sweep file, or several configs) in parallel, and rank them.

    result = run_sweep(["configs/sweep_spirals.yaml"], jobs=2)
    print(format_ranking(result))

Each trial is an ordinary run in `<output>/sweeps/<name>-<YYYYmmdd-HHMMSS>/trial-NNN`; beside them, sweep.yaml
records the sweep and trials.csv, rewritten as trials end, records how each ended. `resume_sweep` runs again exactly
the trials that did not complete or whose config has changed.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autobp.common import files
from autobp.common.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SWEEP_INCOMPLETE, ConfigError, DataError
from autobp.rundir import layout as rundir
from autobp.rundir.status import Status
from autobp.rundir.summary import Summary, read_summary, summary_from_dict
from autobp.sweeps import search
from autobp.sweeps.executor import (
    LocalExecutor,
    TrialExecutor,
    available_cores,
    interrupted_once,
    open_reports,
    run_trial,
)
from autobp.sweeps.plan import Sweep, Trial, plan_sweep, trial_name
from autobp.sweeps.record import (
    SWEEP_FILE,
    Outcome,
    SweepRecord,
    TrialRecord,
    TrialsCsv,
    check_trials_csv,
    read_record,
    record_text,
    refuse_if_running,
    running_sweep,
    trial_dirs,
    write_trials_csv,
)
from autobp.sweeps.table import best_text, cell
from autobp.training.progress import SweepProgress


def _record(sweep: Sweep) -> str:
    """sweep.yaml's text (a ConfigError if it would be larger than it can be read back)."""
    return record_text(SweepRecord(
        name=sweep.name, sources=sweep.sources, overrides=sweep.overrides, monitor=sweep.monitor, mode=sweep.mode,
        rank=sweep.stage, settings=sweep.settings,
        trials=[TrialRecord(trial=t.name, values=t.values, identity=t.identity) for t in sweep.trials], mix=sweep.mix,
    ))  # fmt: skip


def _write_record(directory: Path, text: str) -> None:
    files.write_atomic(directory / SWEEP_FILE, text)


def _write_trials_csv(directory: Path, sweep: Sweep, outcomes: list[Outcome]) -> None:
    tasks = [trial.config["data"]["task"] for trial in [*sweep.trials, *sweep.probes]]
    schema = TrialsCsv.of(sweep.keys, sweep.monitor, tasks)
    rows = [schema.row(trial.name, trial.values.values(), outcome, sweep.stage, directory / trial.name)
            for trial, outcome in zip(sweep.trials, outcomes)]  # fmt: skip
    write_trials_csv(directory, schema.header(), rows)


@dataclass
class SweepResult:
    """A sweep that has run (or was interrupted): its directory, trials and how each ended."""

    directory: Path
    sweep: Sweep
    outcomes: list[Outcome]
    seconds: float
    interrupted: bool = False
    unstarted: list[str] = field(default_factory=list)  # trials that failed because their worker never ran them

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if all(o.status.kept for o in self.outcomes) else EXIT_SWEEP_INCOMPLETE

    def ranking(self) -> list[int]:
        """Trial indices, best first (see Ranking)."""
        return self.sweep.ranking.order(self.outcomes)


def run_sweep(
    paths: Sequence[str | Path], overrides: Sequence[str] = (), *, name: str | None = None,
    output: str | Path | None = None, jobs: int | None = None, max_failures: int | None = None, quiet: bool = True,
    executor: TrialExecutor | None = None,
) -> SweepResult:  # fmt: skip
    """Validate every trial, make the sweep directory and run the trials, `jobs` at a time (default: one per core).

    A tpe sweep asks its study for each next trial as a worker frees up; with early_terminate, trials report each
    epoch's monitored metric and a losing one ends `pruned`. `max_failures` stops launching trials once that many
    have failed or diverged. Trials run in local worker processes unless an `executor` is given (it is shut down
    only if the sweep is interrupted).
    """
    sweep = plan_sweep(paths, overrides, name=name, output=output)
    sweeps = Path([*sweep.trials, *sweep.probes][0].config["output"]["dir"]) / "sweeps"
    outcomes = [Outcome() for _ in sweep.trials]
    rundir.ensure_output_dir(sweeps)
    _check_free_space(sweeps, sweep, outcomes)
    record = _record(sweep)  # refused before the sweep directory exists
    directory = rundir.create_run_dir(sweeps, sweep.name, {SWEEP_FILE: record})  # never a sweep without its record
    return _run(sweep, directory, outcomes, jobs, max_failures, quiet, executor)


def resume_sweep(
    directory: str | Path, *, jobs: int | None = None, max_failures: int | None = None, quiet: bool = True,
    executor: TrialExecutor | None = None,
) -> SweepResult:  # fmt: skip
    """Run again, in place, the trials of a sweep directory that did not complete or whose config has changed."""
    directory = Path(directory).resolve()
    record = read_record(directory)
    refuse_if_running(directory)  # before anything is written
    sweep = plan_sweep(record.sources, record.overrides, name=record.name)
    if sweep.method == "tpe":  # its trials are the ones the study proposed so far, as sweep.yaml lists them
        sweep.trials = [sweep.new_trial(index, old.values) for index, old in enumerate(record.trials)]
    if len(sweep.trials) != len(record.trials):
        raise ConfigError(f"{directory}: the sweep now has {len(sweep.trials)} trials, not {len(record.trials)} "
                          "— start a new sweep instead")  # fmt: skip
    check_trials_csv(directory, sweep.notes)
    outcomes = [_earlier_outcome(directory, trial, old, sweep.notes) for trial, old in zip(sweep.trials, record.trials)]
    _check_free_space(directory, sweep, outcomes)
    record = _record(sweep)
    if sweep.searching:
        search.check_journal(directory, sweep.settings["parameters"], sweep.notes)
    files.remove_orphans(directory)  # temporaries of a sweep killed mid-write
    _write_record(directory, record)
    return _run(sweep, directory, outcomes, jobs, max_failures, quiet, executor)


def run_in(
    directory: Path, sweep: Sweep, *, jobs: int | None = None, quiet: bool = True,
    executor: TrialExecutor | None = None,
) -> SweepResult:  # fmt: skip
    """Run a planned sweep in a fixed `directory` (made if needed), for tools whose trials live beside what they
    study. Trials that an earlier sweep there finished with the same config are kept; other trial folders go."""
    rundir.ensure_output_dir(directory)
    refuse_if_running(directory)
    earlier: dict[str, TrialRecord] = {}
    if (directory / SWEEP_FILE).is_file():
        try:
            earlier = {old.trial: old for old in read_record(directory).trials}
        except ConfigError as err:
            sweep.notes.append(f"{err}: its trials run again")
    outcomes = [_earlier_outcome(directory, trial, earlier[trial.name], sweep.notes) if trial.name in earlier
                else Outcome() for trial in sweep.trials]  # fmt: skip
    planned = {trial.name for trial in sweep.trials}
    for stale in trial_dirs(directory):
        if stale.name not in planned:
            shutil.rmtree(stale)
    _check_free_space(directory, sweep, outcomes)
    _write_record(directory, _record(sweep))
    return _run(sweep, directory, outcomes, jobs, None, quiet, executor)


def _earlier_outcome(directory: Path, trial: Trial, old: TrialRecord, notes: list[str]) -> Outcome:
    """The outcome kept from the earlier run if its summary.json says it finished the same config; else a pending
    trial (one whose summary.json cannot be read runs again, with a note)."""
    summary = directory / trial.name / rundir.SUMMARY_FILE
    if old.identity != trial.identity or not summary.exists():
        return Outcome()
    try:
        content = read_summary(summary)
    except DataError as err:
        notes.append(f"{err}: {trial.name} runs again")
        return Outcome()
    return Outcome(content.status, content) if content.status.kept else Outcome()


def _check_free_space(directory: Path, sweep: Sweep, outcomes: list[Outcome]) -> None:
    needed = sum(trial.size for trial, outcome in zip(sweep.trials, outcomes) if not outcome.status.kept)
    unasked = sweep.size - len(sweep.trials)  # tpe trials still to propose: the largest configs checked, each
    needed += unasked * max((probe.size for probe in sweep.probes), default=0)
    rundir.check_free_space(directory, needed)


def _run(
    sweep: Sweep, directory: Path, outcomes: list[Outcome], jobs: int | None, max_failures: int | None,
    quiet: bool, executor: TrialExecutor | None,
) -> SweepResult:  # fmt: skip
    to_run = sum(not outcome.status.kept for outcome in outcomes) + sweep.size - len(sweep.trials)
    jobs = max(1, min(jobs or available_cores(), to_run))
    started = time.perf_counter()
    with running_sweep(directory), interrupted_once():
        local = LocalExecutor(jobs) if executor is None else contextlib.nullcontext(executor)
        with local as pool, contextlib.ExitStack() as stack:
            study = _open_search(sweep, directory)
            reports = None
            if study is not None and sweep.pruner is not None:
                reports = stack.enter_context(open_reports(pool, study.should_stop))
            progress = SweepProgress(to_run, sweep.name, quiet)
            limit = math.inf if max_failures is None else max_failures
            scheduler = _Scheduler(sweep, directory, outcomes, pool, jobs, limit, progress, study, reports)
            interrupted = scheduler.run()
    seconds = time.perf_counter() - started
    return SweepResult(directory, sweep, outcomes, seconds, interrupted, sorted(scheduler.unstarted))


def _open_search(sweep: Sweep, directory: Path) -> search.Search | None:
    """The sweep's study (study.journal), if it searches or prunes."""
    if not sweep.searching:
        return None
    epochs = max(trial.config["training"]["epochs"] for trial in [*sweep.trials, *sweep.probes])
    return search.Search(directory, sweep.settings, sweep.mode, epochs)


class _Scheduler:
    """Launches trials as workers free up, records how each ends and rewrites trials.csv as they do.

    With a study, each trial is opened in it as it launches (a tpe trial is proposed then) and told how it ended;
    with reports, each trial gets a reporter through which the study may prune it.

    When a worker process dies, every trial then running fails with it, not only the one that killed it; so a
    trial that fails that way while others ran beside it is run once more, alone, and fails only if it dies again.
    """

    def __init__(
        self, sweep: Sweep, directory: Path, outcomes: list[Outcome], executor: TrialExecutor, jobs: int,
        max_failures: float, progress: SweepProgress, study: search.Search | None = None, reports: Any = None,
    ) -> None:  # fmt: skip
        self.sweep = sweep
        self.study = study
        self.reports = reports
        self.directory = directory
        self.outcomes = outcomes
        self.executor = executor
        self.jobs = jobs
        self.max_failures = max_failures
        self.progress = progress
        self.queue = deque(index for index, outcome in enumerate(outcomes) if not outcome.status.kept)
        self.queue.extend(range(len(outcomes), sweep.size))  # tpe trials not proposed yet
        self.running: dict[Future, int] = {}
        self.shared: set[int] = set()  # running trials that have had others beside them
        self.alone: set[int] = set()  # trials to run again with nothing beside them
        self.done = self.failed = 0
        self.unstarted: set[str] = set()

    def run(self) -> bool:
        """Run the queued trials; True if interrupted by Ctrl-C (running trials end `interrupted`)."""
        try:
            while True:
                self._launch()
                if not self.running:
                    return False
                finished, _ = wait(self.running, return_when=FIRST_COMPLETED)
                for future in finished:
                    self._finish(future)
        except KeyboardInterrupt:
            self._interrupt()
            return True
        except OSError:  # trials.csv could not be written: end the trials now rather than run them unrecorded
            self._interrupt()
            raise
        finally:
            for index in self.running.values():  # only if interrupted again while stopping
                self.outcomes[index] = Outcome(Status.INTERRUPTED)
            self.progress.close()
            _write_trials_csv(self.directory, self.sweep, self.outcomes)

    def _may_launch(self) -> bool:
        if not self.queue or self.failed >= self.max_failures or self.alone & set(self.running.values()):
            return False
        if self.queue[0] in self.alone:
            return not self.running
        return len(self.running) < self.jobs

    def _launch(self) -> None:
        while self._may_launch():
            index = self.queue.popleft()
            trial = self._open(index)
            reporter = None if self.reports is None else self.reports.reporter(trial.name, self.sweep.monitor)
            extra = () if reporter is None and self.sweep.health_from is None else (reporter, self.sweep.health_from)
            future = self.executor.submit(run_trial, trial.config, str(self.directory / trial.name), *extra)
            if self.running:
                self.shared.update([index, *self.running.values()])
            self.running[future] = index
            self.outcomes[index] = Outcome(Status.RUNNING)
        _write_trials_csv(self.directory, self.sweep, self.outcomes)
        self.show()

    def _open(self, index: int) -> Trial:
        """Trial `index`, opened in the study if there is one; a tpe trial not proposed yet is proposed now."""
        if self.study is None:
            return self.sweep.trials[index]
        known = index < len(self.sweep.trials)
        values = self.study.start(trial_name(index), index, self.sweep.trials[index].values if known else None)
        if not known:
            self.sweep.trials.append(self.sweep.new_trial(index, values))
            self.outcomes.append(Outcome())
            _write_record(self.directory, _record(self.sweep))
        return self.sweep.trials[index]

    def _finish(self, future: Future) -> None:
        index = self.running.pop(future)
        error = future.exception()  # the worker died, or the executor could not run the trial
        if error is not None and self.study is not None:  # run again (below) or failed: a new Optuna trial if again
            self.study.finish(self.sweep.trials[index].name, Status.FAILED, None)
        if error is not None and index in self.shared:
            self.shared.discard(index)
            self.alone.add(index)
            self.queue = deque(sorted([index, *self.queue]))  # retries first (they precede the queue), in order
            self.outcomes[index] = Outcome()
            return
        if error is not None:
            outcome = Outcome(Status.FAILED, Summary(status=Status.FAILED, error=self._failure(index, error)))
        else:
            outcome = _outcome(future.result())
        self.shared.discard(index)
        self.alone.discard(index)
        self.outcomes[index] = outcome
        if self.study is not None:
            self.study.finish(self.sweep.trials[index].name, outcome.status, outcome.final(self.sweep.monitor))
        self.done += 1
        self.failed += not outcome.status.kept
        self.show(self.sweep.trials[index], outcome)

    def _failure(self, index: int, error: BaseException) -> str:
        """Why a trial whose worker failed did not run; a worker that started it made its folder first (run_trial)."""
        trial = self.sweep.trials[index].name
        if (self.directory / trial).exists():
            return f"{type(error).__name__}: {error}"
        self.unstarted.add(trial)
        return f"its worker process ended before the trial started ({type(error).__name__}: {error})"

    def _interrupt(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        for future, index in self.running.items():
            ended = future.done() and not future.cancelled() and future.exception() is None
            self.outcomes[index] = _outcome(future.result()) if ended else Outcome(Status.INTERRUPTED)
        self.running.clear()

    def show(self, trial: Trial | None = None, outcome: Outcome | None = None) -> None:
        monitor = self.sweep.monitor
        best = best_text(self.sweep, self.outcomes) or "-"
        counts = {"done": self.done, "failed": self.failed, "running": len(self.running)}
        finished = None
        if trial is not None and outcome is not None:
            finished = f"{trial.name} {outcome.status} {monitor} {cell(outcome.final(monitor))}"
        self.progress.show(counts, best, finished)


def _outcome(result: dict[str, Any]) -> Outcome:
    """The outcome `run_trial` reports."""
    return Outcome(result["status"], summary_from_dict(result["summary"]))
