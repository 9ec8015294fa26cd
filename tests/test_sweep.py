"""`autobp sweep`: expansion, validation before any trial starts, parallel trials that fail alone, resume, Ctrl-C."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import write_sweep
from typer.testing import CliRunner

from autobp.cli import app
from autobp.common.errors import ConfigError
from autobp.common.runtime import limit_blas_threads
from autobp.rundir.summary import Best, Summary
from autobp.sweeps.executor import LocalExecutor
from autobp.sweeps.plan import expand, plan_sweep
from autobp.sweeps.run import resume_sweep, run_sweep
from autobp.sweeps.sweepfile import SweepFile
from autobp.sweeps.table import format_ranking
from autobp.sweeps.record import Outcome, Ranking, read_record

# Linear data, identity activations, mse and a huge SGD step: the loss overflows within a few steps.
REGRESSION = {"data": {"source": "linear", "n_samples": 80}, "loss": "mse",
              "model": {"hidden": [8], "activation": "identity"}, "optimizer": {"name": "sgd", "lr": 0.01}}  # fmt: skip


def base_config(tmp_path: Path, **changes) -> dict:
    return {
        "name": "base",
        "seed": 1,
        "data": {"source": "moons", "n_samples": 80, "noise": 0.1},
        "model": {"hidden": [6], "activation": "tanh"},
        "loss": "cross_entropy",
        "optimizer": {"name": "adam", "lr": 0.05},
        "training": {"epochs": 2, "batch_size": 16, "checkpoint_every": None},
        "output": {"dir": str(tmp_path / "runs")},
        **changes,
    }


def write(path: Path, content: dict | str) -> Path:
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def read_trials(directory: Path) -> list[dict[str, str]]:
    with open(directory / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def sweep_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        plan_sweep([path])
    return str(caught.value)


@pytest.fixture(scope="module")
def pool():
    """Two worker processes shared by the tests that run trials, so each does not pay for starting Python."""
    with LocalExecutor(2) as executor:
        yield executor


# --- expansion ----------------------------------------------------------------------------------------------------


def test_a_grid_is_every_combination_in_file_order(tmp_path):
    path = write_sweep(tmp_path, {"optimizer.lr": [0.1, 0.01, 0.001], "model.activation": ["tanh", "relu"]},
                       base_config(tmp_path))
    sweep = plan_sweep([path])
    assert [trial.name for trial in sweep.trials] == [f"trial-00{i}" for i in range(6)]
    assert [tuple(trial.values.values()) for trial in sweep.trials] == [
        (0.1, "tanh"), (0.1, "relu"), (0.01, "tanh"), (0.01, "relu"), (0.001, "tanh"), (0.001, "relu"),
    ]  # fmt: skip
    relu = sweep.trials[1].config
    assert relu["optimizer"]["lr"] == 0.1
    assert [layer["activation"] for layer in relu["model"]["layers"]] == ["relu", "identity"]
    assert relu["model"]["layers"][-1]["units"] == 2  # resolved against the data
    assert len({trial.identity for trial in sweep.trials}) == 6
    assert (sweep.name, sweep.monitor, sweep.mode) == ("sweep", "val_loss", "min")  # the sweep file's name


def test_random_draws_are_seeded_and_spread_as_asked():
    spec = SweepFile.model_validate({
        "base": "b.yaml", "method": "random", "n_trials": 3000, "seed": 7,
        "parameters": {
            "optimizer.lr": {"min": 1e-4, "max": 1e-1, "log": True},
            "training.batch_size": {"min": 1, "max": 100, "log": True},
            "model.hidden.0": {"min": 2, "max": 5},
            "optimizer.momentum": {"min": 0.5, "max": 0.9},
            "model.activation": ["tanh", "relu", "sigmoid"],
        },
    })  # fmt: skip
    trials = expand(spec)
    assert trials == expand(spec)
    assert trials != expand(spec.model_copy(update={"seed": 8}))
    column = {key: [trial[key] for trial in trials] for key in spec.parameters}
    lr = np.array(column["optimizer.lr"])
    assert lr.min() >= 1e-4 and lr.max() <= 1e-1
    decades = np.histogram(np.log10(lr), bins=[-4, -3, -2, -1])[0] / len(lr)
    assert decades == pytest.approx([1 / 3] * 3, abs=0.03)  # log-uniform: each decade equally often
    sizes = column["training.batch_size"]
    assert all(isinstance(size, int) and 1 <= size <= 100 for size in sizes)
    # Integer k owns [k, k + 1) of a log-uniform draw from [1, 101).
    assert np.mean(np.array(sizes) <= 10) == pytest.approx(math.log(11) / math.log(101), abs=0.03)
    units = Counter(column["model.hidden.0"])
    assert set(units) == {2, 3, 4, 5} and all(count / 3000 == pytest.approx(0.25, abs=0.03) for count in units.values())
    momentum = np.array(column["optimizer.momentum"])
    assert 0.5 <= momentum.min() and momentum.max() <= 0.9 and momentum.mean() == pytest.approx(0.7, abs=0.01)
    picks = Counter(column["model.activation"])
    assert all(count / 3000 == pytest.approx(1 / 3, abs=0.03) for count in picks.values())


def test_a_random_sweep_validates_its_draws(tmp_path):
    path = write_sweep(tmp_path, {"optimizer.lr": {"min": 0.001, "max": 0.1, "log": True}, "seed": [0, 1]},
                       base_config(tmp_path),
                       method="random", n_trials=4, seed=3)  # fmt: skip
    sweep = plan_sweep([path])
    assert len(sweep.trials) == 4
    assert [trial.config["optimizer"]["lr"] for trial in sweep.trials] == [t["optimizer.lr"] for t in expand(
        SweepFile.model_validate(yaml.safe_load(path.read_text())))]  # fmt: skip
    assert sweep.settings["method"] == "random" and sweep.settings["base"] == str(tmp_path / "base.yaml")


# --- errors, all before any trial starts ----------------------------------------------------------------------------


def test_sweep_file_errors_name_their_line_and_how_to_fix_them(tmp_path):
    write(tmp_path / "base.yaml", base_config(tmp_path))
    path = write(tmp_path / "sweep.yaml", (
        "base: base.yaml\n"
        "methd: grid\n"
        "monitor: val_acc\n"
        "parameters:\n"
        "  optimizer.lr: 0.1\n"
        "  model.hidden: {min: 1, max: 4, step: 1}\n"
    ))  # fmt: skip
    assert sweep_error(path) == (
        f"{path}: 4 problems\n"
        f"  {path}:2:1: methd: unknown key — did you mean 'method'?\n"
        f"  {path}:3:10: monitor: 'val_acc' is not allowed (allowed: val_loss, train_loss, val_accuracy, "
        "train_accuracy, val_r2, train_r2) — did you mean 'val_accuracy'?\n"
        f"  {path}:5:17: parameters.optimizer.lr: expected a list of values or a range {{min, max, log}}, got 0.1\n"
        f"  {path}:6:34: parameters.model.hidden.step: unknown key (allowed: min, max, log)"
    )


@pytest.mark.parametrize(("keys", "expected"), [
    ({"parameters": {"optimizer.lr": {"min": 0.1, "max": 1.0}}},
     ":3:3: parameters.optimizer.lr: a range needs method: random or tpe (a grid takes lists of values)"),
    ({"method": "random", "parameters": {"optimizer.lr": [0.1]}}, ":1:1: n_trials: required with method: random"),
    ({"method": "random", "n_trials": 2, "parameters": {"optimizer.lr": {"min": 0.0, "max": 1.0, "log": True}}},
     ":6:5: parameters.optimizer.lr.min: must be > 0 with log: true"),
    ({"parameters": {"optimizer.lr": []}}, ":3:17: parameters.optimizer.lr: needs at least 1 item(s)"),
    ({"parameters": {"optimizer..lr": [1]}}, ":3:3: parameters.optimizer..lr: expected a dotted config key"),
    ({"parameters": {"optimizer.lr": [1]}, "n_trials": 3}, ":5:1: n_trials: only used with method: random"),
    ({"method": "random", "n_trials": 1, "parameters": {"optimizer.lr": {"min": True, "max": 1.0}}},
     ":6:10: parameters.optimizer.lr.min: expected a finite number, got true"),
    ({"base": "missing.yaml", "parameters": {"seed": [1]}}, ":1:7: base: "),
    ({"rank": "bst", "parameters": {"seed": [1]}},
     ":2:7: rank: 'bst' is not allowed (allowed: saved, final, best) — did you mean 'best'?"),
    ({"parameters": {"optimizer.lr": None}},
     ":3:17: parameters.optimizer.lr: expected a list of values or a range {min, max, log}, got null"),
])  # fmt: skip
def test_sweep_file_mistakes(tmp_path, keys, expected):
    write(tmp_path / "base.yaml", base_config(tmp_path))
    path = write(tmp_path / "sweep.yaml", {"base": "base.yaml", **keys})
    assert sweep_error(path).startswith(f"{path}{expected}")


def test_one_bad_trial_stops_the_sweep_before_any_trial_starts(tmp_path):
    path = write_sweep(tmp_path, {"model.activation": ["tanh", "relu", "sigmoid", "reluu"]}, base_config(tmp_path))
    result = CliRunner().invoke(app, ["sweep", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: trial-003 (model.activation=reluu): --set model.activation=reluu: model.activation: 'reluu' is "
        "not allowed (allowed: identity, sigmoid, tanh, relu, leaky_relu, elu, softplus, sin) — did you mean 'relu'?"
    )
    assert not (tmp_path / "runs").exists()


def test_a_swept_key_that_changes_nothing_is_an_error(tmp_path):
    # Layers that name their own activation ignore model.activation: every trial would train the same network.
    layers = base_config(tmp_path, model={"layers": [{"units": 6, "activation": "tanh"}, {}]})
    path = write_sweep(tmp_path, {"model.activation": ["tanh", "relu"]}, base=layers)
    assert sweep_error(path).startswith(
        "trial-001 (model.activation=relu) trains the same config as trial-000 (model.activation=tanh)"
    )


def test_the_monitored_metric_must_exist_in_every_trial(tmp_path):
    path = write_sweep(tmp_path, {"seed": [1, 2]}, base_config(tmp_path), monitor="val_r2")
    assert sweep_error(path) == (
        "trial-000 (seed=1): monitor 'val_r2' needs a regression loss, but the loss is a classification loss"
    )


def test_a_glob_that_catches_a_sweep_file_compares_the_configs_and_says_so(tmp_path):
    """`autobp sweep configs/*.yaml`: the sweep file among the configs is skipped with a note."""
    path = write_sweep(tmp_path, {"seed": [1, 2]}, base_config(tmp_path))
    other = write(tmp_path / "other.yaml", base_config(tmp_path, seed=7))
    sweep = plan_sweep([tmp_path / "base.yaml", other, path])
    assert [trial.values["config"] for trial in sweep.trials] == [str(tmp_path / "base.yaml"), str(other)]
    assert sweep.notes == [f"skipped {path}: a sweep file runs on its own (autobp sweep {path})"]
    second = write(tmp_path / "second.yaml", {"base": "base.yaml", "parameters": {"seed": [3]}})
    with pytest.raises(ConfigError, match="a sweep file runs on its own — give one sweep file at a time"):
        plan_sweep([path, second])


def outcome(status="completed", final=None, saved=None, best=None) -> Outcome:
    best = {key: Best(value=value, epoch=1) for key, value in (best or {}).items()}
    return Outcome(status, Summary(status=status, final=final or {}, saved=saved or final or {}, best=best))


def test_ties_are_broken_by_the_loss_of_the_same_split():
    outcomes = [outcome(final={"val_accuracy": 1.0, "val_loss": 0.4}), outcome(final={"val_accuracy": 0.9, "val_loss": 0.01}),
                outcome(final={"val_accuracy": 1.0, "val_loss": 0.001}), outcome("failed")]  # fmt: skip
    ranking = Ranking("val_accuracy", "max")
    assert ranking.order(outcomes) == [2, 0, 1, 3]
    assert ranking.describe().endswith("higher is better; ties broken by val_loss")
    assert Ranking("val_loss", "min").tie_breaker is None


def test_trials_rank_by_the_saved_model_unless_told_final_or_best():
    """Early stopping restored trial 0's epoch with val_loss 0.1 although its last epoch reached 0.5."""
    stopped = outcome("stopped_early", final={"val_loss": 0.5}, saved={"val_loss": 0.1}, best={"val_loss": 0.1})
    steady = outcome(final={"val_loss": 0.3}, best={"val_loss": 0.05})
    assert Ranking("val_loss", "min").order([stopped, steady]) == [0, 1]
    assert Ranking("val_loss", "min", "final").order([stopped, steady]) == [1, 0]
    assert Ranking("val_loss", "min", "best").order([stopped, steady]) == [1, 0]


def test_a_sweep_ranks_by_the_saved_model_end_to_end(tmp_path):
    stopping = {"epochs": 12, "batch_size": 16, "checkpoint_every": None,
                "early_stopping": {"monitor": "val_loss", "patience": 2}}  # fmt: skip
    path = write_sweep(tmp_path, {"optimizer.lr": [0.5, 0.05]}, base=base_config(tmp_path, training=stopping),
                       rank="best")  # fmt: skip
    result = run_sweep([path], jobs=1)
    assert result.sweep.stage == "best"
    assert "ranked by val_loss at its best epoch, lower is better" in format_ranking(result)
    rows = read_trials(result.directory)
    best = [float(row["best_val_loss"]) for row in rows]
    assert [float(row["val_loss"]) for row in rows] == best  # the ranked column holds the ranked value
    assert rows[result.ranking()[0]]["best_val_loss"] == str(min(best))


def test_trials_csv_quotes_text_once(tmp_path):
    """A failure reason with a comma and quotes reads back exactly (it used to gain literal quotes)."""
    sweep = plan_sweep([write_sweep(tmp_path, {"seed": [1]}, base_config(tmp_path))])
    failed = Outcome("failed", Summary(status="failed", error='x, "y"'))
    from autobp.sweeps.run import _write_trials_csv

    _write_trials_csv(tmp_path, sweep, [failed])
    assert read_trials(tmp_path)[0]["reason"] == 'x, "y"'


# --- running ------------------------------------------------------------------------------------------------------


def test_several_configs_are_compared_through_the_command_line(tmp_path):
    a = write(tmp_path / "a.yaml", base_config(tmp_path, name="a"))
    b = write(tmp_path / "b.yaml", base_config(tmp_path, name="b", optimizer={"name": "sgd", "lr": 0.001}))
    result = CliRunner().invoke(app, ["sweep", str(a), str(b), "--set", "training.epochs=3", "--name", "ab",
                                      "--output-dir", str(tmp_path / "out"), "--jobs", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    (directory,) = (tmp_path / "out" / "sweeps").iterdir()
    assert directory.name.startswith("ab-")
    rows = read_trials(directory)
    assert [row["config"] for row in rows] == [str(a), str(b)]
    assert [row["status"] for row in rows] == ["completed"] * 2 and [row["epochs"] for row in rows] == ["3", "3"]
    assert list(rows[0])[:6] == ["trial", "status", "config", "val_loss", "best_val_loss", "train_loss"]
    losses = [float(row["val_loss"]) for row in rows]
    best = int(np.argmin(losses))
    assert f"best: val_loss {losses[best]:.4g} (trial-00{best}), config {directory}/trial-00{best}/config.yaml" in result.stdout
    table = result.stdout.splitlines()
    assert table[1].split()[:4] == ["rank", "trial", "status", "config"]
    assert table[2].split()[:2] == ["1", f"trial-00{best}"]
    assert f"trial-00{best} completed val_loss" in result.stderr  # plain progress lines: stderr is not a terminal
    for row in rows:
        summary = yaml.safe_load((Path(row["run_dir"]) / "summary.json").read_text())
        assert summary["final"]["val_loss"] == float(row["val_loss"])


def test_a_diverging_trial_fails_alone_and_the_sweep_exits_4(tmp_path, pool):
    path = write_sweep(tmp_path, {"optimizer.lr": [0.01, 100.0, 0.001]}, base=base_config(tmp_path, **REGRESSION))
    result = run_sweep([path], executor=pool, jobs=2)
    assert result.exit_code == 4
    rows = read_trials(result.directory)
    assert [row["status"] for row in rows] == ["completed", "diverged", "completed"]
    assert rows[1]["reason"].startswith("non-finite")
    assert list(rows[0])[3:9] == ["val_loss", "best_val_loss", "train_loss", "train_r2", "val_r2", "epochs"]
    assert result.ranking()[-1] == 1  # a trial that did not complete ranks last
    assert "\n-     trial-001  diverged" in format_ranking(result)
    record = yaml.safe_load((result.directory / "sweep.yaml").read_text())
    assert [trial["values"] for trial in record["trials"]] == [{"optimizer.lr": lr} for lr in (0.01, 100.0, 0.001)]


def test_resume_runs_only_the_trials_that_did_not_complete(tmp_path, pool):
    path = write_sweep(tmp_path, {"optimizer.lr": [100.0, 0.01, 0.001]}, base=base_config(tmp_path, **REGRESSION))
    first = run_sweep([path], executor=pool, jobs=1, max_failures=1)
    assert [row["status"] for row in read_trials(first.directory)] == ["diverged", "pending", "pending"]
    assert not (first.directory / "trial-001").exists()  # --max-failures 1: nothing launched after the failure
    (first.directory / "trial-000" / "marker").touch()

    second = resume_sweep(first.directory, executor=pool, jobs=2)
    assert second.directory == first.directory and second.exit_code == 4
    assert [row["status"] for row in read_trials(first.directory)] == ["diverged", "completed", "completed"]
    assert not (first.directory / "trial-000" / "marker").exists()  # the unfinished trial's folder was replaced
    summaries = {name: (first.directory / name / "summary.json").read_bytes() for name in ("trial-001", "trial-002")}

    third = resume_sweep(first.directory, executor=pool, jobs=2)  # nothing edited: the completed trials stay
    assert [outcome.status for outcome in third.outcomes] == ["diverged", "completed", "completed"]
    assert {name: (first.directory / name / "summary.json").read_bytes() for name in summaries} == summaries

    write(tmp_path / "base.yaml", base_config(tmp_path, **REGRESSION, training={"epochs": 3, "batch_size": 16}))
    fourth = resume_sweep(first.directory, executor=pool, jobs=2)  # an edited base config changes every trial
    assert [row["epochs"] for row in read_trials(first.directory)][1:] == ["3", "3"]
    assert fourth.exit_code == 4


def test_resuming_a_complete_sweep_runs_nothing(tmp_path, pool):
    first = run_sweep([write_sweep(tmp_path, {"seed": [1, 2]}, base_config(tmp_path))], executor=pool, jobs=2)
    assert first.exit_code == 0
    before = {path: path.stat().st_mtime_ns for path in first.directory.glob("trial-*/*")}
    result = CliRunner().invoke(app, ["sweep", "--resume", str(first.directory)])
    assert result.exit_code == 0, result.output
    assert {path: path.stat().st_mtime_ns for path in first.directory.glob("trial-*/*")} == before
    assert "2 trials (2 completed)" in result.stdout


def test_a_worker_that_dies_fails_its_trial_and_the_sweep_goes_on(tmp_path):
    """The first kill hits two trials at once: both run again, alone; the second kill hits trial-000 alone."""
    moons = base_config(tmp_path, data={"source": "moons", "n_samples": 400}, training={"batch_size": 8})
    path = write_sweep(tmp_path, {"training.epochs": [2000, 60, 1]}, base=moons)
    sweeps = tmp_path / "runs" / "sweeps"

    def started(trial: str) -> bool:
        return any(sweeps.glob(f"*/{trial}/config.yaml"))

    def kill_twice(executor: LocalExecutor) -> None:
        wait_for(lambda: started("trial-000") and started("trial-001"))
        first = executor.worker_pids()
        os.kill(first[0], signal.SIGKILL)
        # Retries run in trial order, so trial-000 is the one running in the next pool.
        wait_for(lambda: set(executor.worker_pids()) - set(first) and started("trial-000"))
        for pid in executor.worker_pids():
            os.kill(pid, signal.SIGKILL)

    with LocalExecutor(2) as executor, ThreadPoolExecutor(1) as thread:
        killer = thread.submit(kill_twice, executor)
        result = run_sweep([path], executor=executor, jobs=2)
        killer.result()
    rows = read_trials(result.directory)
    assert [row["status"] for row in rows] == ["failed", "completed", "completed"]
    assert rows[0]["reason"].startswith("BrokenProcessPool: A process in the process pool was terminated abruptly")
    assert result.exit_code == 4


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_ctrl_c_interrupts_the_running_trials_and_leaves_a_resumable_sweep(tmp_path, pool):
    base = base_config(tmp_path, training={"epochs": 100_000, "checkpoint_every": None})
    path = write_sweep(tmp_path, {"seed": [1, 2, 3]}, base=base)
    process = subprocess.Popen(
        [sys.executable, "-m", "autobp", "sweep", str(path), "--jobs", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    sweeps = tmp_path / "runs" / "sweeps"
    try:
        # Interrupt once both trials have logged an epoch, so that both are inside their training loops.
        wait_for(lambda: sum(p.read_text().count("\n") > 1 for p in sweeps.glob("*/trial-*/metrics.csv")) == 2)
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the sweep and its workers
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    (directory,) = sweeps.iterdir()
    rows = read_trials(directory)
    assert [row["status"] for row in rows] == ["interrupted", "interrupted", "pending"]
    for row in rows[:2]:
        assert yaml.safe_load((Path(row["run_dir"]) / "summary.json").read_text())["status"] == "interrupted"
    assert "3 trials (2 interrupted, 1 pending)" in stdout
    write(tmp_path / "base.yaml", {**base, "training": {"epochs": 1}})  # quicker trials, to finish the test
    assert resume_sweep(directory, executor=pool, jobs=2).exit_code == 0
    assert [row["status"] for row in read_trials(directory)] == ["completed"] * 3


# --- worker processes ---------------------------------------------------------------------------------------------


def test_workers_share_the_cores_among_their_blas_threads():
    with LocalExecutor(2, cores=6) as executor:
        assert executor.submit(os.getenv, "OPENBLAS_NUM_THREADS").result() == "3"
    assert not limit_blas_threads(1)  # too late here: this process has imported numpy


def test_a_pool_that_breaks_while_it_starts_a_worker_is_replaced_and_other_failures_are_not_hidden(monkeypatch):
    """Python 3.11's pool, broken while `submit` starts a worker, raises `OSError: handle is closed` (gh-125451): the
    trial goes to a fresh pool as after BrokenProcessPool. An OSError from a pool that is not broken propagates."""
    with LocalExecutor(1) as executor:
        broken = executor._pool

        def breaks(*args):
            broken._broken = "A child process terminated abruptly"  # what the pool's manager thread sets first
            raise OSError("handle is closed")

        monkeypatch.setattr(broken, "submit", breaks)
        assert executor.submit(pow, 2, 10).result(timeout=120) == 1024 and executor._pool is not broken
        def refuses(*args):
            raise OSError(11, "no process")

        monkeypatch.setattr(executor._pool, "submit", refuses)
        with pytest.raises(OSError, match="no process"):
            executor.submit(pow, 2, 10)


def test_a_sweep_killed_mid_trial_resumes_to_the_same_trials_bit_for_bit(tmp_path, pool):
    base = base_config(tmp_path, training={"epochs": 40, "batch_size": 2, "checkpoint_every": 1})
    path = write_sweep(tmp_path, {"seed": [1, 2, 3]}, base=base)
    reference = run_sweep([path], output=tmp_path / "reference", executor=pool, jobs=2)
    process = subprocess.Popen([sys.executable, "-m", "autobp", "sweep", str(path), "--jobs", "2", "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    sweeps = tmp_path / "runs" / "sweeps"
    try:
        wait_for(lambda: any(p.read_text().count("\n") > 2 for p in sweeps.glob("*/trial-*/metrics.csv")))
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the sweep and its workers, with no chance to clean up
        process.wait()
    (directory,) = sweeps.iterdir()
    assert "completed" not in [row["status"] for row in read_trials(directory)][:1]
    assert resume_sweep(directory, executor=pool, jobs=2).exit_code == 0
    for trial in ("trial-000", "trial-001", "trial-002"):
        for name in ("gradients.csv", "model.npz"):
            assert (directory / trial / name).read_bytes() == (reference.directory / trial / name).read_bytes(), trial


def test_pruned_trials_show_what_they_reported_and_one_that_beat_the_winner_is_marked(tmp_path):
    """A pruned trial is not ranked, but the table shows the value it last reported (its epoch in `epochs`), lists
    pruned trials by it, and marks one whose best epoch beat the winner's ranked value."""
    from autobp.sweeps.plan import Sweep, Trial
    from autobp.sweeps.run import SweepResult

    def ended(status, epochs, final, best):
        return Outcome(status, Summary(status=status, epochs=epochs, final={"val_loss": final}, saved={"val_loss": final},
                                       best={"val_loss": Best(value=best, epoch=epochs)}))  # fmt: skip

    outcomes = [ended("pruned", 3, 0.9, 0.5), ended("completed", 8, 0.2, 0.15), ended("pruned", 5, 0.3, 0.1),
                Outcome("failed", Summary(status="failed", error="boom"))]  # fmt: skip
    trials = [Trial(f"trial-00{i}", {"optimizer.lr": lr}, {}, str(i), 0) for i, lr in enumerate([0.1, 0.01, 0.3, 1.0])]
    sweep = Sweep("s", [], [], "val_loss", "min", trials, settings={"parameters": {"optimizer.lr": []}})
    result = SweepResult(tmp_path, sweep, outcomes, 1.0)
    assert result.ranking() == [1, 2, 0, 3]
    lines = format_ranking(result).splitlines()
    rows = [line.split()[:5] for line in lines[2:6]]
    assert rows == [["1", "trial-001", "completed", "0.01", "0.2"], ["-*", "trial-002", "pruned", "0.3", "0.3"],
                    ["-", "trial-000", "pruned", "0.1", "0.9"], ["-", "trial-003", "failed", "1", "-"]]  # fmt: skip
    assert lines[6] == "pruned trials (rank -) show the val_loss they last reported, at the epoch in `epochs`"
    assert lines[7] == ("* trial-002 was pruned at epoch 5, but its best_val_loss 0.1 beats the winner's val_loss 0.2 "
                        "(trial-001): early_terminate stopped it before it could finish")  # fmt: skip


def test_a_sweep_of_configs_mixing_losses_ranks_by_a_metric_they_share_and_says_so(tmp_path):
    """cross_entropy and bce values do not compare, accuracies do; across tasks no metric does, and the header says
    so. Configs of one loss rank by val_loss with nothing said."""
    base = base_config(tmp_path, training={"epochs": 1, "batch_size": 16, "checkpoint_every": None})
    ce = write(tmp_path / "ce.yaml", base)
    bce = write(tmp_path / "bce.yaml", {**base, "loss": "bce"})
    sine = write(tmp_path / "sine.yaml", {**base, "data": {"source": "sine", "n_samples": 80}, "loss": "mse"})
    same = plan_sweep([ce, write(tmp_path / "seed.yaml", {**base, "seed": 9})])
    assert (same.monitor, same.mode, same.mix) == ("val_loss", "min", None)
    classifiers = run_sweep([ce, bce], jobs=1)
    assert (classifiers.sweep.monitor, classifiers.sweep.mode) == ("val_accuracy", "max")
    header = format_ranking(classifiers).splitlines()[:3]
    assert header[0].endswith("ranked by val_accuracy of the saved model (its best epoch where early stopping "
                              "restored it), higher is better; ties broken by val_loss")  # fmt: skip
    assert header[1] == "the trials mix losses (bce, cross_entropy): their val_loss values do not compare"
    assert header[2].split()[:5] == ["rank", "trial", "status", "config", "val_accuracy"]
    # sweep.yaml records it, so the sweep's HTML page (and `autobp view`) says it too
    assert read_record(classifiers.directory).mix == header[1]
    assert CliRunner().invoke(app, ["report", str(classifiers.directory), "--html"]).exit_code == 0
    assert '<span class="mix">The trials mix losses (bce, cross_entropy): their val_loss values do not compare.</span>' \
        in (classifiers.directory / "report.html").read_text()
    assert read_record(run_sweep([ce, write(tmp_path / "seed.yaml", {**base, "seed": 9})], jobs=1).directory).mix is None
    mixed = plan_sweep([ce, sine])
    assert (mixed.monitor, mixed.mix) == ("val_loss", "the trials mix losses (cross_entropy, mse) and tasks "
                                          "(classification, regression): no metric they share compares them, so "
                                          "this ranking compares val_loss values of different losses")  # fmt: skip
