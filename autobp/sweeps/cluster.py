"""Sweep trials on a Dask cluster (`autobp sweep --executor dask`), behind the same executor interface as the
local process pool.

Workers share no filesystem with the client. The client reads each data file a trial needs once and scatters
it to the cluster; a worker writes it into a temporary folder, points the trial's config at it, trains there, and
sends the finished run directory back as a tar archive, which the client unpacks into the sweep directory with
the config's paths restored to the client's. Arguments and results are plain picklable data. Early termination's
reports and decisions travel through the scheduler's queues (`DaskReports`), not through files.
"""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import yaml

from autobp.common import files
from autobp.common.errors import ConfigError, DataError
from autobp.common.runtime import BLAS_THREAD_VARIABLES
from autobp.rundir import layout as rundir
from autobp.rundir.summary import Summary, read_summary, write_summary
from autobp.config.models import FILE_PATH_KEYS
from autobp.config.configfile import config_from_dict, dump_config
from autobp.sweeps.executor import Decide, Reporter, available_cores, fresh_dir

INSTALL_HINT = "the dask executor needs Dask's distributed: pip install 'autobp[dask]'"
# Config keys that name files on the client; their content travels with the trial.


class DaskExecutor:
    """Runs trials on the Dask scheduler at `scheduler` (e.g. tcp://host:8786), or on a LocalCluster of
    `workers` single-threaded worker processes (default: one per core) when no scheduler is given."""

    def __init__(self, scheduler: str | None = None, workers: int | None = None, local_directory: str | None = None) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise ConfigError(INSTALL_HINT) from None
        self._cluster = None
        # Dask's nanny writes its workers' BLAS thread settings into this process's environment each time it
        # starts a worker; they are put back, so later work here (e.g. a local sweep) is not held to them.
        self._environ = {name: os.environ.get(name) for name in BLAS_THREAD_VARIABLES}
        if scheduler is None:
            self._cluster = _local_cluster(workers or available_cores(), local_directory)
            _restore(self._environ)
        try:
            self.client = Client(self._cluster or scheduler, timeout="20s")
        except OSError as exc:
            self._close_cluster()
            raise ConfigError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc})") from None
        self._scattered: dict[tuple[str, int, int], Any] = {}
        self._running: set[Any] = set()  # Dask futures of unfinished trials (a held future pins its result)

    @property
    def slots(self) -> int:
        """How many trials the cluster runs at once: its worker threads."""
        return max(1, sum(self.client.nthreads().values()))

    def submit(self, fn: Callable[..., dict], /, config: dict, run_dir: str, *extra: Any) -> Future:
        """Run the trial `fn(config, run_dir, *extra)` on the cluster; the future resolves once `run_dir` is filled
        here."""
        files = {key: self._scatter(path) for key, path in _file_paths(config).items()}
        remote = self.client.submit(run_shipped, fn, config, files, *extra, pure=False)
        self._running.add(remote)
        result: Future = Future()
        result.set_running_or_notify_cancel()
        remote.add_done_callback(lambda done: self._arrived(done, config, Path(run_dir), result))
        return result

    def _scatter(self, path: str) -> Any:
        """The cluster's copy of a file's content, read once per file version and sent to every worker, so a
        worker that dies takes no trial's data with it."""
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size)
        if key not in self._scattered:
            self._scattered[key] = self.client.scatter(Path(path).read_bytes(), broadcast=True)
        return self._scattered[key]

    def _arrived(self, remote: Any, config: dict, run_dir: Path, result: Future) -> None:
        self._running.discard(remote)
        try:
            outcome, archive = remote.result()
            summary = unpack(archive, fresh_dir(run_dir), config)
            if summary is not None:
                outcome["summary"] = summary.to_dict()
        except BaseException as exc:  # noqa: BLE001 — the sweep records any failure as the trial's outcome
            result.set_exception(exc)
            return
        result.set_result(outcome)

    def open_reports(self, decide: Decide) -> DaskReports:
        """Early termination on this cluster: trials report through the scheduler (see `DaskReports`)."""
        return DaskReports(self.client, decide)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Close the connection (and the local cluster); `cancel_futures` first cancels the trials still running."""
        if cancel_futures:
            self.client.cancel(list(self._running), force=True)
        self.client.close()
        self._close_cluster()

    def _close_cluster(self) -> None:
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
        _restore(self._environ)

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class QueueReporter(Reporter):
    """Reports through the scheduler: a request on the sweep's queue, the decision on a queue of its own."""

    def __init__(self, trial: str, monitor: str, requests: str) -> None:
        super().__init__(trial, monitor)
        self.requests = requests
        self.replies = f"{requests}-{uuid.uuid4().hex}"  # a re-run trial never reads an earlier run's decision

    def exchange(self, message: tuple[str, int, float]) -> bool:
        from distributed import Queue

        try:
            Queue(self.requests).put((*message, self.replies))
            return Queue(self.replies).get(timeout=REPLY_SECONDS)
        except (OSError, TimeoutError, asyncio.TimeoutError) as err:
            raise ConnectionError(f"lost the sweep that runs {self.trial} ({err})") from None


REPLY_SECONDS = 300  # a decision takes milliseconds; this long without one, the sweep's client is gone


class DaskReports:
    """The sweep's side of early termination on Dask: a thread answers the reports on the sweep's queue with
    `decide`. Use as a context manager."""

    def __init__(self, client: Any, decide: Decide) -> None:
        from distributed import Queue

        self.client = client
        self.decide = decide
        self.name = f"autobp-reports-{uuid.uuid4().hex}"
        self._requests = Queue(self.name, client=client)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._answer, daemon=True, name="autobp-dask-reports")
        self._thread.start()

    def reporter(self, trial: str, monitor: str) -> Reporter:
        return QueueReporter(trial, monitor, self.name)

    def _answer(self) -> None:
        from distributed import Queue

        while not self._closed.is_set():
            try:
                trial, epoch, value, replies = self._requests.get(timeout=0.5)
            except (TimeoutError, asyncio.TimeoutError):  # distinct exceptions before Python 3.11
                continue
            except Exception:  # noqa: BLE001 — the client closed under us: the sweep is over
                return
            Queue(replies, client=self.client).put(self.decide(trial, epoch, value))

    def close(self) -> None:
        self._closed.set()
        self._thread.join()

    def __enter__(self) -> DaskReports:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _local_cluster(workers: int, local_directory: str | None) -> Any:
    """A LocalCluster of single-threaded worker processes on loopback, each with its share of the cores as BLAS
    threads."""
    from distributed import LocalCluster

    threads = str(max(1, available_cores() // workers))
    return LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",  # any free port
        host="127.0.0.1", local_directory=local_directory, env={name: threads for name in BLAS_THREAD_VARIABLES},
    )  # fmt: skip


def _restore(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _file_paths(config: dict) -> dict[tuple[str, str], str]:
    return {(section, key): config[section][key] for section, key in FILE_PATH_KEYS if config[section].get(key)}


def run_shipped(
    fn: Callable[..., dict], config: dict, files: dict[tuple[str, str], bytes], *extra: Any
) -> tuple[dict, bytes]:
    """On a worker: write the trial's files into a temporary folder, train there (`fn(config, run_dir, *extra)`),
    return (result, run archive)."""
    with tempfile.TemporaryDirectory(prefix="autobp-trial-", dir=_scratch_folder()) as folder:
        local = {**config, **{section: dict(config[section]) for section, _ in FILE_PATH_KEYS}}
        for (section, key), content in files.items():
            target = Path(folder) / "files" / section / key / Path(config[section][key]).name  # two may share a name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            local[section][key] = str(target)
        run_dir = Path(folder) / "run"
        run_dir.mkdir()
        outcome = fn(local, str(run_dir), *extra)
        return outcome, pack(run_dir)


def _scratch_folder() -> str | None:
    """The Dask worker's own scratch folder (its local_directory), or the system's temporary folder elsewhere."""
    try:
        from distributed import get_worker

        return get_worker().local_directory
    except (ImportError, ValueError):
        return None


def pack(run_dir: Path) -> bytes:
    """A run directory as a gzip'd tar archive in memory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(run_dir.iterdir()):
            archive.add(path, arcname=path.name)
    return buffer.getvalue()


def unpack(archive: bytes, run_dir: Path, config: dict) -> Summary | None:
    """Write a run archive into `run_dir`, point its config.yaml back at the client's files and its summary at
    `run_dir`; return that summary (None if the trial left none)."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            # A run directory is flat: anything else (a path, a link) did not come from `pack`.
            if not member.isfile() or Path(member.name).name != member.name or member.name.startswith("."):
                raise DataError(f"{run_dir.name}: the worker sent an unexpected archive member {member.name!r}")
            files.write_atomic(run_dir / member.name, tar.extractfile(member).read())
    _restore_paths(run_dir / rundir.CONFIG_FILE, config)
    path = run_dir / rundir.SUMMARY_FILE
    if not path.exists():
        return None
    summary = read_summary(path).model_copy(update={"run_dir": str(run_dir)})
    write_summary(path, summary)
    return summary


def _restore_paths(config_file: Path, config: dict) -> None:
    if not config_file.exists():
        return
    resolved = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    for (section, key), path in _file_paths(config).items():
        resolved[section][key] = path
    files.write_atomic(config_file, dump_config(config_from_dict(resolved)))
