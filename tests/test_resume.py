"""Checkpoints and `--resume`: a run killed at any point and resumed ends bit-identical to one never stopped."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import assert_same_run, interrupted, resumable_config, wait_for_rows
from typer.testing import CliRunner

from autobp.cli import app
from autobp.rundir import checkpoint
from autobp.common.errors import ConfigError, DataError
from autobp.training.entry import resume, train


@pytest.mark.parametrize("stop_at", [3, 8, 25, 40])  # first epoch, epoch boundary, mid-epoch, last epoch
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path: Path, monkeypatch, stop_at: int) -> None:
    reference = train(resumable_config(tmp_path))
    broken = interrupted(resumable_config(tmp_path), monkeypatch, stop_at)
    assert broken.status == "interrupted"
    resumed = resume(broken.run_dir)
    assert resumed.status == "completed"
    assert resumed.summary.steps == reference.summary.steps == 48
    assert resumed.summary.final == reference.summary.final  # `final` leaves out the seconds column
    assert_same_run(reference.run_dir, resumed.run_dir)


def test_early_stopping_state_survives_a_resume(tmp_path: Path, monkeypatch) -> None:
    settings = {"epochs": 60, "early_stopping": {"monitor": "val_loss", "patience": 4}}
    big_lr = resumable_config(tmp_path, **settings) | {"optimizer": {"name": "sgd", "lr": 2.0}}
    reference = train(big_lr)
    assert reference.status == "stopped_early"
    broken = interrupted(big_lr, monkeypatch, reference.summary.steps - 5)
    resumed = resume(broken.run_dir)
    assert resumed.status == "stopped_early"
    assert resumed.summary.early_stopping == reference.summary.early_stopping
    assert_same_run(reference.run_dir, resumed.run_dir)


def test_resuming_a_finished_run_does_nothing_and_extending_it_continues(tmp_path: Path) -> None:
    short = train(resumable_config(tmp_path, epochs=3))
    before = (short.run_dir / "metrics.csv").read_text()
    again = CliRunner().invoke(app, ["train", "--resume", str(short.run_dir)])
    assert again.exit_code == 0 and "nothing to do" in again.output
    assert (short.run_dir / "metrics.csv").read_text() == before
    extended = resume(short.run_dir, ["training.epochs=6"])
    assert extended.summary.epochs == 6
    assert_same_run(train(resumable_config(tmp_path)).run_dir, extended.run_dir)
    assert yaml.safe_load((short.run_dir / "config.yaml").read_text())["training"]["epochs"] == 6


def test_resume_refuses_any_other_change_naming_the_keys(tmp_path: Path) -> None:
    run = train(resumable_config(tmp_path, epochs=2))
    with pytest.raises(ConfigError, match=r"cannot change model\.layers\.0\.units, optimizer\.lr"):
        resume(run.run_dir, ["optimizer.lr=0.5", "model.layers.0.units=4"])
    result = CliRunner().invoke(app, ["train", "--resume", str(run.run_dir), "--set", "seed=9"])
    assert result.exit_code == 2 and "cannot change seed" in result.output


def test_ctrl_c_before_the_first_automatic_checkpoint_still_leaves_one(tmp_path: Path, monkeypatch) -> None:
    settings = resumable_config(tmp_path, checkpoint_every="auto")  # the first automatic checkpoint would come after 10 s
    reference = train(settings)
    broken = interrupted(settings, monkeypatch, 2)
    assert broken.status == "interrupted" and (broken.run_dir / "checkpoint.npz").exists()
    said: list[str] = []
    resumed = resume(broken.run_dir, announce=said.append)
    assert said == ["resuming from the checkpoint inside epoch 1, after 1 batch (step 1)"]
    assert_same_run(reference.run_dir, resumed.run_dir)


def test_resume_says_where_it_continues_and_what_it_drops(tmp_path: Path, monkeypatch) -> None:
    """Killed after epoch 4 was logged, with the last checkpoint at epoch 2: two logged epochs are trained again."""
    settings = resumable_config(tmp_path, epochs=4, checkpoint_every=2)
    reference = train(settings)
    original = checkpoint.save
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "save", lambda run_dir, state: state.epoch == 4 or original(run_dir, state))
        killed = train(settings)
    (killed.run_dir / "summary.json").unlink()  # a killed run leaves no summary
    result = CliRunner().invoke(app, ["train", "--resume", str(killed.run_dir), "--quiet"])
    assert result.exit_code == 0
    assert "resuming from the checkpoint of epoch 2 (2 later logged epochs dropped)" in result.output
    assert_same_run(reference.run_dir, killed.run_dir)
    never = train(resumable_config(tmp_path, epochs=2, checkpoint_every=None))
    (never.run_dir / "summary.json").unlink()
    said: list[str] = []
    resume(never.run_dir, announce=said.append)
    assert said == ["no checkpoint to resume from: starting again from epoch 1 (2 later logged epochs dropped)"]


def test_resume_refuses_to_shorten_a_run_and_changes_nothing(tmp_path: Path) -> None:
    run = train(resumable_config(tmp_path, epochs=4))
    before = {name: (run.run_dir / name).read_bytes() for name in ("config.yaml", "metrics.csv", "summary.json")}
    for override, message in (("training.epochs=2", "already trained 4 epochs"),
                              ("training.max_steps=5", "already taken 32 steps")):  # fmt: skip
        result = CliRunner().invoke(app, ["train", "--resume", str(run.run_dir), "--set", override])
        assert result.exit_code == 2 and message in result.output and "not shortened" in result.output
    assert {name: (run.run_dir / name).read_bytes() for name in before} == before


def test_a_damaged_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    run = train(resumable_config(tmp_path, epochs=2))
    data = (run.run_dir / "checkpoint.npz").read_bytes()
    (run.run_dir / "checkpoint.npz").write_bytes(data[: len(data) // 2])
    result = CliRunner().invoke(app, ["train", "--resume", str(run.run_dir), "--set", "training.epochs=3"])
    assert result.exit_code == 2
    assert "checkpoint.npz" in result.output and "truncated or corrupted" in result.output
    assert "Traceback" not in result.output


def test_resume_needs_a_run_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory" in result.output
    both = CliRunner().invoke(app, ["train", "x.yaml", "--resume", str(tmp_path)])
    assert both.exit_code == 2 and "give no CONFIG" in both.output


def start(config_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "autobp", "train", str(config_path), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


@pytest.mark.parametrize("epochs_before_kill", [1, 7])
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path, epochs_before_kill: int) -> None:
    """A real kill: SIGKILL the training process part-way (mid-epoch or mid-checkpoint), resume, compare."""
    settings = resumable_config(tmp_path, epochs=12, batch_size=2)  # 64 steps per epoch: long enough to land mid-epoch
    settings["data"]["n_samples"] = 160
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(settings))
    process = start(path)
    run_dir = wait_for_rows(tmp_path / "runs", epochs_before_kill, process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    # Killed: nothing had a chance to finish, and summary.json says no more than that.
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"
    resumed = CliRunner().invoke(app, ["train", "--resume", str(run_dir), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    reference = train(settings)
    assert_same_run(reference.run_dir, run_dir)


@pytest.mark.parametrize("signals", [[signal.SIGINT, signal.SIGINT, signal.SIGINT], [signal.SIGTERM]],
                         ids=["ctrl-c three times", "sigterm"])  # fmt: skip
def test_signals_leave_a_truthful_resumable_run(tmp_path: Path, signals: list[int]) -> None:
    """Ctrl-C pressed repeatedly within milliseconds, or SIGTERM: status interrupted, exit 130, the current weights,
    a checkpoint inside the epoch; --resume then ends bit-identical to a run never stopped."""
    settings = resumable_config(tmp_path, epochs=12, batch_size=2, checkpoint_every="auto")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(settings))
    process = start(path)
    run_dir = wait_for_rows(tmp_path / "runs", 2, process)
    for sig in signals:
        os.kill(process.pid, sig)
        time.sleep(0.002)
    assert process.wait(timeout=60) == 130
    summary = yaml.safe_load((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert (run_dir / "model.npz").exists() and (run_dir / "checkpoint.npz").exists()
    resumed = CliRunner().invoke(app, ["train", "--resume", str(run_dir), "--quiet"])
    assert resumed.exit_code == 0 and "resuming from the checkpoint inside epoch" in resumed.output
    assert_same_run(train(settings).run_dir, run_dir)


# Run `autobp train` and SIGKILL it from inside the fsync of its N-th checkpoint.npz write, after cutting what that
# write put on disk to half: a kill at a known instant in the middle of the write, with no timing involved.
KILLED_IN_CHECKPOINT = """
import os, signal, sys
from autobp.cli import main

fsync, writes, kill_at = os.fsync, [], int(sys.argv[1])

def dying_fsync(fd):
    if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith((".checkpoint.npz", "checkpoint.npz")):
        writes.append(fd)
        if len(writes) == kill_at:
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    fsync(fd)

os.fsync = dying_fsync
sys.argv = ["autobp", "train", sys.argv[2], "--quiet"]
main()
"""


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one(tmp_path: Path) -> None:
    """SIGKILL in the middle of writing epoch 4's checkpoint: what is on disk is epoch 3's, whole, and resumes."""
    settings = resumable_config(tmp_path)  # a checkpoint every epoch
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(settings))
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_CHECKPOINT, "4", str(path)], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    saved = checkpoint.load(run_dir)  # loads: a whole file
    logged = {row["epoch"]: int(row["step"]) for row in csv.DictReader((run_dir / "metrics.csv").open())}
    assert saved is not None and (saved.epoch, saved.step) == (3, logged["3"])
    (partial,) = run_dir.glob(".checkpoint.npz.*.tmp")  # epoch 4's, cut in half when the process died
    assert partial.stat().st_size < (run_dir / "checkpoint.npz").stat().st_size
    resumed = resume(run_dir)
    assert resumed.status == "completed" and not partial.exists()  # the dead writer's half file is cleared
    assert_same_run(train(settings).run_dir, run_dir)


def test_init_from_starts_from_saved_parameters(tmp_path: Path) -> None:
    first = train(resumable_config(tmp_path, epochs=2))
    warm = resumable_config(tmp_path, epochs=1)
    warm["model"]["init_from"] = str(first.run_dir / "model.npz")
    warm["optimizer"] = {"name": "sgd", "lr": 1e-12}  # a negligible step: the weights stay the loaded ones
    result = train(warm)
    with np.load(first.run_dir / "model.npz") as a, np.load(result.run_dir / "model.npz") as b:
        np.testing.assert_allclose(a["layer0.weight"], b["layer0.weight"], rtol=1e-9)
    wrong = resumable_config(tmp_path, epochs=1)
    wrong["model"] = {"hidden": [5], "init_from": str(first.run_dir / "model.npz")}
    with pytest.raises(DataError, match=r"layer0\.weight has shape \(2, 12\), the network needs \(2, 5\)"):
        train(wrong)
