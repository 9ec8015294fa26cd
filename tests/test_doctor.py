"""`autobp doctor`: the diagnosis's fix and alternatives retrained as short trials, the cures verified by each trial's
own judgement, doctor.json, the command that reproduces the best, and every way it can end."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CONFIGS, DEADLINE, cli, finished, open_file

from autobp.common import files
from autobp.common.text import format_number
from autobp.rundir.doctor import DOCTOR_FILE, as_seen, read_doctor
from autobp.rundir.status import Status
from autobp.rundir.summary import read_summary
from autobp.tools.doctor import run_doctor
from autobp.training.entry import train


def _train(tmp: Path, config: str, *overrides: str) -> Path:
    return train(CONFIGS / config, [*overrides, f"output.dir={tmp}"]).run_dir


@pytest.fixture(scope="module")
def vanishing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/deep_sigmoid.yaml, 8 epochs: eight sigmoid layers, the signal vanishes on its way back."""
    return _train(tmp_path_factory.mktemp("vanishing"), "deep_sigmoid.yaml", "training.epochs=8")


@pytest.fixture(scope="module")
def doctored(vanishing: Path) -> Path:
    run_doctor(vanishing, jobs=2)
    return vanishing


def test_doctor_cures_vanishing_gradients_and_the_command_reproduces_the_best(doctored: Path, tmp_path: Path) -> None:
    record = read_doctor(doctored)
    assert record.status == "completed" and record.cause.kind == "vanishing_gradients"
    # Trials as long as the run, which ended: the run itself is the value before.
    assert record.before_source == "run" and record.epochs == 8
    assert record.before == read_summary(doctored / "summary.json").saved["val_loss"]
    assert {t.role for t in record.treatments} == {"fix", "alternative"}
    best = record.treatments[0]
    assert best.cured and record.best == best.trial and best.diagnosis != "vanishing_gradients"
    assert best.value < record.before - 0.1  # the cure also learns: the moons are separable
    trial = read_summary(doctored / "doctor" / best.trial / "summary.json")
    first = trial.health.diagnoses[0].kind if trial.health.diagnoses else None
    assert first == best.diagnosis and trial.saved["val_loss"] == best.value
    cured = [t.value for t in record.treatments if t.cured]
    assert cured == sorted(cured)  # best first
    # The printed command, run as printed, trains the best trial again, bit for bit.
    words = shlex.split(record.command)
    assert words[:3] == ["autobp", "train", str(doctored / "config.yaml")]
    code, _ = cli("train", *words[2:], "--output-dir", str(tmp_path), "--quiet")
    assert code == 0
    again = read_summary(next(tmp_path.glob("deep-sigmoid-*")) / "summary.json")
    assert again.final == trial.final


def test_doctor_json_is_plain_and_report_shows_the_verified_fixes(doctored: Path) -> None:
    content = json.loads((doctored / DOCTOR_FILE).read_text())
    assert content["status"] == "completed" and content["cause"]["kind"] == "vanishing_gradients"
    assert content["best"] == content["treatments"][0]["trial"] and content["command"].startswith("autobp train ")
    code, text = cli("report", str(doctored))
    assert code == 0 and "Verified fixes" in text and content["command"] in text
    code, text = cli("report", str(doctored), "--format", "json")
    assert json.loads(text)["doctor"]["best"] == content["best"]


def test_a_rerun_keeps_the_trials_that_finished_and_runs_the_others(doctored: Path) -> None:
    before = read_doctor(doctored)
    kept, redone = [t.trial for t in before.treatments]
    started = read_summary(doctored / "doctor" / kept / "summary.json").started
    (doctored / "doctor" / redone / "summary.json").unlink()
    after = run_doctor(doctored, jobs=1).record
    assert read_summary(doctored / "doctor" / kept / "summary.json").started == started
    assert (doctored / "doctor" / redone / "summary.json").is_file()
    assert after.model_dump() == before.model_dump()  # the same numbers: same config and seed


def test_shorter_trials_are_compared_with_the_unchanged_config_at_the_same_length(vanishing: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _copy(vanishing, run)
    record = run_doctor(run, epochs=4, jobs=2).record
    control = next(t for t in record.treatments if t.role == "control")
    assert record.before_source == "control" and record.before == control.value and not control.cured
    assert record.treatments[-1] == control  # last, after every change
    assert "--set training.epochs=4" in record.command


def _copy(source: Path, target: Path) -> None:
    import shutil

    shutil.copytree(source, target, ignore=shutil.ignore_patterns("doctor", DOCTOR_FILE))


def test_doctor_cures_a_diverged_run_from_the_command_line(tmp_path: Path) -> None:
    run = _train(tmp_path, "sine.yaml", "optimizer.name=sgd", "optimizer.lr=10", "training.epochs=6")
    assert read_summary(run / "summary.json").status == "diverged"
    code, text = cli("doctor", str(run), "--jobs", "2", "--quiet")
    record = read_doctor(run)
    assert code == 0 and record.cause.kind in ("exploding_gradients", "learning_rate_high")
    assert record.best is not None and record.treatments[0].status == "completed"
    # Before: the last epoch the run finished before it diverged.
    assert record.before_source == "run" and record.before == read_summary(run / "summary.json").saved["val_loss"]
    assert record.treatments[0].value < 1.0 < 1e6 < record.before
    assert f"val_loss {format_number(record.before)} → {format_number(record.treatments[0].value)}" in text
    assert f"Reproduce: {record.command}" in text


def test_a_healthy_run_has_nothing_to_treat(tmp_path: Path) -> None:
    run = _train(tmp_path, "xor.yaml", "training.epochs=30")
    assert not read_summary(run / "summary.json").health.diagnoses
    code, text = cli("doctor", str(run))
    assert code == 0 and "no diagnosis" in text
    assert not (run / DOCTOR_FILE).exists() and not (run / "doctor").exists()


@pytest.mark.parametrize("name, damage", [
    ("summary.json", None), ("summary.json", "{not json"), ("config.yaml", None), ("config.yaml", "model: [1, 2"),
    ("gradients.csv", None), ("gradients.csv", "step,layer,grad_norm_w\n1,layer0,abc\n2,layer0,1.0\n"),
])  # fmt: skip
def test_a_damaged_run_directory_is_exit_2_naming_the_file(vanishing: Path, tmp_path: Path, name: str, damage: str | None) -> None:
    run = tmp_path / "run"
    _copy(vanishing, run)
    if damage is None:
        (run / name).unlink()
    else:
        (run / name).write_text(damage)
    code, text = cli("doctor", str(run))
    assert code == 2 and str(run / name) in text and "error:" in text
    assert not (run / "doctor").exists()


def _start_doctor(vanishing: Path, run: Path) -> subprocess.Popen:
    """`autobp doctor` on a copy of the run, with trials far longer than the run (none can finish), once a trial has
    logged its first epochs."""
    _copy(vanishing, run)
    process = subprocess.Popen([sys.executable, "-m", "autobp", "doctor", str(run), "--epochs", "100000", "-j", "2", "-q"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + DEADLINE
    while not [log for log in run.glob("doctor/trial-*/metrics.csv") if len(log.read_text().splitlines()) > 2]:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    return process


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_signalled_doctor_records_the_truth_and_a_rerun_finishes(vanishing: Path, tmp_path: Path, sig: int) -> None:
    run = tmp_path / "run"
    process = _start_doctor(vanishing, run)
    process.send_signal(sig)
    code, text = finished(process)
    assert code == 130 and "interrupted" in text
    record = read_doctor(run)
    assert record.status == "interrupted" and record.best is None
    # Two of the three trials (two changes and the control) ran on two jobs; trials far longer than the run, so that
    # none can finish before the signal.
    statuses = [t.status for t in sorted(record.treatments, key=lambda t: t.trial)]
    assert statuses == ["interrupted", "interrupted", "pending"]
    assert [row["status"] for row in files.read_rows(run / "doctor" / "trials.csv")] == statuses
    code, text = cli("report", str(run))  # the trial that never started has no judgement: not `none`
    assert code == 0 and re.search(r"\bpending +- +- +no$", text, re.MULTILINE), text
    assert not re.search(r"\bnone +no$", text, re.MULTILINE), text  # nor do the interrupted trials
    # Run again (here with shorter trials, so that they change): the interrupted trials run anew and finish.
    code, _ = cli("doctor", str(run), "--epochs", "3", "-q")
    assert code == 0 and read_doctor(run).status == "completed"
    assert {t.status for t in read_doctor(run).treatments} <= {"completed", "stopped_early"}


def test_a_killed_doctor_leaves_resumable_files_and_a_rerun_finishes(vanishing: Path, tmp_path: Path) -> None:
    """SIGKILL gives doctor no chance to write: doctor.json keeps saying `running`, as documented, its sweep's
    workers end their trials (interrupted, resumable) and release the lock, and running doctor again finishes."""
    run = tmp_path / "run"
    process = _start_doctor(vanishing, run)
    process.kill()
    process.communicate(timeout=DEADLINE)  # the workers share its pipes: this returns once they have exited too
    record = read_doctor(run)
    assert record.status == "running" and record.best is None
    statuses = [row["status"] for row in files.read_rows(run / "doctor" / "trials.csv")]
    assert statuses == ["interrupted", "interrupted", "pending"]
    shown = as_seen(run, record)  # what report shows: no process runs this doctor, and its trials say what they are
    assert shown.status == "killed" and sorted(t.status for t in shown.treatments) == sorted(statuses)
    code, out = cli("report", str(run))
    assert code == 0 and f"doctor killed: not every trial finished; `autobp doctor {run}` finishes them" in out
    assert not re.search(r"\bnone +no$", out, re.MULTILINE), out  # no trial it left was judged
    code, _ = cli("doctor", str(run), "--epochs", "3", "-q")
    assert code == 0 and read_doctor(run).status == "completed" and read_doctor(run).best is not None
    assert {t.status for t in read_doctor(run).treatments} <= {"completed", "stopped_early"}


def test_the_html_report_shows_the_verified_fixes(doctored: Path, browser: object) -> None:
    record = read_doctor(doctored)
    code, _ = cli("report", str(doctored), "--html")
    assert code == 0
    opened = open_file(browser, doctored / "report.html")
    section = opened.page.locator("#verified-fixes")
    assert section.is_visible()
    rows = section.locator("tbody tr")
    assert rows.count() == len(record.treatments)
    best = record.treatments[0]
    cells = [rows.nth(0).locator("td").nth(i).inner_text() for i in range(7)]
    assert best.cured and cells[0] == "1" and cells[1] == best.role and cells[6] == "yes"
    assert cells[4] == format_number(best.value) and "relu" in cells[2]
    assert section.locator("pre.command").inner_text() == record.command
    assert opened.requests == [] and opened.errors == []


def test_the_python_api_returns_doctor_json(doctored: Path, tmp_path: Path) -> None:
    import autobp

    record = autobp.doctor(doctored)  # every trial finished before: nothing runs again
    assert record == read_doctor(doctored) and record.cures[0].trial == record.best
    assert autobp.load_run(doctored).report().doctor == record
    healthy = _train(tmp_path, "xor.yaml", "training.epochs=30")
    assert autobp.doctor(healthy) is None


def test_a_run_still_training_is_refused(vanishing: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _copy(vanishing, run)
    with files.exclusive(run) as taken:  # how `train` holds the run directory it trains
        assert taken
        summary = read_summary(run / "summary.json").model_copy(update={"status": Status.RUNNING})
        files.write_json(run / "summary.json", summary.to_dict())
        code, text = cli("doctor", str(run))
    assert code == 2 and "still training" in text and not (run / DOCTOR_FILE).exists()


def test_a_diagnosis_that_proposes_no_change_leaves_nothing_to_try(vanishing: Path, tmp_path: Path, monkeypatch) -> None:
    from autobp.rundir.summary import Diagnosis, Health
    from autobp.tools import doctor

    run = tmp_path / "run"
    _copy(vanishing, run)
    told = Diagnosis(kind="vanishing_gradients", layer=None, message="m",
                     suggestion="no config change can be proposed: a reason")  # fmt: skip
    monkeypatch.setattr(doctor, "judge", lambda log: Health(diagnoses=[told]))
    code, text = cli("doctor", str(run))
    assert code == 0 and "nothing to try: no config change can be proposed: a reason" in text
    assert not (run / DOCTOR_FILE).exists() and not (run / "doctor").exists()


def test_a_second_doctor_on_the_same_run_is_refused_and_touches_nothing(doctored: Path) -> None:
    before = (doctored / DOCTOR_FILE).read_bytes()
    with files.exclusive(doctored / "doctor") as taken:  # how a running doctor (its sweep) holds the folder
        assert taken
        code, text = cli("doctor", str(doctored))
    assert code == 2 and "another autobp process is running" in text
    assert (doctored / DOCTOR_FILE).read_bytes() == before
