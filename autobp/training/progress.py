"""Progress reports: a tqdm bar on a terminal, plain lines in a log (CI, a file), nothing with --quiet."""

from __future__ import annotations

import sys
from typing import Any

from autobp.common.text import format_number

PLAIN_LINES = 10  # how many progress lines a non-terminal gets per training run


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

        self._bar = tqdm(total=total, initial=done, desc=name, unit=unit, file=self.stream, dynamic_ncols=True,
                         leave=False)  # fmt: skip

    def _advance(self, done: int, shown: dict[str, Any]) -> None:
        self._bar.set_postfix(shown, refresh=False)
        self._bar.update(done - self._bar.n)

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

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

    def update(self, step: int, row: dict[str, Any], metric: str) -> None:
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
