"""Plain files, written so a crash never leaves one half-written, and read back with clear errors.

Whole files are written to a temporary name, flushed to disk and renamed over the target, so a reader sees the old
file or the new one, never a mix. CSV logs are appended row by row and flushed as the writer goes.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import io
import json
import math
import os
import shutil
import stat
import tempfile
import time
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from autobp.common.errors import ConfigError, DataError, WriteError
from autobp.common.text import shorten

ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # an .npz is a zip archive: its first entry, or an empty one
MAX_NPZ_BYTES = 1_000_000_000  # read before allocating, so a small compressed file cannot claim all memory
MAX_CSV_BYTES = 1_000_000_000  # a CSV file autobp reads whole (data, logs, trials.csv): ~10 bytes a value
MAX_ELEMENTS = 2**62  # an .npy shape promising more elements is no array (numpy would overflow counting them)
MAX_DEPTH = 64  # nesting of a JSON or YAML document autobp reads; its own files nest a few levels
TMP_SUFFIX = ".tmp"  # a file or folder being written, renamed into place when whole: `.<name>.<pid>-<token>.tmp`


def check_regular_file(path: Path) -> None:
    """Refuse, before opening it, a path that is a FIFO, a device or a folder: reading one could block for ever."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"{path}: not a regular file (a {kind(mode)}); give the path of a file")


def kind(mode: int) -> str:
    """What a file mode names, in words: folder, named pipe, socket, device."""
    kinds = {stat.S_ISDIR: "folder", stat.S_ISFIFO: "named pipe", stat.S_ISSOCK: "socket", stat.S_ISCHR: "device",
             stat.S_ISBLK: "device"}  # fmt: skip
    return next((name for test, name in kinds.items() if test(mode)), "special file")


def check_csv_size(path: Path) -> None:
    """Refuse a CSV file larger than MAX_CSV_BYTES before reading it (a regular file, see check_regular_file)."""
    check_regular_file(path)
    size = path.stat().st_size
    if size > MAX_CSV_BYTES:
        raise DataError(f"{path}: {size:,} bytes is larger than the limit of {MAX_CSV_BYTES:,} for a CSV file")


def output_path(path: Path, option: str) -> Path:
    """Where a user-named output (`-o`) is written: the path itself when it is absent or a regular file, or
    the file a symbolic link ends at (written through the link, which stays). Anything else — a named pipe, a
    device, a socket, a folder — is refused (ConfigError), never replaced: outputs are written by replacing a file."""
    target = through_link(path)
    try:  # the path's own stat follows /proc's links too: /dev/stdout leads to a pipe that has no path to resolve
        mode: int | None = path.stat().st_mode
    except OSError:  # absent (the usual case), or out of reach: the write itself says why
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        through = f" (where the link leads: {target})" if target != path else ""
        raise ConfigError(f"{option} {path}: a {kind(mode)}{through}; autobp writes a file by replacing it in one "
                          "step and never replaces anything else: give the path of a regular file")  # fmt: skip
    if not target.parent.is_dir():
        raise ConfigError(f"{option} {path}: the folder {target.parent} does not exist")
    return target


def through_link(path: Path) -> Path:
    """Where a user-named output lands: the path, or where a symbolic link there finally leads."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def write_output(path: Path, content: bytes | str, option: str) -> None:
    """Write a user-named output by the rule of `output_path`; a failed write is a WriteError naming it (exit 1)."""
    target = output_path(path, option)
    remove_orphans(target.parent, target.name)  # what an earlier, killed write of it left
    try:
        write_atomic(target, content)
    except OSError as exc:
        raise WriteError(f"{option} {path}: cannot write it ({exc.strerror or exc})") from None


def inside(directory: Path, path: Path) -> Path:
    """`path`, when it lies in `directory` without a symbolic link leading out of it; DataError otherwise (autobp
    writes into run and sweep directories, never through them to wherever a link points)."""
    root = directory.resolve()
    if path.is_symlink() or not path.resolve().is_relative_to(root):
        raise DataError(f"{path}: a symbolic link out of {directory}; autobp writes only inside it "
                        "(replace the link by the folder itself)")  # fmt: skip
    return path


def write_inside(directory: Path, name: str, content: bytes | str) -> None:
    """Write a file into a run or sweep directory atomically: a link of that name is replaced, never followed (the
    rename replaces the entry itself). A failed write is a WriteError naming the file."""
    path = directory / name
    try:
        write_atomic(path, content)
    except OSError as exc:
        raise WriteError(describe_write_error(exc)) from None


def free_bytes(path: Path) -> int | None:
    """Free space on the file system of `path` (or its nearest existing parent); None when it cannot be told."""
    try:
        existing = next((p for p in [path, *path.parents] if p.exists()), None)
        return shutil.disk_usage(existing).free if existing is not None else None
    except OSError:  # such as a name too long for the file system: the write reports it
        return None


def check_room(folder: Path, needed: int, what: str) -> None:
    """Refuse to start writing `what` (about `needed` bytes) into `folder` when the disk lacks the room (WriteError)."""
    free = free_bytes(folder)
    if free is not None and free < needed:
        raise WriteError(f"{folder}: {free / 1e6:.1f} MB free, but {what} take about {needed / 1e6:.1f} MB; "
                         "free some space first")  # fmt: skip


def temporary_name(path: Path, token: str) -> str:
    """The name a file or folder has while it is written beside `path` (see remove_orphans)."""
    return f".{path.name}.{os.getpid()}-{token}{TMP_SUFFIX}"


def remove_orphans(directory: Path, name: str = "") -> None:
    """Remove what killed writers left in `directory`: temporaries (files or folders) of processes that no longer
    run, of the file `name` only if given. Called before writing (--resume, sweep --resume, export, every
    user-named output); what cannot be removed stays, harmless."""
    with contextlib.suppress(OSError):
        for entry in directory.iterdir():
            ours = entry.name.startswith(f".{name}.") if name else entry.name.startswith(".")
            if not ours or not entry.name.endswith(TMP_SUFFIX) or _writer_alive(entry.name):
                continue
            with contextlib.suppress(OSError):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


def _writer_alive(name: str) -> bool:
    """Whether the process that named this temporary runs: `<pid>-<token>` now, `<pid>.<ns>` (TensorBoard staging)
    or a bare mkstemp token (no pid: written by an earlier autobp, whose writer has long ended) before."""
    parts = name[: -len(TMP_SUFFIX)].split(".")
    pid = parts[-1].partition("-")[0] if "-" in parts[-1] else parts[-2] if parts[-1].isdigit() else ""
    if not pid.isdigit() or int(pid) == 0:
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def naming_the_file(exc: OSError, path: Path) -> OSError:
    """The same error, with `path` as its file name (a failed write on an open handle names no file)."""
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def describe_write_error(exc: OSError) -> str:
    """`<file>: cannot write it (<cause>)`, for a failed write."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}cannot write it ({exc.strerror or exc})"


@contextlib.contextmanager
def exclusive(directory: Path, *, patience: float = 0.0) -> Iterator[bool]:
    """Hold an advisory lock on a folder while the block runs: True if taken, False if another process still holds
    it after `patience` seconds. The lock is on the folder itself (no lock file), and the system releases it when
    its process ends, however it ends."""
    deadline = time.monotonic() + patience
    fd = os.open(directory, os.O_RDONLY)
    try:
        while not _take_lock(fd):
            if time.monotonic() >= deadline:
                yield False
                return
            time.sleep(0.05)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _take_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def signature(path: Path) -> list[int] | None:
    """What changes when a file is rewritten or grows: its identity, size and modification time (None if missing)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns]


def write_atomic(path: Path, content: bytes | str) -> None:
    """Replace `path` with `content` in one step: temporary file in the same folder, fsync, rename."""
    data = content.encode() if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_name(path, "")[: -len(TMP_SUFFIX)], suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes files private; a file written directly would not be
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # disk full, file-size limit, …: the old file is untouched; name the one we wanted
        Path(tmp).unlink(missing_ok=True)
        raise naming_the_file(exc, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@functools.cache
def _umask() -> int:
    # The only way to read the umask is to set it; once per process, before any worker thread writes.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: Path, payload: Any) -> None:
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Save plain arrays (no pickled objects) atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


def read_json(path: Path) -> Any:
    """A JSON file autobp wrote; nesting deeper than MAX_DEPTH is a DataError naming it (it is no file of ours)."""
    check_regular_file(path)
    with open(path, encoding="utf-8") as handle:
        try:
            return check_depth(json.load(handle), path)
        except RecursionError:
            raise _too_deep(path) from None


def check_depth(value: Any, path: Path) -> Any:
    """`value` (parsed JSON or YAML) when it nests at most MAX_DEPTH lists and mappings; a DataError naming `path`
    otherwise, before anything recursive walks it."""
    level, depth = [value], 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            raise _too_deep(path)
        level = [item for node in level if isinstance(node, (dict, list))
                 for item in (node.values() if isinstance(node, dict) else node)]  # fmt: skip
    return value


def _too_deep(path: Path) -> DataError:
    return DataError(f"{path}: nested more than {MAX_DEPTH} levels deep; not a file autobp wrote (it is damaged)")


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV log as {column: text}, as csv.DictReader gives them (a short row's missing cells None, a long
    row's extra cells a list under None); a file that cannot be read is a DataError naming it."""
    header, records = read_table(path)
    width = len(header)
    rows = []
    for record in records:
        row = dict(zip(header, record))
        if len(record) > width:
            row[None] = record[width:]
        elif len(record) < width:
            row.update(dict.fromkeys(header[len(record) :]))
        rows.append(row)
    return rows


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """A CSV log's header and rows as lists of text (blank lines skipped, as csv.DictReader skips them); a file that
    cannot be read is a DataError naming it."""
    check_csv_size(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            return header, [record for record in reader if record]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read it ({exc})") from None


def parse_cell(column: str, text: str | None) -> int | float | str | None:
    """A logged value: `epoch` and `step` as ints, `layer` and `block` as text, the rest as floats; empty (or missing)
    is None.

    Raises ValueError for text that is not a number where one belongs."""
    return parse_cells([cell_kind(column)], [text])[0]


def cell_kind(column: str) -> Callable[[str], int | float | str]:
    """What a column's non-empty cells are read with (see `parse_cell`)."""
    return int if column in ("epoch", "step") else str if column in ("layer", "block") else float


def parse_cells(kinds: Sequence[Callable[[str], Any]], cells: Sequence[str | None]) -> list[Any]:
    """A row's cells read with their columns' `cell_kind`s, empty or missing ones None: `parse_cell` for a whole row,
    the kinds looked up once per log (a log's columns are parsed thousands of times each)."""
    return [kind(cell) if cell else None for kind, cell in zip(kinds, cells)]


def whole_row(row: dict[str, str | None], columns: Sequence[str], required: Sequence[str]) -> bool:
    """Whether a row read from a log is whole: exactly `columns`, each a value where one belongs (see `parse_cell`),
    the `required` ones not empty (a row cut by a kill, or damaged, is not)."""
    if list(row) != list(columns) or any(value is None for value in row.values()):
        return False
    if not all(row.get(column) for column in required):
        return False
    try:
        for column, value in row.items():
            parse_cell(column, value)
    except ValueError:
        return False
    return True


def ends_a_line(path: Path) -> bool:
    """Whether a (non-empty) file's last byte ends a line: a log cut mid-write does not."""
    with open(path, "rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"


def rewrite_rows(path: Path, columns: Sequence[str], rows: Sequence[dict[str, str]]) -> None:
    """Replace a log with `columns` and `rows` (text as read), atomically."""
    lines = [",".join(columns)] + [",".join(row[c] for c in columns) for row in rows]
    write_atomic(path, "\n".join(lines) + "\n")


def _quoted(text: str) -> str:
    if "," in text or '"' in text or "\n" in text or "\r" in text:  # not any(…): a generator costs a microsecond
        return '"' + text.replace('"', '""') + '"'
    return text


def format_row(row: Sequence[Any]) -> str:
    """One CSV line: numbers in full precision (str of a float is its shortest round-trip repr), None as empty,
    text quoted where it holds a comma, quote or line break; written inline, since the training loop writes many."""
    return ",".join(["" if v is None else _quoted(v) if type(v) is str else str(v) for v in row]) + "\n"


class CsvLog:
    """An append-only CSV file with a fixed header; rows are buffered and flushed on `flush()`."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = path
        self.columns = list(columns)
        fresh = not path.exists() or path.stat().st_size == 0
        self._handle = open(path, "a", newline="", encoding="utf-8")
        if fresh:
            self.write([self.columns])
            self._handle.flush()

    def write(self, rows: Iterable[Sequence[Any]]) -> None:
        # Formatting by hand is several times faster than the csv module, and logging sits in the training loop.
        try:
            self._handle.write("".join(map(format_row, rows)))
        except OSError as exc:
            raise naming_the_file(exc, self.path) from None

    def flush(self) -> None:
        try:
            self._handle.flush()
        except OSError as exc:
            raise naming_the_file(exc, self.path) from None

    def sync(self) -> None:
        """Flush and fsync: the rows a checkpoint counts on must reach the disk before it does (power loss)."""
        self.flush()
        try:
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise naming_the_file(exc, self.path) from None

    @property
    def closed(self) -> bool:
        return self._handle.closed

    def close(self) -> None:
        """Flush, fsync and close; a buffer that cannot be written is dropped (and reported), never written twice."""
        if self._handle.closed:
            return
        try:
            self.sync()
        finally:
            with contextlib.suppress(OSError):  # close() would try the same failed write again
                self._handle.close()

    def __enter__(self) -> CsvLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file, read without pickle; a missing or damaged file is a clear DataError."""
    check_regular_file(path)
    try:
        with open(path, "rb") as handle:
            signature = handle.read(len(ZIP_SIGNATURES[0]))
        if signature not in ZIP_SIGNATURES:
            # np.load would take it for a single .npy array, or refuse it as a pickle.
            raise DataError(f"{path}: not a readable .npz file (not a zip archive of arrays)")
        with np.load(path, allow_pickle=False) as archive:
            size = sum(info.file_size for info in archive.zip.infolist())
            if size > MAX_NPZ_BYTES:
                raise DataError(f"{path}: its arrays take {size:,} bytes, more than the limit of {MAX_NPZ_BYTES:,}")
            for info in archive.zip.infolist():
                _check_header(archive.zip, info, path)
            return {key: _read_array(archive, key, path) for key in archive.files}
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc}); it may be truncated or corrupted") from None


HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def read_npy_header(handle: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """An .npy header's (shape, Fortran order, dtype), read from `handle` at its start; ValueError for a header no
    np.save writes: an unknown version, or a shape with a negative size (numpy would read it as 'unknown')."""
    reader = HEADER_READERS.get(np.lib.format.read_magic(handle))
    if reader is None:  # version 3 only adds UTF-8 field names, which autobp never writes
        raise ValueError("unsupported .npy format version (save with np.save)")
    try:
        shape, fortran_order, dtype = reader(handle)
    except (SyntaxError, tokenize.TokenError, OverflowError, TypeError, RecursionError, MemoryError) as exc:
        raise ValueError(f"a header numpy cannot parse ({type(exc).__name__})") from None
    if any(size < 0 for size in shape):
        raise ValueError(f"a negative size in its shape {shape}")
    if math.prod(max(size, 1) for size in shape) >= MAX_ELEMENTS:  # numpy counts elements in int64
        raise ValueError(f"a shape larger than any array {shape}")
    return shape, fortran_order, dtype


def _check_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> None:
    """Compare what an array's .npy header promises with the bytes the archive holds for it, before numpy allocates
    the array: a header claiming a huge shape would otherwise claim the memory first."""
    with archive.open(info) as member:
        try:
            shape, _, dtype = read_npy_header(member)
        except (ValueError, EOFError) as exc:
            raise DataError(f"{path}: array {shorten(repr(info.filename))} has a damaged header ({exc})") from None
        header = member.tell()
    promised = math.prod(shape) * dtype.itemsize
    if not dtype.hasobject and promised > info.file_size - header:  # object arrays: numpy refuses them unread
        raise DataError(f"{path}: array {shorten(repr(info.filename))} claims {promised:,} bytes of data "
                        f"({dtype} {shape}) but holds {max(info.file_size - header, 0):,}; the file is damaged")


def _read_array(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:  # pickled objects (refused) or a damaged array header
        raise DataError(f"{path}: cannot read array {shorten(repr(key))} ({exc})") from None
