"""Process-level settings for training: how freed memory is kept, how many threads BLAS may use.

The engine records a fresh graph every step and frees it after the update, so a training loop allocates and
frees the same amount of memory step after step. glibc's malloc hands freed memory back to the kernel once more
than 128 KiB is free at the top of the heap (and serves large arrays by mmap), so each step then page-faults its
arrays in again, which measured up to 2× the step time of deep, narrow networks. Keeping freed memory in the
process (up to 256 MiB) removes that cost; it changes nothing else.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 256 * 1024 * 1024

_tuned = False


def keep_freed_memory() -> bool:
    """Ask glibc malloc to keep freed memory for reuse; True if it did (False on other platforms or C libraries)."""
    global _tuned
    if _tuned or not sys.platform.startswith("linux"):
        return _tuned
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (e.g. musl has no mallopt)
    _tuned = bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES))
    return _tuned
