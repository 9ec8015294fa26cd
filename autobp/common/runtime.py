"""Process-level settings: how freed memory is kept, how many threads BLAS may use, how the process ends.

The engine records a fresh graph every step and frees it after the update, so a training loop allocates and
frees the same amount of memory step after step. glibc's malloc hands freed memory back to the kernel once more
than 128 KiB is free at the top of the heap (and serves large arrays by mmap), so each step then page-faults its
arrays in again, which measured up to 2× the step time of deep, narrow networks. Keeping freed memory in the
process (up to 256 MiB) removes that cost; it changes nothing else.
"""

from __future__ import annotations

import gc
import os
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
    import ctypes  # lazily: `autobp --help` imports this module too

    try:
        # The process's own symbols include the C library's; ctypes.util.find_library would run ldconfig (≈ 10 ms).
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (e.g. musl has no mallopt)
    _tuned = bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES))
    return _tuned


def skip_final_collections() -> None:
    """Exempt every object from the garbage collections the interpreter runs while it exits.

    Those collections walk everything the command imported (pydantic's schemas, typer's commands, numpy): ≈ 35 ms
    at every end of `autobp train`, to free memory the exiting process returns anyway. Objects are still released
    as their modules are cleared, and files are flushed; only garbage in reference cycles is left to the OS.
    """
    gc.freeze()


# Each BLAS build reads its own variable; setting them all covers OpenBLAS, MKL, BLIS, Apple's Accelerate and OpenMP.
BLAS_THREAD_VARIABLES = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
)  # fmt: skip


def limit_blas_threads(threads: int) -> bool:
    """Cap BLAS thread pools at `threads` (a lower limit already set is kept); BLAS reads the variables when numpy
    is first imported, so this works only before that: returns False if numpy is already imported."""
    if "numpy" in sys.modules:
        return False
    for name in BLAS_THREAD_VARIABLES:
        already = os.environ.get(name, "")
        if not (already.isdigit() and 0 < int(already) <= threads):
            os.environ[name] = str(threads)
    return True


def blas_build() -> dict[str, str]:
    """The BLAS numpy was built with, for summary.json: `blas` (name and version) and `blas_build` (its build
    configuration), both empty strings where numpy does not say. Results are bit for bit only on the same machine
    with the same numpy and BLAS: BLAS kernels, chosen by build and CPU, may sum in a different order."""
    import numpy as np

    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    name = " ".join(str(blas[key]) for key in ("name", "version") if blas.get(key))
    return {"blas": name, "blas_build": " ".join(str(blas.get("openblas configuration", "")).split())}
