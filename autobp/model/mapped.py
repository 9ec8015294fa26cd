"""Features larger than memory: an .npy file memory-mapped and read a window of rows at a time (`source: npy`).

The file's header is checked before anything is mapped. Rows are gathered from the map on demand (a batch, a
chunk), converted to float64 and standardized with the same arithmetic the in-memory path applies to the whole
array, so both give the same numbers bit for bit.

Pages of a map that the process has touched count as its resident memory. A file of up to `RESIDENT_BUDGET` bytes
stays mapped as it is read (as fast as an array in memory once its pages are in the page cache). A larger file is
read in groups of rows, and before a group could take the mapped pages past the budget they are dropped
(madvise): they stay in the page cache, and the process's own memory stays bounded whatever the file's size.
"""

from __future__ import annotations

import math
import mmap
from pathlib import Path

import numpy as np

from autobp.common.errors import DataError
from autobp.common.files import read_npy_header

RESIDENT_BUDGET = 256 * 2**20  # bytes of a map that may be resident at once
# What touching one row may map beyond the row itself: the page cache holds large folios (up to 2 MiB on x86-64),
# and a fault maps the whole folio, on each side of a row that straddles two.
FOLIO = 2 * 2**20


def read_header(path: Path, what: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """An .npy file's shape, dtype, Fortran order and data offset; anything but a plain numeric-or-text array
    whose data is all there is a DataError (`what` names the file in the message, e.g. `data.path`)."""
    try:
        with open(path, "rb") as handle:
            shape, fortran_order, dtype = read_npy_header(handle)
            offset = handle.tell()
        size = path.stat().st_size
    except (ValueError, EOFError) as exc:
        raise DataError(f"{what}: {path}: not a readable .npy file ({exc})") from None
    except OSError as exc:
        raise DataError(f"{what}: {path}: cannot read it ({exc.strerror or exc})") from None
    if dtype.hasobject:
        raise DataError(f"{what}: {path}: the array holds Python objects; save plain numbers with np.save")
    needed = offset + math.prod(shape) * dtype.itemsize  # Python ints: a huge shape cannot overflow
    if size < needed:
        raise DataError(f"{what}: {path}: the file has {size:,} bytes, its header describes {needed:,}; "
                        "it is truncated")  # fmt: skip
    return shape, dtype, fortran_order, offset


class MappedArray:
    """A 2-D numeric .npy file, memory-mapped read-only, whose rows are read by index."""

    def __init__(self, path: Path, what: str) -> None:
        shape, dtype, fortran_order, offset = read_header(path, what)
        if len(shape) != 2 or 0 in shape or dtype.kind not in "biuf":
            raise DataError(f"{what}: {path}: features must be a numeric array of shape (n, d) with n, d ≥ 1, "
                            f"got {dtype} {shape}")  # fmt: skip
        if fortran_order and shape[1] > 1:
            raise DataError(f"{what}: {path}: the array is stored column by column (Fortran order), so each row "
                            "is scattered over the file; save it with np.save(path, np.ascontiguousarray(X))")
        self.path = path
        self.shape: tuple[int, int] = shape
        self.row_bytes = shape[1] * dtype.itemsize
        with open(path, "rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        self.values = np.ndarray(shape, dtype, buffer=self._map, offset=offset)
        # A file that fits the budget is never dropped: its pages stay mapped from epoch to epoch.
        self._dropping = len(self._map) > RESIDENT_BUDGET
        self._folios_per_row = self.row_bytes // FOLIO + 2  # a row straddles at most this many folios
        self._group = max(1, RESIDENT_BUDGET // (FOLIO * self._folios_per_row))  # rows a budget surely covers
        self._mapped = 0  # at most this many bytes of the map are resident

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The rows at these indices, as float64 in a new array."""
        if not self._dropping:
            return self.values[rows].astype(np.float64, copy=False)
        out = np.empty((len(rows), self.shape[1]), self.values.dtype)
        for start in range(0, len(rows), self._group):
            group = rows[start : start + self._group]
            touched = self._touched(group)
            if self._mapped + touched > RESIDENT_BUDGET:
                self._map.madvise(mmap.MADV_DONTNEED)
                self._mapped = 0
            np.take(self.values, group, axis=0, out=out[start : start + len(group)])
            self._mapped += touched
        return out.astype(np.float64, copy=False)

    def _touched(self, rows: np.ndarray) -> int:
        """At most how many bytes of the map reading these rows makes resident: whole folios, of each row or of
        the span the rows lie in, whichever is fewer."""
        span = (int(rows.max()) - int(rows.min()) + 1) * self.row_bytes
        return FOLIO * min(len(rows) * self._folios_per_row, span // FOLIO + 2)


class MappedRows:
    """Some rows of a MappedArray, read on demand: `rows[key]` gathers them (a batch, a chunk, one row) and
    returns them standardized (when `mean` is set) in `dtype`, as the in-memory path would hold them."""

    ndim = 2
    itemsize = 8  # rows are worked on in float64: chunk sizes follow the in-memory path's float64 array

    def __init__(
        self, array: MappedArray, rows: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None,
        dtype: np.dtype = np.dtype(np.float64),
    ) -> None:  # fmt: skip
        self.array = array
        self.rows = rows
        self.mean = mean
        self.std = std
        self.dtype = np.dtype(dtype)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), self.array.shape[1]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | slice | np.ndarray) -> np.ndarray:
        picked = self.rows[key]
        if np.ndim(picked) == 0:
            return self[np.array([key])][0]
        values = self.array.read(picked)
        if self.mean is not None:
            # The in-memory path's in-place `X -= mean; X /= std`, element for element.
            values -= self.mean
            values /= self.std
        return values.astype(self.dtype, copy=False)

    def take(self, rows: np.ndarray) -> MappedRows:
        """These rows (indices into this selection), unscaled, in float64."""
        return MappedRows(self.array, self.rows[rows])

    def scaled(self, mean: np.ndarray, std: np.ndarray) -> MappedRows:
        return MappedRows(self.array, self.rows, mean, std, self.dtype)

    def astype(self, dtype: np.dtype | str, copy: bool = True) -> MappedRows:
        """The same rows delivered in `dtype` (nothing is read: `copy` is there to match ndarray.astype)."""
        return MappedRows(self.array, self.rows, self.mean, self.std, np.dtype(dtype))
