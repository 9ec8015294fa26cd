"""Every state a run or a sweep's trial can be in, the one place their words are written: summary.json, trials.csv,
doctor.json, `runs`, `report` and the sweep table all spell them from `Status`, and ask it what a state means.

One enum, not a family: an Enum cannot extend another, so a second one for trials would spell the run's seven states
again. The states only a reader infers (`recorded` False) are refused in summary.json by its model.
"""

from __future__ import annotations

from enum import Enum

from autobp.common.errors import EXIT_DIVERGED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK


class Status(str, Enum):
    """How a run ended, `running` while it trains, or what a reader makes of a run or trial that says neither."""

    # What a run records in its summary.json.
    RUNNING = "running"  # written when training starts or resumes; replaced by how it ended
    COMPLETED = "completed"  # the last epoch or training.max_steps
    STOPPED_EARLY = "stopped_early"  # early stopping; the best epoch's weights were restored
    DIVERGED = "diverged"  # a non-finite loss or gradient
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM
    FAILED = "failed"  # anything unexpected; `error` says what
    PRUNED = "pruned"  # a sweep's early_terminate stopped it at an epoch end: neither failed nor completed
    # What readers infer; no run writes these into its summary.json.
    KILLED = "killed"  # summary.json says `running`, but no process is training the run
    UNFINISHED = "unfinished"  # no summary.json (a run killed before it wrote one), or a damaged one
    PENDING = "pending"  # a sweep's (or doctor's) trial not started yet
    INVALID = "invalid"  # a doctor change that does not validate against the run's config: never trained

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return repr(self.value)  # a list of statuses prints as it did when they were plain strings

    @property
    def recorded(self) -> bool:
        """A state a run writes into its own summary.json."""
        return self in _RECORDED

    @property
    def finished(self) -> bool:
        """Trained as far as asked: nothing left for --resume to do unless the run is extended; the only states a
        sweep ranks by value and a study learns from."""
        return self in (Status.COMPLETED, Status.STOPPED_EARLY)

    @property
    def kept(self) -> bool:
        """What a resumed sweep does not run again: finished trials, and pruned ones (they stay pruned)."""
        return self.finished or self is Status.PRUNED

    @property
    def resumable(self) -> bool:
        """Stopped from outside or by a failure before it finished: `train --resume` continues it where it stopped."""
        return self in (Status.INTERRUPTED, Status.FAILED, Status.KILLED)

    @property
    def reproducible(self) -> bool:
        """Ended by its own training alone (no signal, failure or sweep's pruner): retraining its config for as many
        epochs repeats it bit for bit."""
        return self in (Status.COMPLETED, Status.STOPPED_EARLY, Status.DIVERGED)

    @property
    def exit_code(self) -> int:
        """The exit code of a process whose run ended so (a recorded state: the others never end a process)."""
        return _EXIT_CODES[self]


_EXIT_CODES = {
    Status.RUNNING: EXIT_FAILED,  # never how a process ends; a reader finding it sees a run that did not finish
    Status.COMPLETED: EXIT_OK,
    Status.STOPPED_EARLY: EXIT_OK,
    Status.DIVERGED: EXIT_DIVERGED,
    Status.INTERRUPTED: EXIT_INTERRUPTED,
    Status.FAILED: EXIT_FAILED,
    Status.PRUNED: EXIT_OK,
}
_RECORDED = frozenset(_EXIT_CODES)  # the states with an exit code are those a run records in its summary.json
