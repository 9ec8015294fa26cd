"""`autobp.sweep` from every place a user calls it: a guarded script, a script without the `__main__` guard, and
standard input (`python -`). Worker processes never run the caller again, so each call makes exactly one sweep
directory, and trials whose workers could not start make it raise, naming the sweep directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BASE = {"name": "entry", "data": {"source": "xor", "n_samples": 40}, "model": {"hidden": [4]},
        "loss": "cross_entropy", "training": {"epochs": 2, "checkpoint_every": None}}  # fmt: skip
CALL = """import autobp
sweep = autobp.sweep("sweep.yaml", jobs=2, output="out")
print("statuses", [run.status for run in sweep.trials])
"""
GUARDED = "if __name__ == '__main__':\n" + "".join(f"    {line}\n" for line in CALL.splitlines())


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    sweep = {"base": "base.yaml", "parameters": {"optimizer.lr": [0.1, 0.01]}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return tmp_path


def python(folder: Path, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=folder, input=stdin, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def sweep_dirs(folder: Path) -> list[Path]:
    return sorted((folder / "out" / "sweeps").iterdir())


@pytest.mark.parametrize("entry", ["guarded script", "unguarded script", "stdin", "unguarded module"])
def test_a_sweep_from_any_entry_point_runs_once_and_leaves_one_sweep_directory(folder: Path, entry: str) -> None:
    if entry == "stdin":
        result = python(folder, ["-"], stdin=CALL)
    else:
        (folder / "script.py").write_text(GUARDED if entry == "guarded script" else CALL)
        result = python(folder, ["-m", "script"] if entry == "unguarded module" else ["script.py"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "statuses ['completed', 'completed']\n"  # printed once: no worker ran the caller
    assert "bootstrapping" not in result.stderr and "Traceback" not in result.stderr
    [directory] = sweep_dirs(folder)
    assert sorted(p.name for p in directory.iterdir()) == ["sweep.yaml", "trial-000", "trial-001", "trials.csv"]
    expected = {"base.yaml", "sweep.yaml", "out"} | ({"script.py"} if entry != "stdin" else set())
    # Python's own bytecode cache of an imported script.py (unless PYTHONDONTWRITEBYTECODE) is no junk of autobp's
    assert {p.name for p in folder.iterdir()} - {"__pycache__"} == expected


def test_trials_whose_workers_cannot_start_make_the_sweep_raise(folder: Path) -> None:
    """A worker that exits before it starts (here: its Python refuses to run the worker's start-up) fails the
    trials it was given; `autobp.sweep` raises, naming the sweep directory, instead of returning empty-handed."""
    wrapper = folder / "python-without-workers"
    wrapper.write_text(f'#!/bin/sh\ncase "$*" in *spawn_main*) exit 1;; esac\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    script = f"import multiprocessing\nmultiprocessing.set_executable({str(wrapper)!r})\n" + CALL
    result = python(folder, ["-c", script])
    assert result.returncode == 1
    [directory] = sweep_dirs(folder)
    # The error's line, not simply the last: Python 3.11's pool may print its own `OSError: handle is closed` after it
    # when a broken pool's manager thread and interpreter exit race on its wake-up pipe (CPython gh-125451, fixed 3.12.8).
    messages = [line for line in result.stderr.splitlines() if line.startswith("autobp.common.errors.AutobpError")]
    assert messages, result.stderr
    message = messages[0]
    assert message.startswith(f"autobp.common.errors.AutobpError: {directory}: 2 of 2 trials did not run: its "
                              "worker process ended before the trial started (BrokenProcessPool: ")  # fmt: skip
    assert message.endswith(f"`autobp sweep --resume {directory}` runs them again")
    assert "statuses" not in result.stdout
    rows = (directory / "trials.csv").read_text().splitlines()[1:]
    assert [row.split(",")[1] for row in rows] == ["failed", "failed"]
    assert not any((directory / name).exists() for name in ("trial-000", "trial-001"))
