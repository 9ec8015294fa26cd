"""Where trials run: a small `concurrent.futures`-style interface, and local worker processes behind it.

A sweep hands `run_trial` and its plain-data arguments to `TrialExecutor.submit` and waits on the futures, so
another engine (e.g. Dask's distributed) can run trials on other machines by implementing the same two methods.

Early termination talks both ways: at each epoch end a trial's `Reporter` sends its monitored metric to the sweep
and waits for the answer, continue or stop. The sweep answers in a thread of its own: `LocalReports` over a
loopback socket, on Dask over the scheduler's queues (`cluster.DaskReports`), the same exchange either way.

This module is imported by every worker process before numpy: it must not import numpy itself, so that a worker
can limit its BLAS threads first.
"""

from __future__ import annotations

import contextlib
import multiprocessing.context
import os
import shutil
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any, Protocol, TypeVar

from autobp.common.errors import EXIT_INTERRUPTED
from autobp.common.runtime import limit_blas_threads

T = TypeVar("T")
PARENT_POLL_SECONDS = 0.2  # how often a worker checks that the sweep that started it is alive
ORPHAN_GRACE_SECONDS = 60.0  # an orphaned worker's trial gets this long to write its files before the worker exits
_in_trial = threading.Event()  # set while this worker runs a trial
_orphaned = threading.Event()  # set once this worker's sweep process has died


class TrialExecutor(Protocol):
    """Runs functions somewhere and hands back futures, like `concurrent.futures.Executor`."""

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """Start `fn(*args)`; the future holds its result, or the exception that ended it."""
        ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Release the workers; `cancel_futures` also stops the trials still running (they end `interrupted`)."""
        ...


Decide = Callable[[str, int, float], bool]  # (trial, epoch, monitored value) -> stop it?


def run_trial(
    config: dict[str, Any], run_dir: str, reporter: Reporter | None = None, health_from: int | None = None
) -> dict[str, Any]:
    """Train a trial's resolved config into `run_dir` (an earlier attempt's files there are replaced): the function
    workers run. Plain data in and out, so that any executor can ship it: returns {"status", "summary"}. A
    `reporter` tells the sweep each epoch's monitored metric and may stop the trial (`pruned`); from epoch
    `health_from` on, the trial also judges its own logs at each epoch end and stops on a fatal cause.

    The folder is emptied here, in the worker, so that a retry cannot race a worker of a broken pool that is still
    writing its files (the pool is rebuilt only once those workers have exited)."""
    from autobp.common.errors import AutobpError
    from autobp.model.prepare import prepare
    from autobp.rundir.status import Status
    from autobp.rundir.summary import Summary
    from autobp.training.entry import run

    fresh_dir(Path(run_dir))
    try:
        resolved, dataset = prepare(config)
    except AutobpError as err:  # the sweep validated the trial, but its data file may have changed since
        return {"status": str(Status.FAILED), "summary": Summary(status=Status.FAILED, error=str(err)).to_dict()}
    hook = reporter if health_from is None else HealthCheck(Path(run_dir), health_from, reporter)
    result = run(resolved, dataset, Path(run_dir), quiet=True, on_epoch=hook, stop_signals=(signal.SIGINT,))
    if _orphaned.is_set():  # no sweep process will record how this trial ended: trials.csv must not say running
        from autobp.sweeps.record import settle

        settle(Path(run_dir).parent)
    return {"status": str(result.status), "summary": result.summary.to_dict()}


def fresh_dir(path: Path) -> Path:
    """An empty folder for a trial: an earlier attempt's folder (on resume or retry) is replaced."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


class Reporter:
    """A trial's side of early termination: `reporter(epoch, row)` sends the row's monitored metric to the sweep and
    returns its answer, True to stop. Losing the sweep is an error (the trial ends `failed`), not a silent go-on."""

    def __init__(self, trial: str, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor

    def __call__(self, epoch: int, row: dict[str, Any]) -> bool:
        value = row.get(self.monitor)
        if value is None:  # nothing to judge this epoch by
            return False
        return bool(self.exchange((self.trial, epoch, float(value))))

    def exchange(self, message: tuple[str, int, float]) -> bool:
        """Send (trial, epoch, value) and wait for the decision."""
        raise NotImplementedError


class HealthCheck:
    """`early_terminate: health`, in the trial's own process: at epochs min_epochs × 2^k, judge the trial's logs and
    stop it on a fatal cause (the diagnosis is the reason); otherwise ask `then`, the reporter of a pruner combined
    with it, if any. Needs no Optuna and no exchange with the sweep.

    Judging reads the whole gradient log (tens of milliseconds, as long as an epoch of a small network), so it is
    done at doubling epochs: a few times per trial, not at every epoch."""

    def __init__(self, run_dir: Path, min_epochs: int, then: Reporter | None = None) -> None:
        self.run_dir = run_dir
        self.due = min_epochs
        self.then = then

    def __call__(self, epoch: int, row: dict[str, Any]) -> bool | str:
        if epoch >= self.due:
            from autobp.health import fatal_cause

            self.due = 2 * epoch
            cause = fatal_cause(self.run_dir)
            if cause is not None:
                return f"health at epoch {epoch}: {cause.kind}: {cause.message}"
        return False if self.then is None else self.then(epoch, row)


class SocketReporter(Reporter):
    """Reports over a loopback connection to the sweep process's `LocalReports`."""

    def __init__(self, trial: str, monitor: str, address: tuple[str, int], authkey: bytes) -> None:
        super().__init__(trial, monitor)
        self.address = address
        self.authkey = authkey
        self._connection: Connection | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_connection": None}  # a connection belongs to the process that opened it

    def exchange(self, message: tuple[str, int, float]) -> bool:
        try:
            if self._connection is None:
                self._connection = Client(self.address, authkey=self.authkey)
            self._connection.send(message)
            return self._connection.recv()
        except (OSError, EOFError) as err:
            raise ConnectionError(f"lost the sweep that runs {self.trial} ({err})") from None


class LocalReports:
    """The sweep's side of early termination for trials on this machine: a loopback listener whose threads answer
    each trial's reports with `decide`. Use as a context manager."""

    def __init__(self, decide: Decide) -> None:
        self.decide = decide
        self.authkey = os.urandom(32)
        self._listener = Listener(("127.0.0.1", 0), authkey=self.authkey)
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="autobp-reports").start()

    def reporter(self, trial: str, monitor: str) -> Reporter:
        """What a trial needs to report to this sweep (picklable)."""
        return SocketReporter(trial, monitor, self._listener.address, self.authkey)

    def _accept(self) -> None:
        while True:
            try:
                connection = self._listener.accept()
            except (OSError, EOFError):  # closed, or a client that failed the handshake
                if self._closed:
                    return
                continue
            if self._closed:  # the wake-up call from `close`
                connection.close()
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: Connection) -> None:
        with connection:
            while True:
                try:
                    trial, epoch, value = connection.recv()
                except (OSError, EOFError):  # the trial ended
                    return
                connection.send(self.decide(trial, epoch, value))

    def close(self) -> None:
        self._closed = True
        # Closing a socket does not wake a thread blocked in accept() on Linux; a last connection does.
        with contextlib.suppress(OSError, EOFError):
            Client(self._listener.address, authkey=self.authkey).close()
        self._listener.close()

    def __enter__(self) -> LocalReports:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_reports(executor: TrialExecutor, decide: Decide) -> Any:
    """The executor's way for trials to report to `decide` (its `open_reports`), else loopback for local trials."""
    opener = getattr(executor, "open_reports", None)
    return opener(decide) if opener is not None else LocalReports(decide)


def available_cores() -> int:
    """Cores this process may run on (fewer than the machine has under taskset or a container's CPU set)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class LocalExecutor:
    """Trials in `jobs` worker processes on this machine, each allowed cores // jobs BLAS threads.

    Workers are spawned (not forked) so that each limits its BLAS threads before it imports numpy, and without the
    caller's main module (see `_WorkerProcess`). A worker that dies (killed, out of memory) breaks the pool: the
    futures then running fail with BrokenProcessPool, and the next `submit` starts a fresh pool.
    """

    def __init__(self, jobs: int, cores: int | None = None) -> None:
        self.jobs = jobs
        self.threads = max(1, (cores or available_cores()) // jobs)
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.jobs, mp_context=_WorkerContext(), initializer=_start_worker,
            initargs=(self.threads, os.getpid()),
        )  # fmt: skip

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """Run `fn(*args)` in a worker, starting a fresh pool if a dead worker broke the last one."""
        try:
            return self._pool.submit(_interruptible, fn, *args)
        except (BrokenProcessPool, OSError) as exc:
            # A pool that breaks while `submit` starts a worker raises `handle is closed` rather than
            # BrokenProcessPool (CPython gh-125451); any other OSError (no worker can start) is the caller's to see.
            if isinstance(exc, OSError) and not self._pool._broken:
                raise
            self._pool.shutdown(wait=True)
            self._pool = self._new_pool()
            return self._pool.submit(_interruptible, fn, *args)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the workers; `cancel_futures` first sends them SIGINT, which interrupts the trials they run."""
        if cancel_futures:
            for pid in self.worker_pids():
                with contextlib.suppress(ProcessLookupError):  # it may have just exited
                    os.kill(pid, signal.SIGINT)
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers."""
        # ProcessPoolExecutor lists its workers only in a private attribute (public kill methods came in 3.14).
        return list(self._pool._processes or ())

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class _WorkerProcess(multiprocessing.context.SpawnProcess):
    """A spawned worker that does not run the caller's main module again.

    Spawning normally re-imports `__main__` in the child (by its path, or its module name under `python -m`), so that
    functions defined there can be unpickled. A worker runs only autobp's functions, and re-running the caller is
    harmful: a script without an `if __name__ == "__main__":` guard would start its sweep again in every worker,
    and `python -` or `-c` have no file to re-import. So `__main__` is hidden while the child's start-up data is
    taken."""

    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")  # no __file__, no __spec__: nothing to re-import
        try:
            return multiprocessing.context.SpawnProcess._Popen(process_obj)
        finally:
            sys.modules["__main__"] = main


class _WorkerContext(multiprocessing.context.SpawnContext):
    Process = _WorkerProcess


def _start_worker(threads: int, parent: int) -> None:
    limit_blas_threads(threads)
    # An idle worker ignores Ctrl-C; a trial running in it is interrupted (see `_interruptible`).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), name="autobp-parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    """End this worker when the sweep that started it dies (SIGKILL gives it no chance to end its workers): an idle
    worker exits at once; a trial is interrupted as by Ctrl-C, writes its files, and the worker then exits."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    _orphaned.set()
    if not _in_trial.is_set():
        os._exit(EXIT_INTERRUPTED)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(ORPHAN_GRACE_SECONDS)
    os._exit(EXIT_INTERRUPTED)


def _interruptible(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn` so that Ctrl-C interrupts it once: the terminal and the sweep may both send SIGINT, and a second
    KeyboardInterrupt would break the run while it writes its final files. An orphaned worker exits after it."""
    previous = signal.signal(signal.SIGINT, _raise_keyboard_interrupt_once)
    _in_trial.set()
    try:
        return fn(*args)
    finally:
        _in_trial.clear()
        signal.signal(signal.SIGINT, previous)
        if _orphaned.is_set():
            os._exit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def interrupted_once(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """In the sweep's process: the first of `signals` (Ctrl-C, or SIGTERM from `kill`, `timeout` or a batch
    scheduler) raises KeyboardInterrupt, and later ones are ignored, so ending the workers and writing trials.csv
    is not cut short. Only the main thread can take signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _raise_keyboard_interrupt_once(signum: int, frame: object) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt
