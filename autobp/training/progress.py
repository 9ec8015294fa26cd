"""Progress reports: a tqdm bar on a terminal, plain lines in a log (CI, a file), nothing with --quiet."""

from __future__ import annotations

import sys
import time
from typing import Any

from autobp.common.text import format_number, terminal_safe

PLAIN_LINES = 10  # how many progress lines a non-terminal gets per training run
LINE_SECONDS = 5.0  # a long check (gradcheck) writes a plain progress line at most this often
BAR_SECONDS = 0.1  # a bar on a terminal is redrawn at most this often, however often it moves


class _Report:
    """The part every progress report shares: where it goes, and the bar when that is a terminal."""

    def __init__(self, quiet: bool, stream: Any = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self._bar: Any = None

    def _open_bar(self, total: int, name: str, unit: str, done: int = 0) -> None:
        if self.quiet or not self.stream.isatty():
            return
        from tqdm import tqdm  # lazy: only a terminal needs it

        # tqdm redraws at most every mininterval seconds however often it is updated, and shows the ETA.
        self._bar = tqdm(total=total, initial=done, desc=terminal_safe(name, one_line=True), unit=unit, file=self.stream, dynamic_ncols=True,
                         leave=False, mininterval=BAR_SECONDS)  # fmt: skip

    def _advance(self, done: int, shown: dict[str, Any]) -> None:
        self._bar.set_postfix({key: terminal_safe(str(value), one_line=True) for key, value in shown.items()},
                              refresh=False)  # fmt: skip
        self._bar.update(done - self._bar.n)

    def _line(self, text: str) -> None:
        print(terminal_safe(text), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class Progress(_Report):
    """A training run: steps done, the epoch, the train loss and the validation metric."""

    def __init__(self, quiet: bool = False, stream: Any = None) -> None:
        super().__init__(quiet, stream)
        self._total = 0
        self._next_line = 0

    def start(self, total_steps: int, name: str, done: int = 0) -> None:
        """Begin at `done` steps of `total_steps` (more than 0 when a run resumes)."""
        self._total = total_steps
        self._next_line = done
        self._open_bar(total_steps, name, "step", done)

    def tick(self, step: int) -> None:
        """A step is done: the bar moves (drawn at most ~10 times a second); plain lines wait for the epoch's end."""
        if self._bar is not None:
            self._bar.update(step - self._bar.n)

    def update(self, step: int, row: dict[str, Any], metric: str) -> None:
        """An epoch ended at `step`: its metrics join the bar, or make a plain line (about PLAIN_LINES in a run)."""
        if self.quiet:
            return
        shown = {"epoch": row["epoch"], "loss": format_number(row["train_loss"]), f"val_{metric}": format_number(row[f"val_{metric}"])}
        if self._bar is not None:
            self._advance(step, shown)
        elif step >= self._next_line or step >= self._total:
            self._next_line = step + max(1, self._total // PLAIN_LINES)
            self._line(f"step {step}/{self._total}  " + "  ".join(f"{k} {v}" for k, v in shown.items()))


class SweepProgress(_Report):
    """A sweep: trials done, failed and running and the best so far; a line per finished trial in a log."""

    def __init__(self, total: int, name: str, quiet: bool, stream: Any = None) -> None:
        super().__init__(quiet, stream)
        self.total = total
        self._open_bar(total, name, "trial")

    def show(self, counts: dict[str, int], best: str, finished: str | None) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._advance(counts["done"], {**counts, "best": best})
        elif finished is not None:
            tally = ", ".join(f"{count} {what}" for what, count in counts.items())
            self._line(f"{finished}  [{counts['done']}/{self.total}: {tally}; best {best}]")


class WorkProgress(_Report):
    """A long computation counted in passes (gradcheck): a bar on a terminal, in a log a plain line at most every
    LINE_SECONDS (so a quick one prints nothing)."""

    def __init__(self, total: int, name: str, unit: str, quiet: bool, stream: Any = None) -> None:
        super().__init__(quiet, stream)
        self.total = total
        self.done = 0
        self.name = name
        self.unit = unit
        self.phase = ""
        self._next_line = time.monotonic() + LINE_SECONDS
        self._open_bar(total, name, unit)

    def start_phase(self, phase: str, more: int = 0) -> None:
        """Name what is being done now; `more` passes join the total when the work grew (a retry)."""
        self.phase = phase
        self.total += more
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.set_description_str(terminal_safe(f"{self.name}: {phase}", one_line=True), refresh=False)

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        elif not self.quiet and time.monotonic() >= self._next_line:
            self._next_line = time.monotonic() + LINE_SECONDS
            self._line(f"{self.name}: {self.done:,}/{self.total:,} {self.unit}, {self.phase}")
