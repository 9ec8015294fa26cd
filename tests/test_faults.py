"""Fault injection: every way a process can end, a write that fails, a damaged file, a lying size or a FIFO leaves a
truthful, resumable run or sweep directory and a clear message with its documented exit code — never a traceback,
a hang or an orphaned process.
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import DEADLINE, assert_same_run, cli, finished, resumable_config, wait_for_rows

from autobp.common import files
from autobp.common.errors import DataError
from autobp.engine import Tensor, numerical_gradient, ops, relative_error
from autobp.rundir import layout as rundir
from autobp.tools import gradcheck
from autobp.training.progress import WorkProgress
from autobp.training.entry import resume, train

def autobp(*args: str, limit_file_size: int | None = None, limit_memory: int | None = None,
           wait: bool = True) -> subprocess.Popen:
    """`python -m autobp ARGS` in its own process (optionally under a file-size or address-space limit); waited for
    unless `wait`."""

    def limit() -> None:
        if limit_file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))
        if limit_memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_memory, limit_memory))

    process = subprocess.Popen([sys.executable, "-m", "autobp", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=limit)  # fmt: skip
    if wait:
        process.communicate(timeout=DEADLINE)
    return process


def status_of(run_dir: Path) -> str:
    return json.loads((run_dir / "summary.json").read_text())["status"]


def write_config(tmp_path: Path, settings: dict, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(settings))
    return path


# --- signals ------------------------------------------------------------------------------------------------------


def test_an_extension_killed_midway_reads_running_and_resumes_to_the_same_bytes(tmp_path: Path) -> None:
    """The issue's first example: extend a completed run, SIGKILL it halfway; nothing may still say `completed`."""
    settings = resumable_config(tmp_path, epochs=3, batch_size=2)
    done = train(settings).run_dir
    process = autobp("train", "--resume", str(done), "--set", "training.epochs=12", "--quiet", wait=False)
    wait_for_rows(done.parent, 6, process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=DEADLINE)
    assert status_of(done) == "running"
    code, listing = cli("runs", str(done.parent))
    assert code == 0 and "killed" in listing and "completed" not in listing
    code, report = cli("report", str(done))
    assert code == 0 and "killed while training: summary.json says `running`" in report and "max_steps" not in report
    code, output = cli("train", "--resume", str(done), "--quiet")  # the extension is in config.yaml now
    assert code == 0 and "resuming from the checkpoint of epoch" in output, output
    assert_same_run(train(resumable_config(tmp_path, epochs=12, batch_size=2)).run_dir, done)


def test_sigterm_to_train_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    settings = resumable_config(tmp_path, epochs=10, batch_size=2)
    process = autobp("train", str(write_config(tmp_path, settings)), "--quiet", wait=False)
    run_dir = wait_for_rows(tmp_path / "runs", 2, process)
    process.send_signal(signal.SIGTERM)
    code, _ = finished(process)
    assert code == 130 and status_of(run_dir) == "interrupted"
    with np.load(run_dir / "checkpoint.npz") as saved:
        assert "epoch_start.step" in saved.files  # a checkpoint inside the epoch, not the last epoch's end
    code, output = cli("train", "--resume", str(run_dir), "--quiet")
    assert code == 0, output
    assert_same_run(train(settings).run_dir, run_dir)


ENDINGS = {0: {"completed"}, 130: {"interrupted"}, -signal.SIGTERM: {None, "running", "completed"}}


def test_sigterm_at_any_moment_leaves_a_truthful_run_that_resumes_to_the_same_bytes(tmp_path: Path) -> None:
    """SIGTERM at several moments, from start-up (the default handler: killed, -15) through training (130) to the
    end (0): whatever the moment, summary.json agrees with the exit code and --resume ends bit-identical."""
    settings = resumable_config(tmp_path, epochs=30, batch_size=2, checkpoint_every="auto")
    reference = train(settings).run_dir
    for delay in (0.05, 0.3, 0.45, 0.6, 1.5):
        runs = tmp_path / f"runs-{delay}"
        path = write_config(tmp_path, {**settings, "output": {"dir": str(runs)}})
        process = autobp("train", str(path), "--quiet", wait=False)
        time.sleep(delay)
        process.send_signal(signal.SIGTERM)
        code, _ = finished(process)
        run_dirs = list(runs.glob("r-*"))
        if not run_dirs:
            assert code == -signal.SIGTERM  # ended before it made its run directory
            continue
        summary = run_dirs[0] / "summary.json"
        status = json.loads(summary.read_text())["status"] if summary.exists() else None
        assert status in ENDINGS[code], (delay, code, status)
        resume(run_dirs[0])
        assert_same_run(reference, run_dirs[0])


def test_resume_of_a_run_another_process_trains_is_refused(tmp_path: Path) -> None:
    settings = resumable_config(tmp_path, epochs=40, batch_size=2)
    process = autobp("train", str(write_config(tmp_path, settings)), "--quiet", wait=False)
    run_dir = wait_for_rows(tmp_path / "runs", 1, process)
    code, output = cli("train", "--resume", str(run_dir), "--quiet")
    assert code == 2 and "another autobp process is training this run" in output
    code, report = cli("report", str(run_dir))
    assert code == 0 and "running: a process is training it" in report
    process.send_signal(signal.SIGINT)
    assert finished(process)[0] == 130 and status_of(run_dir) == "interrupted"


def test_a_max_steps_extension_continues_inside_the_epoch(tmp_path: Path) -> None:
    """128 training rows in batches of 16: max_steps 21 stops 5 batches into epoch 3; extending to 45 must give the
    bytes of a run that went to 45 directly (it would not if the rest of epoch 3 were skipped)."""
    first = train(resumable_config(tmp_path, max_steps=21, checkpoint_every="auto"))
    assert first.summary.steps == 21
    messages: list[str] = []
    extended = resume(first.run_dir, ["training.max_steps=45"], announce=messages.append)
    assert extended.summary.steps == 45
    assert "inside epoch 3, after 5 batches (step 21)" in messages[0]
    assert_same_run(train(resumable_config(tmp_path, max_steps=45, checkpoint_every="auto")).run_dir, first.run_dir)


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc), whatever became of their parent since."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _sweep_file(tmp_path: Path, epochs: int = 400, n_samples: int = 160) -> Path:
    settings = resumable_config(tmp_path, epochs=epochs, batch_size=4)
    settings["data"]["n_samples"] = n_samples
    write_config(tmp_path, settings, "base.yaml")
    sweep = {"base": "base.yaml", "name": "s", "parameters": {"optimizer.lr": [0.01, 0.02]}}
    return write_config(tmp_path, sweep, "sweep.yaml")


def _start_sweep(tmp_path: Path) -> tuple[subprocess.Popen, Path, set[int]]:
    """A two-trial sweep on two workers, waited for until both trials are training."""
    process = autobp("sweep", str(_sweep_file(tmp_path)), "--jobs", "2", "--quiet", wait=False)
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        logs = list((tmp_path / "runs" / "sweeps").glob("*/trial-*/metrics.csv"))
        if len(logs) == 2 and all(len(log.read_text().splitlines()) > 1 for log in logs):
            return process, logs[0].parent.parent, _descendants(process.pid)
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError("the sweep's trials did not start")


def _gone(pids: set[int]) -> bool:
    deadline = time.monotonic() + DEADLINE
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pids)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_signalled_sweep_ends_its_workers_and_records_every_trial(tmp_path: Path, sig: int) -> None:
    process, directory, workers = _start_sweep(tmp_path)
    assert workers
    process.send_signal(sig)
    code, _ = finished(process)
    assert code == 130
    assert _gone(workers), f"workers left behind: {_alive(workers)}"
    statuses = [row["status"] for row in files.read_rows(directory / "trials.csv")]
    assert statuses == ["interrupted", "interrupted"]
    assert [status_of(directory / f"trial-00{i}") for i in range(2)] == statuses


def test_a_sweep_killed_outright_takes_its_workers_with_it(tmp_path: Path) -> None:
    """SIGKILL gives the sweep no chance: its workers notice, end their trials (interrupted, resumable) and exit,
    and trials.csv no longer says `running`."""
    process, directory, workers = _start_sweep(tmp_path)
    process.kill()
    process.communicate(timeout=DEADLINE)  # the workers share its pipes: this returns once they have exited too
    assert _gone(workers), f"workers left behind: {_alive(workers)}"
    statuses = [row["status"] for row in files.read_rows(directory / "trials.csv")]
    assert "running" not in statuses and statuses == ["interrupted", "interrupted"]
    with files.exclusive(directory) as taken:  # the dead sweep's lock went with it: --resume may run
        assert taken


def test_a_second_sweep_resume_of_a_running_sweep_is_refused(tmp_path: Path) -> None:
    sweep = _sweep_file(tmp_path, epochs=1, n_samples=40)
    code, output = cli("sweep", str(sweep), "--jobs", "1", "--quiet")
    assert code == 0, output
    directory = next((tmp_path / "runs" / "sweeps").iterdir())
    before = (directory / "trials.csv").read_bytes()
    with files.exclusive(directory) as taken:  # as a running sweep holds it
        assert taken
        code, output = cli("sweep", "--resume", str(directory), "--quiet")
    assert code == 2 and "another autobp process is running this sweep's trials" in output
    assert (directory / "trials.csv").read_bytes() == before


# --- failed writes ------------------------------------------------------------------------------------------------


def test_a_file_size_limit_mid_run_fails_cleanly_and_resume_completes_it(tmp_path: Path) -> None:
    """gradients.csv (one row per step and layer) outgrows a 40 kB file-size limit in epoch 2 or 3: exit 1, the
    file and the cause named, summary.json `failed`, the earlier checkpoint intact; --resume without the limit
    then ends bit-identical to a run never stopped."""
    settings = resumable_config(tmp_path, epochs=5, batch_size=4, log_every=1)
    code, output = finished(autobp("train", str(write_config(tmp_path, settings)), "--quiet", limit_file_size=40_000))
    run_dir = next((tmp_path / "runs").iterdir())
    assert code == 1, output
    assert f"{run_dir / 'gradients.csv'}: cannot write it (File too large)" in output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "File too large" in summary["error"]
    assert 0 < summary["epochs_completed"] < 5
    kept = files.load_npz(run_dir / "checkpoint.npz")  # the last checkpoint before the failure, whole
    assert 0 < int(kept["epoch"]) < 5
    assert not list(run_dir.glob(".*.tmp"))  # no temporary file left behind
    code, output = cli("train", "--resume", str(run_dir), "--quiet")
    assert code == 0, output
    assert_same_run(train(settings).run_dir, run_dir)


def test_a_limit_too_small_for_the_first_file_is_a_clear_error(tmp_path: Path) -> None:
    """A limit so small that even config.yaml cannot be written: a message naming it, exit 1, no run directory (a
    run directory is made with its config.yaml in it, or not at all) and no temporary left."""
    settings = resumable_config(tmp_path, epochs=2)
    code, output = finished(autobp("train", str(write_config(tmp_path, settings)), "--quiet", limit_file_size=300))
    assert code == 1, output
    assert re.search(r"error: \S+/runs/r-[0-9-]+/config\.yaml: cannot write it \(File too large\); nothing was trained",
                     output), output
    assert list((tmp_path / "runs").iterdir()) == []


# --- damaged files ------------------------------------------------------------------------------------------------


@pytest.fixture
def interrupted_run(tmp_path: Path) -> tuple[Path, dict]:
    """A run stopped by SIGTERM inside epoch 3 of 6, and the settings that make it."""
    settings = resumable_config(tmp_path, epochs=6, batch_size=2, checkpoint_every="auto")
    process = autobp("train", str(write_config(tmp_path, settings)), "--quiet", wait=False)
    run_dir = wait_for_rows(tmp_path / "runs", 2, process)
    process.send_signal(signal.SIGTERM)
    assert finished(process)[0] == 130
    return run_dir, settings


def test_a_cut_last_line_in_the_logs_resumes_bit_identically(interrupted_run: tuple[Path, dict]) -> None:
    run_dir, settings = interrupted_run
    for name in ("gradients.csv", "metrics.csv"):
        with open(run_dir / name, "a") as log:
            log.write("3,77,layer0,0.12")  # a row cut short by a kill or a full disk
    code, output = cli("report", str(run_dir))
    assert code == 0, output
    code, output = cli("train", "--resume", str(run_dir), "--quiet")
    assert code == 0 and "gradients.csv: 1 damaged row dropped" in output and "metrics.csv: 1 damaged row" in output
    assert_same_run(train(settings).run_dir, run_dir)


def test_a_damaged_summary_is_ignored_by_resume_and_noted_by_every_reader(interrupted_run: tuple[Path, dict]) -> None:
    run_dir, settings = interrupted_run
    (run_dir / "summary.json").write_bytes(b'{"status": "interr')
    for command in (["report", str(run_dir)], ["compare", str(run_dir)], ["runs", str(run_dir.parent)]):
        code, output = cli(*command)
        assert code in (0, 2) and "summary.json" in output, (command, output)
    code, output = cli("train", "--resume", str(run_dir), "--quiet")
    assert code == 0 and "summary.json: not readable JSON" in output and "ignored" in output, output
    assert status_of(run_dir) == "completed"
    assert_same_run(train(settings).run_dir, run_dir)


@pytest.mark.parametrize("name", ["checkpoint.npz", "model.npz", "config.yaml", "metrics.csv"])
def test_every_reader_names_a_damaged_file(interrupted_run: tuple[Path, dict], name: str) -> None:
    run_dir, _ = interrupted_run
    (run_dir / name).write_bytes(b"PK\x03\x04\xff\xfe damaged \x00")
    data = run_dir.parent.parent / "new.csv"
    data.write_text("x0,x1\n0.1,0.2\n")
    commands = [["train", "--resume", str(run_dir), "--quiet"], ["report", str(run_dir)], ["compare", str(run_dir)],
                ["runs", str(run_dir.parent)], ["predict", str(run_dir), str(data)]]  # fmt: skip
    for command in commands:
        code, output = cli(*command)
        assert code in (0, 1, 2), (command, code, output)
        if code != 0:
            assert name in output, (command, output)
    if name == "checkpoint.npz":
        code, output = cli("train", "--resume", str(run_dir), "--quiet")
        assert code == 2 and "move it away to train this run again from epoch 1" in output


def test_a_damaged_histograms_file_drops_its_snapshots_and_resumes(interrupted_run: tuple[Path, dict]) -> None:
    run_dir, settings = interrupted_run
    (run_dir / "histograms.npz").write_bytes(b"PK\x03\x04 cut short")
    code, output = cli("train", "--resume", str(run_dir), "--quiet")
    assert code == 0 and "histograms.npz: not a readable .npz file" in output and "snapshots are dropped" in output
    assert_same_run(train(settings).run_dir, run_dir)  # the logs and the model do not depend on it


def _small_sweep(tmp_path: Path) -> Path:
    code, output = cli("sweep", str(_sweep_file(tmp_path, epochs=2, n_samples=40)), "--jobs", "1", "--quiet")
    assert code == 0, output
    return next((tmp_path / "runs" / "sweeps").iterdir())


def test_sweep_resume_rewrites_a_damaged_trials_csv_and_reruns_a_trial_it_cannot_read(tmp_path: Path) -> None:
    directory = _small_sweep(tmp_path)
    (directory / "trials.csv").write_bytes(b"\xff\xfe\x00garbage")
    (directory / "trial-000" / "summary.json").write_text("[1, 2")
    kept = (directory / "trial-001" / "model.npz").stat().st_mtime_ns
    for command in (["runs", str(directory.parent)], ["compare", str(directory)], ["report", str(directory)]):
        code, output = cli(*command)
        assert code in (0, 2) and "Traceback" not in output, (command, output)
    code, output = cli("sweep", "--resume", str(directory), "--quiet")
    assert code == 0, output
    assert "trials.csv" in output and "rewritten" in output and "trial-000 runs again" in output
    assert [row["status"] for row in files.read_rows(directory / "trials.csv")] == ["completed", "completed"]
    assert (directory / "trial-001" / "model.npz").stat().st_mtime_ns == kept  # not run twice


def test_a_damaged_sweep_record_is_named_and_its_trials_stay_readable(tmp_path: Path) -> None:
    directory = _small_sweep(tmp_path)
    (directory / "sweep.yaml").write_bytes(b"\xff\xfe: [damaged")
    code, output = cli("sweep", "--resume", str(directory), "--quiet")
    assert code == 2 and "sweep.yaml: not a sweep record" in output and "autobp compare" in output
    code, output = cli("runs", str(directory.parent.parent))
    assert code == 0 and "sweep.yaml: not a sweep record" in output
    code, output = cli("compare", str(directory))
    assert code == 0 and "trial-000" in output and "trial-001" in output


# --- sizes and things that are not files --------------------------------------------------------------------------


def _lying_npz(path: Path, shape: tuple[int, ...]) -> None:
    """An .npz whose one array's header promises `shape` of float64, followed by 8 bytes of data."""
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("X.npy", buffer.getvalue() + b"\x00" * 8)


def test_an_npz_header_promising_a_huge_array_is_refused_before_reading(tmp_path: Path) -> None:
    _lying_npz(tmp_path / "lie.npz", (10**11,))
    with pytest.raises(DataError, match=r"claims 800,000,000,000 bytes .* but holds 8; the file is damaged"):
        files.load_npz(tmp_path / "lie.npz")
    _lying_npz(tmp_path / "small.npz", (3,))  # a smaller lie: 24 bytes promised, 8 held
    with pytest.raises(DataError, match="claims 24 bytes"):
        files.load_npz(tmp_path / "small.npz")


def test_a_lying_checkpoint_or_data_file_is_a_clean_exit_2(tmp_path: Path) -> None:
    done = train(resumable_config(tmp_path, epochs=1)).run_dir
    _lying_npz(done / "checkpoint.npz", (10**12,))
    code, output = cli("train", "--resume", str(done), "--set", "training.epochs=2", "--quiet")
    assert code == 2 and "checkpoint.npz" in output and "claims" in output
    _lying_npz(tmp_path / "x.npz", (10**12,))
    code, output = cli("predict", str(done), str(tmp_path / "x.npz"))
    assert code == 2 and "x.npz" in output and "claims" in output


def test_a_csv_larger_than_the_limit_is_refused_before_reading(tmp_path: Path, monkeypatch) -> None:
    table = tmp_path / "t.csv"
    table.write_text("a,b,y\n" + "1,2,0\n3,4,1\n" * 20)
    monkeypatch.setattr(files, "MAX_CSV_BYTES", 100)
    settings = {"data": {"source": "csv", "path": str(table)}, "model": {"hidden": [2]}, "loss": "cross_entropy"}
    code, output = cli("validate", str(write_config(tmp_path, settings)))
    assert code == 2 and "246 bytes is larger than the limit of 100 for a CSV file" in output


@pytest.mark.parametrize("parameters, extra, count", [
    ({f"k{i}": list(range(10)) for i in range(8)}, {}, "100,000,000"),
    ({"optimizer.lr": {"min": 0.001, "max": 0.1}}, {"method": "random", "n_trials": 10**9}, "1,000,000,000"),
], ids=["grid of 1e8", "random 1e9"])  # fmt: skip
def test_a_sweep_of_too_many_trials_is_refused_before_expansion(tmp_path: Path, parameters, extra, count) -> None:
    write_config(tmp_path, resumable_config(tmp_path), "base.yaml")
    sweep = write_config(tmp_path, {"base": "base.yaml", "parameters": parameters, **extra}, "sweep.yaml")
    # Counted, never built: 1 GiB of address space holds no list of 10⁸ trials, and a lazy expansion would hang.
    code, output = finished(autobp("sweep", str(sweep), "--quiet", limit_memory=1 << 30, wait=False))
    assert code == 2 and f"{count} trials is more than the limit of 10,000" in output, output
    assert not (tmp_path / "runs").exists()


def test_fifos_where_files_belong_are_refused_without_hanging(tmp_path: Path) -> None:
    done = train(resumable_config(tmp_path, epochs=1)).run_dir
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (done / "summary.json").unlink()
    os.mkfifo(done / "summary.json")
    os.mkfifo(tmp_path / "data.npz")
    os.mkfifo(tmp_path / "plot-pipe.png")  # an output: refused, never replaced nor waited on
    cases = [
        (["validate", str(fifo)], 2, "not a file"),
        (["train", str(fifo)], 2, "not a file"),
        (["predict", str(done), str(fifo)], 2, "pipe: not a regular file (a named pipe)"),
        (["predict", str(done), str(tmp_path / "data.npz")], 2, "data.npz: not a regular file (a named pipe)"),
        (["report", str(done)], 0, "summary.json: not a regular file (a named pipe)"),
        (["report", str(done), "--plot", str(tmp_path / "plot-pipe.png")], 2, "plot-pipe.png: a named pipe; "),
    ]
    processes = [autobp(*args, wait=False) for args, _, _ in cases]  # side by side: each is mostly start-up
    for process, (args, expected, message) in zip(processes, cases):
        code, output = finished(process)
        assert code == expected and message in output, (args, output)
    code, output = finished(autobp("train", "--resume", str(done), "--quiet", wait=False))  # it replaces the pipe
    assert code == 0 and "summary.json: not a regular file" in output, output


# --- gradcheck ------------------------------------------------------------------------------------------------------


def test_gradcheck_passes_a_gradient_that_is_exactly_zero() -> None:
    """At the minimum of (3w − 3c)² the gradient is exactly 0, while central differences hold rounding noise."""
    c = np.array([0.3, 0.7, 2.9])
    a, b = 3.0, 3.0 * c

    def loss(w: Tensor) -> Tensor:
        return ops.sum((w * a - b) * (w * a - b))

    w = Tensor(c.copy(), requires_grad=True)
    loss(w).backward()
    noise = numerical_gradient(loss, [c], 0, 1e-6)
    assert np.all(w.grad == 0) and np.any(noise != 0)
    assert relative_error(w.grad, noise) == 1.0  # why a purely relative error fails it
    quiet = WorkProgress(0, "zero", "passes", quiet=True)
    error, _ = gradcheck._central_difference_error(loss, [c], 0, np.arange(3), w.grad, quiet, "w")
    assert error < gradcheck.TOLERANCE
    wrong = np.full(3, 1e-9)  # a real error is still one: above the floor's 1e-11
    assert gradcheck._central_difference_error(loss, [c], 0, np.arange(3), wrong, quiet, "w")[0] > gradcheck.TOLERANCE


def test_a_run_directory_appears_with_its_config_or_not_at_all(tmp_path: Path) -> None:
    """The run directory is staged under a hidden name with config.yaml inside and renamed into place; what a start
    killed before the rename left (its writer gone) is removed by the next run in that folder."""
    runs = tmp_path / "runs"
    runs.mkdir()
    orphan = runs / ".r-20260101-000000.999999999-new.tmp"  # no process has that pid
    orphan.mkdir()
    (orphan / "config.yaml").write_text("name: r\n")
    made = rundir.create_run_dir(runs, "r", {"config.yaml": "name: r\n"})
    assert sorted(p.name for p in runs.iterdir()) == [made.name]
    assert [p.name for p in made.iterdir()] == ["config.yaml"]
    stamp = datetime.strptime(made.name[2:17], "%Y%m%d-%H%M%S")
    again = rundir.create_run_dir(runs, "r", {"config.yaml": "name: r\n"}, now=stamp)
    assert again.name == made.name + "-2"  # the taken name is never reused
