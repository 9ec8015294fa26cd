"""Status: what summary.json may say, and the one rule by which runs and a sweep's trials are read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import autobp
from autobp.common.errors import DataError
from autobp.rundir.reader import read_status
from autobp.rundir.status import Status
from autobp.rundir.summary import read_summary
from autobp.tools.compare import list_runs
from autobp.tools.html_page import STYLE


@pytest.mark.parametrize("state", ["killed", "unfinished", "pending", "invalid"])
def test_summary_json_refuses_a_state_only_a_reader_infers(tmp_path: Path, state: str) -> None:
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"status": state}))
    with pytest.raises(DataError, match=rf"summary.json: unexpected content \(status: .*`{state}` is what a reader"):
        read_summary(path)


def test_summary_json_keeps_each_state_a_run_records_byte_for_byte(tmp_path: Path) -> None:
    for state in ("running", "completed", "stopped_early", "diverged", "interrupted", "failed", "pruned"):
        path = tmp_path / f"{state}.json"
        path.write_text(json.dumps({"status": state}))
        summary = read_summary(path)
        assert summary.status is Status(state) and json.dumps(summary.to_dict()["status"]) == f'"{state}"'


def test_a_sweeps_trials_read_unfinished_and_killed_by_the_rule_runs_do(tmp_path: Path) -> None:
    base = {"name": "tiny", "seed": 0, "data": {"source": "moons", "n_samples": 40}, "model": {"hidden": [4]},
            "loss": "cross_entropy", "training": {"epochs": 1, "batch_size": 20, "checkpoint_every": None}}  # fmt: skip
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "parameters": {"seed": [0, 1, 2]}}))
    sweep = autobp.sweep(tmp_path / "sweep.yaml", output=tmp_path / "runs", jobs=1)
    trials = [trial.path for trial in sweep.trials]
    (trials[0] / "summary.json").unlink()  # killed before it wrote one
    summary = json.loads((trials[1] / "summary.json").read_text())
    (trials[1] / "summary.json").write_text(json.dumps({**summary, "status": "running"}))  # killed mid-training
    assert [read_status(trial) for trial in trials] == ["unfinished", "killed", "completed"]
    listed, _ = list_runs(tmp_path / "runs")
    assert [entry.status for entry in listed] == ["1 unfinished, 1 killed, 1 completed"]


def test_every_state_a_badge_shows_has_its_colour_in_the_pages() -> None:
    classes = set(re.findall(r"\.([a-z_]+)(?=[,{])", STYLE))  # each class a selector names
    assert {state.value for state in Status if state is not Status.INVALID} <= classes  # invalid: never a badge
