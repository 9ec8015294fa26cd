"""Reading a run directory back: every file the trainer leaves, each damaged or missing file a note, not a crash.

Tools (report, compare, runs, plots) read runs only through this module, so runs that diverged, were interrupted
or were killed read the same way everywhere.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from autobp.common import files
from autobp.common.errors import AutobpError, DataError
from autobp.common.files import load_npz
from autobp.model.network import MODEL_FILE
from autobp.rundir import layout as rundir
from autobp.rundir.instruments import INSTRUMENTS_FILE, InstrumentLog
from autobp.rundir.instruments import read as read_instruments
from autobp.rundir.logs import GRADIENT_COLUMNS, GRADIENT_KEYS, LAYER, STEP
from autobp.rundir.status import Status
from autobp.rundir.summary import Summary, read_summary
from autobp.config.models import Config
from autobp.config.configfile import load_config

RUN_FILES = (rundir.SUMMARY_FILE, rundir.METRICS_FILE, rundir.GRADIENTS_FILE, rundir.CONFIG_FILE)
APPENDED_LOGS = (rundir.METRICS_FILE, rundir.GRADIENTS_FILE, INSTRUMENTS_FILE)  # logs that grow by whole rows
TAIL_CHUNK = 1 << 16  # how far back from its end a log is read to find its last complete line
_STAMP = re.compile(r"-(\d{8}-\d{6})(?:-\d+)?$")

T = TypeVar("T")


@dataclass
class LayerLog:
    """One layer's rows of gradients.csv, column by column; None is an empty cell."""

    name: str
    steps: list[int] = field(default_factory=list)
    columns: dict[str, list[float | None]] = field(default_factory=dict)

    def values(self, column: str) -> list[float | None]:
        return self.columns.get(column, [None] * len(self.steps))


@dataclass
class RunLog:
    """Everything a run directory holds that the report uses; `notes` lists files that could not be read."""

    path: Path
    summary: Summary | None
    config: Config | None
    metrics: list[dict[str, float | None]]
    layers: list[LayerLog]
    shapes: dict[str, tuple[int, ...]]
    notes: list[str]
    instruments: InstrumentLog | None = None  # instruments.csv, when the run has one

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> Status:
        """How the run ended; `killed` when summary.json still says `running` but no process is training it."""
        return status_of(self.path, self.summary)

    def activations(self) -> list[str]:
        """Each layer's activation, input to output (empty without a readable config)."""
        return [spec.activation for spec in self.config.model.layers] if self.config else []


def status_of(path: Path, summary: Summary | None) -> Status:
    """A run's status by its summary.json: `unfinished` without one, `killed` if it says `running` untrained."""
    if summary is None:
        return Status.UNFINISHED
    if summary.status == Status.RUNNING and not is_training(path):
        return Status.KILLED
    return summary.status


def read_status(path: Path) -> Status:
    """The status of a run directory as `runs` and `report` show it, reading only its summary.json."""
    summary = _optional(path / rundir.SUMMARY_FILE, read_summary, [])
    return status_of(path, summary)


def is_training(path: Path) -> bool:
    """Whether a process is training the run now: `train` holds a lock on its run directory while it does."""
    with files.exclusive(path) as taken:
        return not taken


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in RUN_FILES)


def read_run(path: Path, *, with_gradients: bool = True, summary: Summary | None = None, config: Config | None = None,
             gradient_rows: list[list] | None = None) -> RunLog:  # fmt: skip
    """Read a run directory; a missing or damaged file becomes a note, not an error (DataError if not a run).

    The trainer passes the `summary` it is about to write and the `config` its config.yaml holds, to judge its own
    run exactly as `report` will, and may pass `gradient_rows`, every row of gradients.csv as the values it wrote:
    the same numbers reading the file gives (a float is written as its shortest round-trip text), without parsing
    thousands of rows back."""
    if not is_run_dir(path):
        raise DataError(f"{path}: not a run directory (it has none of {', '.join(RUN_FILES)}); "
                        "`autobp runs` lists the run directories")  # fmt: skip
    notes: list[str] = []
    if summary is None:
        summary = _optional(path / rundir.SUMMARY_FILE, read_summary, notes)
    if config is None:
        config = _optional(path / rundir.CONFIG_FILE, load_config, notes)
    metrics = _optional(path / rundir.METRICS_FILE, read_numbers, notes) or []
    layers: list[LayerLog] = []
    shapes: dict[str, tuple[int, ...]] = {}
    instruments = None
    if with_gradients:
        if gradient_rows is not None:
            layers = _layer_logs(GRADIENT_COLUMNS, gradient_rows)
        else:
            layers = _layer_logs(*(_optional(path / rundir.GRADIENTS_FILE, read_cells, notes) or ([], [])))
        shapes = _optional(path / MODEL_FILE, _read_shapes, notes) or {}
        instruments = _optional(path, read_instruments, notes)
    return RunLog(path, summary, config, metrics, layers, shapes, notes, instruments)


def run_date(path: Path) -> datetime:
    """When a run or sweep started: the stamp in its directory name, else the directory's modification time."""
    match = _STAMP.search(path.name)
    if match:
        return datetime.strptime(match.group(1), "%Y%m%d-%H%M%S")
    return datetime.fromtimestamp(path.stat().st_mtime)


def _optional(path: Path, reader: Callable[[Path], T], notes: list[str]) -> T | None:
    if not path.exists():
        return None
    try:
        return reader(path)
    except AutobpError as err:
        notes.append(str(err))
        return None


def read_numbers(path: Path) -> list[dict[str, Any]]:
    """A CSV log as rows of numbers (and the `layer` name); empty or missing cells are None; a half-written last
    row (a run killed mid-write) is dropped."""
    header, rows = read_cells(path)
    return [dict(zip(header, row)) for row in rows]


def read_cells(path: Path) -> tuple[list[str], list[list[Any]]]:
    """`read_numbers` as its header and each row's cells in the header's order (no dict per row)."""
    header, records = files.read_table(path)
    kinds = [files.cell_kind(column) for column in header]
    parsed = []
    for index, record in enumerate(records):
        cells = record + [None] * (len(header) - len(record))  # a short row's missing cells, as read_rows has them
        try:
            parsed.append(files.parse_cells(kinds, cells))
        except ValueError:
            # A run killed while writing can leave half a number on its last line: that row is dropped.
            if index < len(records) - 1:
                bad, text = next((c, cell) for c, cell in zip(header, cells) if not _parses(c, cell))
                raise DataError(f"{path}:{index + 2}: column {bad}: {text!r} is not a number") from None
    return header, parsed


def _parses(column: str, value: str | None) -> bool:
    try:
        files.parse_cell(column, value)
    except ValueError:
        return False
    return True


def _layer_logs(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[LayerLog]:
    """Each layer's rows of a gradient log (cells in `header`'s order), column by column."""
    if LAYER not in header or STEP not in header:
        return []
    name_at, step_at = header.index(LAYER), header.index(STEP)
    grouped: dict[str, list[Sequence[Any]]] = {}
    for row in rows:
        if row[name_at] is not None and row[step_at] is not None:
            grouped.setdefault(row[name_at], []).append(row)
    layers = []
    for name, group in grouped.items():
        columns = list(zip(*group))  # transposed in one pass: a long log has thousands of rows per layer
        measured = {column: list(values) for column, values in zip(header, columns) if column not in GRADIENT_KEYS}
        layers.append(LayerLog(name, [int(step) for step in columns[step_at]], measured))
    return sorted(layers, key=lambda log: _layer_index(log.name))


def _layer_index(name: str) -> int:
    digits = name.removeprefix("layer")
    return int(digits) if digits.isdigit() else 1 << 30


def _read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    arrays = load_npz(path)
    return {key.removesuffix(".weight"): value.shape for key, value in arrays.items() if key.endswith(".weight")}


# --- following a log as it grows ----------------------------------------------------------------------------------


@dataclass
class Appended:
    """The whole rows appended to a log from byte `start` to `end` (the end of its last complete line).

    `file_id` tells a file replaced since (a resumed run rewrites its logs) from the same file grown."""

    file_id: int
    start: int
    end: int
    columns: list[str]
    rows: list[list[Any]]
    notes: list[str]


def log_mark(path: Path) -> tuple[int, int] | None:
    """(file id, byte offset just past its last complete line) of a log, or None if it does not exist."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - TAIL_CHUNK))
            chunk = handle.read(size - handle.tell())
            return os.fstat(handle.fileno()).st_ino, size - len(chunk) + chunk.rfind(b"\n") + 1
    except OSError:
        return None


def has_rows(path: Path) -> bool:
    """Whether a log has a complete row below its header."""
    try:
        with open(path, "rb") as handle:
            return handle.read(TAIL_CHUNK).count(b"\n") >= 2
    except OSError:
        return False


def read_appended(path: Path, start: int) -> Appended:
    """The complete rows of a CSV log from byte `start` on (a half-written last line waits for the next call), each
    parsed as `read_numbers` does; a row that does not parse is a note. Reads the header and the new bytes only."""
    with open(path, "rb") as handle:
        file_id, size = os.fstat(handle.fileno()).st_ino, os.fstat(handle.fileno()).st_size
        header = handle.readline()
        columns = next(csv.reader([header.decode("utf-8", "replace")]), []) if header.endswith(b"\n") else []
        start = max(start, len(header)) if columns else 0
        if not columns or start >= size:
            return Appended(file_id, start, start, columns, [], [])
        handle.seek(start)
        data = handle.read(size - start)
    end = start + data.rfind(b"\n") + 1
    rows, notes = [], []
    for number, cells in enumerate(csv.reader(data[: end - start].decode("utf-8", "replace").splitlines())):
        try:
            rows.append([files.parse_cell(column, cell) for column, cell in zip(columns, cells)])
        except ValueError:
            notes.append(f"{path}: a row at byte {start} + line {number + 1} is not numbers; skipped")
    return Appended(file_id, start, end, columns, rows, notes)
