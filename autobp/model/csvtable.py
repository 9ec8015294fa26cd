"""Reading and checking a CSV table: a header row of distinct names, then one row per example, each cell checked
with its line and column when read as numbers or text."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autobp.common.errors import DataError
from autobp.common.files import check_csv_size
from autobp.common.text import shorten


@dataclass
class Table:
    """A CSV file's header and text cells, with each row's line in the file for error messages."""

    path: Path
    columns: list[str]
    rows: list[list[str]]
    lines: list[int]  # 1-based, the header being line 1
    # Column positions by name: searching the list of columns for each name is quadratic in wide files.
    positions: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.positions = {name: index for index, name in enumerate(self.columns)}

    def require(self, names: Sequence[str], key: str) -> None:
        """Raise a DataError naming `key` if a column is missing, listing the columns there are."""
        missing = [quoted(name) for name in names if name not in self.positions]
        if missing:
            raise DataError(f"{key}: no column {listing(missing)} in {self.path} (columns: {listing(self.columns)})")

    def numeric(self, names: Sequence[str], hint: str = "") -> np.ndarray:
        """The named columns as float64 (rows, len(names)); a missing, non-numeric or non-finite cell is a
        DataError with its line and column (`hint` is appended to the message)."""
        self.require(names, "column")
        cells = self._cells(names)
        try:
            values = np.array(cells, dtype=np.float64).reshape(len(cells), len(names))
        except ValueError:
            values = np.full((len(cells), len(names)), np.nan)
        if not np.isfinite(values).all():
            raise DataError(self._bad_cell_message(names, cells) + hint)
        return values

    def text(self, name: str) -> np.ndarray:
        """The named column's cells as text; an empty cell is a DataError with its line."""
        self.require([name], "column")
        cells = np.array([row[0].strip() for row in self._cells([name])])
        empty = np.flatnonzero(cells == "")
        if empty.size:
            raise DataError(f"{self.path}:{self.lines[empty[0]]}: column {quoted(name)}: missing value")
        return cells

    def _cells(self, names: Sequence[str]) -> list[list[str]]:
        indices = [self.positions[name] for name in names]
        return [[row[index] for index in indices] for row in self.rows]

    def _bad_cell_message(self, names: Sequence[str], cells: list[list[str]]) -> str:
        for column, name in enumerate(names):
            for line, row in zip(self.lines, cells):
                problem = _cell_problem(row[column].strip())
                if problem:
                    return f"{self.path}:{line}: column {quoted(name)}: {problem}"
        raise AssertionError("a non-finite column has a bad cell")


def _cell_problem(cell: str) -> str | None:
    if not cell:
        return "missing value"
    try:
        value = float(cell)
    except ValueError:
        return f"{quoted(cell)} is not a number"
    return None if np.isfinite(value) else f"{quoted(cell)} is not a finite number"


def quoted(text: str) -> str:
    """A value from a data file, quoted and shortened for a message."""
    return shorten(f"'{text}'")


def listing(names: Sequence[str], limit: int = 10) -> str:
    """The first `limit` names, comma-separated and each shortened, and how many more there are."""
    shown = ", ".join(shorten(name) for name in names[:limit])
    return shown if len(names) <= limit else f"{shown}, … ({len(names) - limit:,} more)"


def read_table(path: Path) -> Table:
    """Read a CSV file with a header row; raise DataError for a missing, empty, header-only or ragged file."""
    text_rows = _csv_rows(existing(path))
    if not text_rows:
        raise DataError(f"{path}: the file is empty — expected a header row, then one row per example")
    (_, header), body = text_rows[0], text_rows[1:]
    columns = [name.strip() for name in header]
    separator = next((char for char in ";\t|" if len(columns) == 1 and char in columns[0]), None)
    if separator:
        raise DataError(
            f"{path}:1: the header is one column {quoted(columns[0])}; autobp reads comma-separated files, "
            f"and this one seems to be separated by {separator!r}"
        )
    if "" in columns or len(set(columns)) < len(columns):
        raise DataError(f"{path}:1: the header needs a distinct, non-empty name for every column")
    if not body:
        raise DataError(f"{path}: only a header row — no examples")
    for line, row in body:
        if len(row) != len(columns):
            raise DataError(f"{path}:{line}: {len(row)} values, but the header has {len(columns)} columns")
    return Table(path, columns, [row for _, row in body], [line for line, _ in body])


def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank rows with the file line each ends on."""
    check_csv_size(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            return [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({err.strerror})") from None


def existing(path: Path, key: str = "data.path") -> Path:
    """`path` if it is a file, else a DataError naming `key` and what is wrong."""
    try:
        if path.is_file():
            return path
        problem = "not a file" if path.exists() else "file not found"
    except OSError as err:  # such as a file name too long for the file system
        problem = f"cannot read it ({err.strerror})"
    raise DataError(f"{key}: {problem}: {path}")
