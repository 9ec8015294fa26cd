"""Sweeps that search: tpe proposes from the study, early_terminate prunes losing trials (`pruned` everywhere),
reproducible with --jobs 1, resumable after SIGKILL, the same on Dask, and a clear error without Optuna."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from conftest import require, write_sweep
from autobp.cli import app
from autobp.common.errors import ConfigError
from autobp.common.text import format_number
from autobp.rundir.status import Status
from autobp.sweeps.executor import LocalExecutor
from autobp.sweeps.plan import plan_sweep
from autobp.sweeps.run import resume_sweep, run_sweep
from autobp.sweeps.table import format_ranking

optuna = require("optuna", "search")

from autobp.sweeps.search import JOURNAL_FILE, Search  # noqa: E402

GOOD_LRS = [0.01, 0.015, 0.02, 0.025, 0.03]  # adam on moons: each learns, smoothly, a bit faster than the last
BAD_LR = 1e-6  # learns nothing


def base_config(tmp_path: Path, epochs: int = 8, **changes) -> dict:
    return {
        "name": "base",
        "seed": 3,
        "data": {"source": "moons", "n_samples": 120, "noise": 0.15},
        "model": {"hidden": [8], "activation": "tanh"},
        "loss": "cross_entropy",
        "optimizer": {"name": "adam", "lr": 0.05},
        "training": {"epochs": epochs, "batch_size": 32, "checkpoint_every": None},
        "output": {"dir": str(tmp_path / "runs")},
        **changes,
    }


def tpe_sweep(tmp_path: Path, n_trials: int = 8, pruner: str = "asha", epochs: int = 8, **base) -> Path:
    return write_sweep(
        tmp_path,
        {"optimizer.lr": {"min": 1e-5, "max": 0.5, "log": True}, "model.hidden": [[4], [8, 8]]},
        base=base_config(tmp_path, epochs, **base), method="tpe", n_trials=n_trials, seed=4,
        early_terminate={"method": pruner, "min_epochs": 2, "reduction_factor": 2},
    )  # fmt: skip


def read_trials(directory: Path) -> list[dict[str, str]]:
    with open(directory / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def without_times(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{key: value for key, value in row.items() if key not in ("seconds", "run_dir")} for row in rows]


@pytest.fixture(scope="module")
def pool():
    with LocalExecutor(1) as executor:
        yield executor


# --- the search ---------------------------------------------------------------------------------------------------


def _distances(folder: Path, method: str, seed: int, trials: int = 20) -> list[float]:
    """How far (in decades) each learning rate a study proposes lies from the best of f(lr) = (log10 lr + 2)², the
    study told each result."""
    settings = {"method": method, "seed": seed, "parameters": {"optimizer.lr": {"min": 1e-6, "max": 1.0, "log": True}}}
    folder.mkdir()
    study = Search(folder, settings, "min", max_epochs=1)
    distances = []
    for index in range(trials):
        distance = abs(math.log10(study.start(f"trial-{index:03d}", index)["optimizer.lr"]) + 2)
        study.finish(f"trial-{index:03d}", Status.COMPLETED, distance**2)
        distances.append(distance)
    return distances


def test_tpe_proposes_near_the_best_results_where_random_does_not(tmp_path):
    for seed in range(3):
        tpe = _distances(tmp_path / f"tpe-{seed}", "tpe", seed)
        random = _distances(tmp_path / f"random-{seed}", "random", seed)
        # After TPE's 10 random start-up trials, its proposals come from the results: closer to the best.
        assert np.mean(tpe[10:]) < np.mean(random[10:]) / 2


def test_a_tpe_sweep_proposes_from_the_study_and_records_it_in_the_sweep_directory(tmp_path, pool):
    result = run_sweep([tpe_sweep(tmp_path, n_trials=6)], executor=pool, jobs=1)
    assert len(result.sweep.trials) == 6 and result.exit_code == 0
    journal = result.directory / JOURNAL_FILE
    study = optuna.load_study(study_name="sweep", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))  # fmt: skip
    by_name = {trial.user_attrs["trial"]: trial for trial in study.trials}
    recorded = yaml.safe_load((result.directory / "sweep.yaml").read_text())["trials"]
    for record, trial, outcome in zip(recorded, result.sweep.trials, result.outcomes):
        asked = by_name[trial.name]
        assert record["values"] == trial.values
        assert asked.params["optimizer.lr"] == trial.values["optimizer.lr"] == trial.config["optimizer"]["lr"]
        assert json.loads(asked.params["model.hidden"]) == trial.values["model.hidden"]
        assert asked.state.name.lower() == {"completed": "complete", "pruned": "pruned"}[outcome.status]
        assert max(asked.intermediate_values, default=0) <= outcome.epochs


def test_every_value_is_checked_before_the_first_trial(tmp_path):
    path = write_sweep(tmp_path, {"training.batch_size": {"min": 0, "max": 16}, "model.activation": ["tanh", "relu"]},
                       base_config(tmp_path),
                       method="tpe", n_trials=3)  # fmt: skip
    with pytest.raises(ConfigError, match=r"^check-000 \(training\.batch_size=0, model\.activation=tanh\): "):
        plan_sweep([path])
    path = write_sweep(tmp_path, {"optimizer.lr": {"min": 0.1, "max": 1.0}, "model.activation": ["tanh", "reluu"]},
                       base_config(tmp_path),
                       method="tpe", n_trials=3)  # fmt: skip
    with pytest.raises(ConfigError, match=r"^check-002 \(optimizer\.lr=0\.1, model\.activation=reluu\): "):
        plan_sweep([path])
    assert not (tmp_path / "runs").exists()


# --- pruning ------------------------------------------------------------------------------------------------------


def pruning_sweep(tmp_path: Path, method: str = "median") -> Path:
    """Five good trials, a hopeless one, then a better one (ahead of the median at every epoch)."""
    return write_sweep(tmp_path, {"optimizer.lr": [*GOOD_LRS, BAD_LR, 0.04]}, base_config(tmp_path),
                       early_terminate={"method": method, "min_epochs": 3})  # fmt: skip


def test_pruning_stops_the_bad_trial_at_min_epochs_and_no_good_one(tmp_path, pool):
    result = run_sweep([pruning_sweep(tmp_path)], executor=pool, jobs=1)
    statuses = [outcome.status for outcome in result.outcomes]
    assert statuses == ["completed"] * 5 + ["pruned", "completed"]
    bad = result.outcomes[5]
    assert bad.epochs == 3 and bad.summary.steps == 3 * 3  # 96 training rows, batches of 32
    assert len((result.directory / "trial-005" / "metrics.csv").read_text().splitlines()) == 1 + 3
    assert all(outcome.epochs == 8 for outcome in result.outcomes if outcome.status == "completed")
    assert result.exit_code == 0


def test_pruned_shows_in_every_output(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["sweep", str(pruning_sweep(tmp_path)), "--jobs", "1", "--quiet",
                                      "--output-dir", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "(6 completed, 1 pruned)" in result.output
    line = next(line for line in result.output.splitlines() if "trial-005" in line)
    assert line.split()[:3] == ["-", "trial-005", "pruned"] and "stopped at epoch 3 by early_terminate" in line
    (directory,) = (out / "sweeps").iterdir()
    summary = json.loads((directory / "trial-005" / "summary.json").read_text())
    assert (summary["status"], summary["epochs"]) == ("pruned", 3)
    row = read_trials(directory)[5]
    assert (row["status"], row["epochs"], row["reason"]) == ("pruned", "3", "stopped at epoch 3 by early_terminate")
    compared = CliRunner().invoke(app, ["compare", str(directory)])
    assert compared.exit_code == 0 and "pruned" in next(l for l in compared.output.splitlines() if "trial-005" in l)
    listed = CliRunner().invoke(app, ["runs", str(out)])
    assert listed.exit_code == 0 and "6 completed, 1 pruned" in listed.output

    import autobp

    swept = autobp.load_sweep(directory)
    assert list(swept.table["status"]) == ["completed"] * 5 + ["pruned", "completed"]
    assert swept.trials[5].status == "pruned"

    page = html_trials(directory)  # the sweep's page shows the value it was pruned at, as the printed table does
    assert page["rows"]["trial-005"] == ["-", "pruned", format_number(summary["final"]["val_loss"]), "3"]
    assert "pruned trials (rank -) show the val_loss they last reported, at the epoch in `epochs`" in page["notes"]
    assert "beats the winner" not in page["notes"]
    summary["best"]["val_loss"] = {"value": 1e-9, "epoch": 2}  # as if its best epoch had beaten every trial
    (directory / "trial-005" / "summary.json").write_text(json.dumps(summary))
    page = html_trials(directory)
    assert page["rows"]["trial-005"][0] == "-*" and page["rows"]["trial-006"][0] == "1"
    assert "* trial-005 was pruned at epoch 3, but its best_val_loss 1e-09 beats the winner's val_loss" in page["notes"]


def html_trials(directory: Path) -> dict:
    """The sweep page's table (rank, status, monitored value, epochs by trial) and the notes under it."""
    import re
    from html import unescape

    assert CliRunner().invoke(app, ["report", str(directory), "--html"]).exit_code == 0
    text = (directory / "report.html").read_text()
    table = text[text.index('id="section-trials"'):text.index("</table>")]
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        cells = [unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in cells]
        rows[cells[1]] = [cells[0], cells[2], cells[-3], cells[-1]]
    notes = re.search(r'<p class="pruned-notes">(.*?)</p>', text, re.S)
    return {"rows": rows, "notes": unescape(notes.group(1)) if notes else ""}


def test_a_pruned_run_exits_0_and_can_be_resumed_to_the_end(tmp_path):
    from autobp.model.prepare import prepare
    from autobp.training.entry import resume, run

    config, dataset = prepare(base_config(tmp_path, training={"epochs": 6, "batch_size": 32, "checkpoint_every": 1}))
    seen = []

    def prune_at_2(epoch: int, row: dict) -> bool:
        seen.append((epoch, row["val_loss"]))
        return epoch == 2

    result = run(config, dataset, tmp_path, on_epoch=prune_at_2)
    assert (str(result.status), result.exit_code, result.summary.epochs) == ("pruned", 0, 2)
    assert [epoch for epoch, _ in seen] == [1, 2] and seen[-1][1] == result.summary.final["val_loss"]
    assert resume(tmp_path).summary.epochs == 6  # a pruned trial is not finished: --resume trains it on


def test_two_jobs_propose_report_and_prune_at_once(tmp_path):
    with LocalExecutor(2) as two:
        result = run_sweep([tpe_sweep(tmp_path, n_trials=8)], executor=two, jobs=2)
    statuses = [outcome.status for outcome in result.outcomes]
    assert len(statuses) == 8 and set(statuses) == {"completed", "pruned"} and result.exit_code == 0
    # asha with min_epochs 2 and reduction_factor 2 stops trials only at its rungs, epochs 2 and 4 of 8.
    assert {outcome.epochs for outcome in result.outcomes if outcome.status == "pruned"} <= {2, 4}
    asked = resumed_study(result.directory).trials
    assert [trial.user_attrs["trial"] for trial in asked] == [trial.name for trial in result.sweep.trials]
    assert [trial.state.name for trial in asked] == [{"completed": "COMPLETE", "pruned": "PRUNED"}[s] for s in statuses]


# --- reproducible, resumable --------------------------------------------------------------------------------------


def test_a_tpe_sweep_with_pruning_repeats_exactly_with_one_job(tmp_path, pool):
    path = tpe_sweep(tmp_path)
    first = run_sweep([path], output=tmp_path / "a", executor=pool, jobs=1)
    second = run_sweep([path], output=tmp_path / "b", executor=pool, jobs=1)
    assert "pruned" in [outcome.status for outcome in first.outcomes]
    assert without_times(read_trials(first.directory)) == without_times(read_trials(second.directory))
    for trial in first.sweep.trials:
        for name in ("model.npz", "gradients.csv"):
            one, two = first.directory / trial.name / name, second.directory / trial.name / name
            assert one.read_bytes() == two.read_bytes(), (trial.name, name)


def test_a_tpe_sweep_killed_mid_way_resumes_the_study(tmp_path, pool):
    path = tpe_sweep(tmp_path, n_trials=7, pruner="median", epochs=25)
    reference = run_sweep([path], output=tmp_path / "reference", executor=pool, jobs=1)
    command = [sys.executable, "-m", "autobp", "sweep", str(path), "--jobs", "1", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    sweeps = tmp_path / "runs" / "sweeps"

    def ended() -> list[str]:
        rows = [row for folder in sweeps.glob("*") if (folder / "trials.csv").exists() for row in read_trials(folder)]
        return [row["trial"] for row in rows if row["status"] in ("completed", "pruned")]

    try:
        deadline = time.monotonic() + 60
        while len(ended()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the sweep and its worker, with no chance to clean up
        process.wait()
    (directory,) = sweeps.iterdir()
    kept = ended()
    assert 3 <= len(kept) < 7
    before = {name: (directory / name / "summary.json").read_bytes() for name in kept}
    resumed = resume_sweep(directory, executor=pool, jobs=1)
    assert resumed.exit_code == 0 and len(resumed.outcomes) == 7
    assert {name: (directory / name / "summary.json").read_bytes() for name in kept} == before  # not run again
    # The sampler knew the trials that ended, so the resumed sweep proposes and prunes as the uninterrupted one did.
    assert without_times(read_trials(directory)) == without_times(read_trials(reference.directory))
    states = [trial.state.name for trial in resumed_study(directory).trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 7 and set(states) <= {"COMPLETE", "PRUNED", "FAIL"}


def resumed_study(directory: Path):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(directory / JOURNAL_FILE)))
    return optuna.load_study(study_name="sweep", storage=storage)


# --- Dask ---------------------------------------------------------------------------------------------------------


def test_the_same_pruning_sweep_on_a_dask_local_cluster(tmp_path, pool):
    require("distributed", "dask")
    from autobp.sweeps.cluster import DaskExecutor

    path = pruning_sweep(tmp_path, method="asha")
    local = run_sweep([path], output=tmp_path / "local", executor=pool, jobs=1)
    with DaskExecutor(workers=1, local_directory=str(tmp_path / "scratch")) as cluster:
        remote = run_sweep([path], output=tmp_path / "dask", executor=cluster, jobs=1)
    statuses = [outcome.status for outcome in remote.outcomes]
    assert statuses == [outcome.status for outcome in local.outcomes]
    assert statuses[5] == "pruned" and remote.outcomes[5].epochs == 3
    assert without_times(read_trials(remote.directory)) == without_times(read_trials(local.directory))
    # the rows, the header's count and the line saying what their value is
    assert format_ranking(remote).count("pruned") == statuses.count("pruned") + 2


# --- without Optuna -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("keys", "where"), [
    ({"method": "tpe", "n_trials": 2}, ":2:9: method: 'tpe' needs"),
    ({"early_terminate": {"method": "asha"}}, ":3:3: early_terminate: needs"),
])  # fmt: skip
def test_without_optuna_tpe_and_early_terminate_say_what_to_install(tmp_path, monkeypatch, keys, where):
    monkeypatch.setitem(sys.modules, "optuna", None)
    path = write_sweep(tmp_path, {"optimizer.lr": [0.1, 0.2]}, base_config(tmp_path), **keys)
    result = CliRunner().invoke(app, ["sweep", str(path), "--quiet"])
    assert result.exit_code == 2
    assert result.stderr == f"error: {path}{where} Optuna: pip install 'autobp[search]'\n"
    assert not (tmp_path / "runs").exists()


def test_the_example_search_sweep_plans(tmp_path):
    sweep = plan_sweep([Path(__file__).parents[1] / "configs" / "sweep_spirals_tpe.yaml"], output=tmp_path)
    assert (sweep.method, sweep.size, sweep.trials, sweep.searching) == ("tpe", 20, [], True)
    assert len(sweep.probes) == 1 + 1 + 3 + 2  # the first values, lr's max, 3 more widths, 2 more activations


def test_a_study_reopened_fails_what_a_killed_sweep_left_open(tmp_path):
    settings = {"method": "tpe", "seed": 0, "parameters": {"model.hidden": [[4], [8]]}}
    killed = Search(tmp_path, settings, "min", max_epochs=1)
    killed.start("trial-000", 0, {"model.hidden": [8]})  # running when the sweep died
    killed.study.enqueue_trial({"model.hidden": "[4]"})  # enqueued, never asked
    reopened = Search(tmp_path, settings, "min", max_epochs=1)
    assert [trial.state.name for trial in reopened.study.trials] == ["FAIL", "FAIL"]
    assert reopened.start("trial-000", 0, {"model.hidden": [8]}) == {"model.hidden": [8]}  # not the stale [4]
