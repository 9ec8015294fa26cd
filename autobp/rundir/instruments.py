"""instruments.csv: the training instruments' file format, its one owner (the trainer writes it through `open_log`
and `rows_through`; report, health and the TensorBoard export read it through `read`).

One row per instrumented step and block, `block` being a layer (`layer0`, …) or `total` (the whole network);
`inner_test`, `ortho_test`, `alpha`, `lambda_max` and `lr_lambda_max` are filled on `total` rows only, and the last
two at curvature steps only. An empty cell is a value that does not exist (a batch of one has no covariance, the
last step has no next batch for α). README "Training instruments" defines every column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autobp.common import files
from autobp.common.errors import DataError

INSTRUMENTS_FILE = "instruments.csv"
TOTAL = "total"  # the block of the whole network
COLUMNS = [
    "step", "epoch", "block", "grad_sq_norm", "sum_sq_example_grad_norms", "trace_cov", "noise_scale",
    "noise_scale_smoothed", "norm_test", "inner_test", "ortho_test", "alpha", "lambda_max", "lr_lambda_max",
]  # fmt: skip
VALUES = COLUMNS[3:]  # the measured columns


@dataclass
class BlockLog:
    """One block's rows, column by column (None: an empty cell)."""

    name: str
    steps: list[int] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    columns: dict[str, list[float | None]] = field(default_factory=lambda: {c: [] for c in VALUES})

    def values(self, column: str) -> list[float | None]:
        return self.columns[column]

    def series(self, column: str) -> tuple[list[int], list[float]]:
        """(steps, values) where `column` has a value."""
        pairs = [(s, v) for s, v in zip(self.steps, self.columns[column]) if v is not None]
        return [s for s, _ in pairs], [v for _, v in pairs]


@dataclass
class InstrumentLog:
    """instruments.csv in memory: the blocks in file order (layers input to output, then `total`)."""

    blocks: list[BlockLog]

    def block(self, name: str) -> BlockLog | None:
        return next((block for block in self.blocks if block.name == name), None)

    @property
    def total(self) -> BlockLog | None:
        return self.block(TOTAL)


def read(run_dir: Path) -> InstrumentLog | None:
    """A run's instruments.csv (None when the run has none); a damaged file is a DataError naming it. A row cut short
    by a kill (the last one) is dropped."""
    path = run_dir / INSTRUMENTS_FILE
    if not path.exists():
        return None
    rows = files.read_rows(path)
    if rows and list(rows[0]) != COLUMNS:
        raise DataError(f"{path}: not an instruments log (its columns are not {', '.join(COLUMNS)})")
    if rows and not files.ends_a_line(path):
        rows.pop()  # half-written by a kill: even a last number that parses may be missing digits
    blocks: dict[str, BlockLog] = {}
    for index, row in enumerate(rows):
        try:
            if list(row) != COLUMNS or None in row.values() or not row["step"] or not row["block"]:
                raise ValueError
            parsed = {column: files.parse_cell(column, row[column]) for column in COLUMNS}
        except (ValueError, TypeError):
            raise DataError(f"{path}:{index + 2}: a damaged row (every column needs a value or an empty cell)") from None
        block = blocks.setdefault(str(parsed["block"]), BlockLog(str(parsed["block"])))
        block.steps.append(int(parsed["step"]))
        block.epochs.append(int(parsed["epoch"] or 0))
        for column in VALUES:
            block.columns[column].append(parsed[column])
    return InstrumentLog(list(blocks.values()))


def open_log(run_dir: Path) -> files.CsvLog:
    """The log the trainer appends to (its header written if the file is new)."""
    return files.CsvLog(run_dir / INSTRUMENTS_FILE, COLUMNS)


def rows_through(run_dir: Path, step: int, notes: list[str]) -> None:
    """Cut instruments.csv back to the rows of steps up to `step` (a resumed run rewrites what came later); damaged
    rows are dropped with a note, an unreadable file is started afresh."""
    path = run_dir / INSTRUMENTS_FILE
    if not path.exists():
        return
    try:
        rows = files.read_rows(path)
    except DataError as err:
        notes.append(f"{err}: rewritten from the checkpoint on")
        rows = []
    if rows and not files.ends_a_line(path):
        rows[-1] = {}  # cut mid-write: even a last number that parses may be missing digits
    kept = [row for row in rows if _whole(row) and int(row["step"]) <= step]
    damaged = sum(not _whole(row) for row in rows)
    if damaged:
        notes.append(f"{path.name}: {damaged} damaged row{'s' * (damaged != 1)} dropped")
    files.rewrite_rows(path, COLUMNS, kept)


def _whole(row: dict[str, str]) -> bool:
    return files.whole_row(row, COLUMNS, ("step", "block"))
