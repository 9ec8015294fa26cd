"""Features larger than memory: an .npy file memory-mapped and read a batch of rows at a time (`source: npy`).

The file's header is checked before anything is mapped. Rows are gathered from the map on demand (a batch, a
chunk), converted to float64 and standardized with the same arithmetic the in-memory path applies to the whole
array, so both give the same numbers bit for bit.

The map's pages are the page cache's: clean, file-backed, shared with every process that maps the file and
reclaimed by the kernel under pressure without any writing, so they are kept mapped (dropping them would only make
every later read a page fault). The process's own memory (anonymous pages) holds one batch or chunk at a time,
whatever the file's size. A batch's rows are gathered in file order (then put back in the batch's order), and the
next batch can be read on a background thread while the current step computes (`prefetch`).
"""

from __future__ import annotations

import math
import mmap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autobp.common.errors import DataError
from autobp.common.files import read_npy_header

if TYPE_CHECKING:  # the thread pool only when a mapped file is read: an in-memory run never needs it
    from concurrent.futures import Future, ThreadPoolExecutor


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
        with open(path, "rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        self.values = np.ndarray(shape, dtype, buffer=self._map, offset=offset)

    def advise(self, shuffled: bool) -> None:
        """Tell the kernel how the map is about to be read: shuffled batches (read only the pages touched, no
        read-around: on a file larger than the page cache it would read and evict many times the data) or chunks in
        order (the default readahead)."""
        self._map.madvise(mmap.MADV_RANDOM if shuffled else mmap.MADV_NORMAL)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The rows at these indices, as float64 in a new array: gathered in file order, so that the reads go
        forward through the file and neighbouring rows share their pages, then put back in the order asked."""
        ordering = np.argsort(rows, kind="stable")
        gathered = self.values.take(rows[ordering], axis=0)
        out = np.empty(gathered.shape, np.float64)
        out[ordering] = gathered
        return out


class BatchReader:
    """An epoch's batches of mapped rows, `reader(begin)` = rows[order[begin : begin + batch_size]]: each call
    starts reading the next batch on a background thread (numpy releases the GIL while it copies and while a page
    is read from disk), so that the step computes while the disk works. `scattered`: the order jumps all over the
    file (an exact permutation), rather than through windows of contiguous rows."""

    def __init__(self, rows: MappedRows, order: np.ndarray, batch_size: int, scattered: bool = True) -> None:
        self.rows = rows
        self.order = order
        self.batch_size = batch_size
        self._pending: tuple[int, Future[np.ndarray]] | None = None
        self._pool: ThreadPoolExecutor | None = None
        rows.array.advise(shuffled=scattered)  # windows of contiguous rows keep the readahead

    def __call__(self, begin: int) -> np.ndarray:
        pending, self._pending = self._pending, None
        batch = pending[1].result() if pending is not None and pending[0] == begin else self._batch(begin)
        following = begin + self.batch_size
        if following < len(self.order):
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(1, thread_name_prefix="autobp-rows")
            self._pending = (following, self._pool.submit(self._batch, following))
        return batch

    def close(self) -> None:
        """Wait for a batch still being read and end the thread; later reads (validation chunks) go in order."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = self._pending = None
        self.rows.array.advise(shuffled=False)

    def _batch(self, begin: int) -> np.ndarray:
        return self.rows[self.order[begin : begin + self.batch_size]]


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
