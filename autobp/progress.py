"""Progress of a training run: a tqdm bar on a terminal, a few plain lines in a log, nothing with --quiet."""

from __future__ import annotations

import sys
from typing import Any

PLAIN_LINES = 10  # how many progress lines a non-terminal (CI log, file) gets per run


class Progress:
    """Reports steps done, the epoch, the train loss and the validation metric."""

    def __init__(self, quiet: bool = False, stream: Any = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self._bar: Any = None
        self._total = 0
        self._next_line = 0

    def start(self, total_steps: int, name: str, done: int = 0) -> None:
        """Begin at `done` steps of `total_steps` (more than 0 when a run resumes)."""
        self._total = total_steps
        self._next_line = done
        if self.quiet:
            return
        if self.stream.isatty():
            from tqdm import tqdm  # lazy: only a terminal needs it

            self._bar = tqdm(total=total_steps, initial=done, desc=name, unit="step", file=self.stream,
                             dynamic_ncols=True, leave=False)  # fmt: skip

    def update(self, step: int, row: dict[str, Any], metric: str) -> None:
        if self.quiet:
            return
        shown = {"epoch": row["epoch"], "loss": _short(row["train_loss"]), f"val_{metric}": _short(row[f"val_{metric}"])}
        if self._bar is not None:
            self._bar.set_postfix(shown, refresh=False)
            self._bar.update(step - self._bar.n)
            return
        if step >= self._next_line or step >= self._total:
            self._next_line = step + max(1, self._total // PLAIN_LINES)
            fields = "  ".join(f"{k} {v}" for k, v in shown.items())
            print(f"step {step}/{self._total}  {fields}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _short(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
