"""The Python API mirrors the commands: the numbers of `autobp predict`, the report of `autobp report --format
json`, the config of `autobp validate`, the files of a run and a sweep; errors are the CLI's exceptions and
messages; nothing prints; `import autobp` stays cheap."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import CONFIGS
from typer.testing import CliRunner

import autobp
from autobp.cli import app
from autobp.common.errors import ConfigError, DataError
from autobp.common.text import to_json
from autobp.model.prepare import prepare
from autobp.config.configfile import dump_config, load_config
from autobp.tools.report import render


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def iris(runs: Path) -> Path:
    return autobp.train(CONFIGS / "iris.yaml", ["training.epochs=3"], output=runs).run_dir


@pytest.fixture(scope="module")
def linear(runs: Path) -> Path:
    config = {"data": {"source": "linear", "n_samples": 60, "n_features": 3, "n_outputs": 2}, "loss": "huber",
              "model": {"hidden": [5]}, "training": {"epochs": 2, "dtype": "float32"}}  # fmt: skip
    return autobp.train(config, output=runs).run_dir


@pytest.fixture(scope="module")
def deep_sigmoid(runs: Path) -> Path:
    return autobp.train(CONFIGS / "deep_sigmoid.yaml", ["training.epochs=3"], output=runs).run_dir


def read_csv_text(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    return result.exit_code, result.stdout, result.stderr


def cell(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def assert_records_equal_csv(records: np.recarray, rows: list[dict[str, str]]) -> None:
    """Same columns in the same order, same number of rows, every cell the same value (empty = nan)."""
    assert list(records.dtype.names) == list(rows[0])
    assert len(records) == len(rows)
    for name in records.dtype.names:
        expected = [np.nan if row[name] == "" else cell(row[name]) for row in rows]
        if records[name].dtype.kind in "iuf":
            np.testing.assert_array_equal(records[name], np.array(expected, dtype=float))
        else:
            assert records[name].tolist() == expected


def test_a_run_reads_as_its_files(iris: Path) -> None:
    run = autobp.load_run(iris)
    assert run.config == load_config(iris / "config.yaml")
    assert run.summary.to_dict() == json.loads((iris / "summary.json").read_text())
    assert run.status == run.summary.status == "completed"
    assert run.metrics["epoch"].dtype == np.int64 and run.gradients["layer"].dtype.kind == "U"
    with open(iris / "metrics.csv", newline="") as handle:
        assert_records_equal_csv(run.metrics, list(csv.DictReader(handle)))
    with open(iris / "gradients.csv", newline="") as handle:
        assert_records_equal_csv(run.gradients, list(csv.DictReader(handle)))
    with np.load(iris / "model.npz", allow_pickle=False) as saved:
        assert run.model.keys() == set(saved.files)
        for key in saved.files:
            np.testing.assert_array_equal(run.model[key], saved[key])


@pytest.mark.parametrize("fixture", ["iris", "linear"])
def test_predict_gives_the_numbers_of_autobp_predict(fixture: str, request: pytest.FixtureRequest,
                                                     tmp_path: Path) -> None:  # fmt: skip
    run_dir = request.getfixturevalue(fixture)
    _, dataset = prepare(run_dir / "config.yaml")
    X = dataset.X_val * dataset.x_std + dataset.x_mean
    np.savez(tmp_path / "examples.npz", X=X)
    code, stdout, _ = cli("predict", run_dir, tmp_path / "examples.npz")
    assert code == 0
    expected = read_csv_text(stdout)
    run = autobp.load_run(run_dir)
    assert_records_equal_csv(run.predict(X), expected)
    assert_records_equal_csv(run.predict(tmp_path / "examples.npz"), expected)


def test_report_is_the_data_of_autobp_report_json(deep_sigmoid: Path) -> None:
    report = autobp.load_run(deep_sigmoid).report()
    code, stdout, _ = cli("report", deep_sigmoid, "--format", "json")
    assert code == 0
    assert [d.kind for d in report.diagnoses] == ["vanishing_gradients"]
    (diagnosis,) = json.loads(stdout)["diagnoses"]  # the fix and its alternatives, the same in both
    assert diagnosis["fix"] == report.diagnoses[0].fix and diagnosis["fix"]["model.layers.0.activation"] == "relu"
    assert diagnosis["alternatives"] == report.diagnoses[0].alternatives != []
    assert report.diagnoses[0] == autobp.load_run(deep_sigmoid).summary.health.diagnoses[0]
    assert json.loads(to_json(asdict(report))) == json.loads(stdout)
    assert render(report, "json") + "\n" == stdout


def test_validate_returns_the_config_autobp_validate_prints() -> None:
    config = autobp.validate(CONFIGS / "sine.yaml", ["optimizer.lr=0.003"])
    code, stdout, _ = cli("validate", CONFIGS / "sine.yaml", "--set", "optimizer.lr=0.003")
    assert code == 0
    assert stdout.startswith(dump_config(config)) and stdout.endswith("\n# ok\n")  # then what it found, as comments
    assert config.model.layers[-1].units == 1  # resolved against the data


def error_of(call, *args, **kwargs) -> Exception:
    with pytest.raises((ConfigError, DataError)) as caught:
        call(*args, **kwargs)
    return caught.value


def test_errors_are_the_exceptions_and_messages_the_cli_prints(iris: Path, tmp_path: Path) -> None:
    bad_config = tmp_path / "bad.yaml"
    config = {"data": {"source": "moons"}, "model": {"hidden": [4]}, "loss": "cross_entrop"}
    bad_config.write_text(yaml.safe_dump(config))
    bad_data = tmp_path / "flowers.csv"
    bad_data.write_text("a,b\n1,2\n")
    cases = [
        (ConfigError, error_of(autobp.validate, bad_config), ("validate", bad_config)),
        (DataError, error_of(autobp.load_run, tmp_path), ("report", tmp_path)),
        (DataError, error_of(autobp.load_run(iris).predict, bad_data), ("predict", iris, bad_data)),
        (ConfigError, error_of(autobp.sweep, [bad_config]), ("sweep", bad_config)),
    ]
    for kind, error, command in cases:
        code, _, stderr = cli(*command)
        assert type(error) is kind
        assert (code, stderr) == (2, f"error: {error}\n")
    with pytest.raises(DataError, match=r"not a sweep directory"):
        autobp.load_sweep(iris)


def test_a_sweep_runs_quietly_and_reads_as_its_trials(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    base = {"name": "api", "data": {"source": "xor", "n_samples": 40}, "model": {"hidden": [4]},
            "loss": "cross_entropy", "training": {"epochs": 2, "checkpoint_every": None},
            "output": {"dir": str(tmp_path / "runs")}}  # fmt: skip
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({"base": "base.yaml", "parameters": {"optimizer.lr": [0.1, 0.01]}}))
    sweep = autobp.sweep(sweep_file, jobs=1)
    assert capfd.readouterr() == ("", "")
    assert [run.name for run in sweep.trials] == ["trial-000", "trial-001"]
    with open(sweep.path / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert_records_equal_csv(sweep.table, rows)
    assert sweep.table["optimizer.lr"].tolist() == [0.1, 0.01]
    for run, row in zip(sweep.trials, rows):
        assert run.config.optimizer.lr == float(row["optimizer.lr"])
        assert run.metrics["val_loss"][-1] == float(row["val_loss"])
    again = autobp.load_sweep(sweep.path)
    assert [run.path for run in again.trials] == [run.path for run in sweep.trials]


def test_nothing_prints(iris: Path, capfd: pytest.CaptureFixture) -> None:
    run = autobp.load_run(iris)
    run.predict(np.zeros((2, 4)))
    run.report()
    autobp.validate(CONFIGS / "xor.yaml")
    assert capfd.readouterr() == ("", "")


def test_predict_refuses_an_array_of_the_wrong_shape(iris: Path) -> None:
    expected = r"X must be a finite numeric array of shape \(n, 4\), n ≥ 1; got float64 \(3, 2\)"
    with pytest.raises(DataError, match=expected):
        autobp.load_run(iris).predict(np.zeros((3, 2)))


def test_import_autobp_stays_cheap_and_autobp_sweep_is_the_function() -> None:
    """`autobp.sweep` is the API function; the sweep machinery is the package `autobp.sweeps`."""
    code = ("import sys, autobp; cheap = not {'numpy', 'pydantic', 'autobp.api'} & sys.modules.keys(); "
            "import autobp.sweeps.run; print(cheap, callable(autobp.sweep), autobp.sweep.__module__)")  # fmt: skip
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output == "True True autobp.api\n"
