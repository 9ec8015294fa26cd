"""`early_terminate: {method: health}`: a sweep's trial judges its own logs at epoch ends and stops on a fatal cause,
with status `pruned` and the diagnosis as its reason; healthy trials train on; combinable with an Optuna pruner."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS

from autobp.common import files
from autobp.common.errors import ConfigError
from autobp.health import fatal_cause
from autobp.health.thresholds import FATAL_KINDS
from autobp.rundir.summary import read_summary
from autobp.sweeps.run import run_sweep
from autobp.sweeps.search import JOURNAL_FILE

DEEP = [16] * 8


def sweep_file(tmp_path: Path, parameters: dict, early: dict | None, **base: object) -> Path:
    """A sweep of configs/xor.yaml (tanh, Adam at 0.05) trained for 12 epochs, with `base` settings changed."""
    config = yaml.safe_load((CONFIGS / "xor.yaml").read_text())
    config["training"]["epochs"] = 12
    for key, value in base.items():
        section, name = key.split("__")
        config[section][name] = value
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(config))
    spec = {"base": "base.yaml", "name": "h", "parameters": parameters, **({"early_terminate": early} if early else {})}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_trial_with_a_learning_rate_far_too_high_is_pruned_at_min_epochs_with_its_diagnosis(tmp_path: Path) -> None:
    path = sweep_file(tmp_path, {"optimizer.lr": [0.05, 5.0]}, {"method": "health", "min_epochs": 3})
    result = run_sweep([path], output=tmp_path, jobs=2)
    healthy, sick = result.outcomes
    assert (healthy.status, healthy.epochs) == ("completed", 12) and result.exit_code == 0
    assert fatal_cause(result.directory / "trial-000") is None  # healthy all along: never a reason to stop
    assert (sick.status, sick.epochs) == ("pruned", 3)
    summary = read_summary(result.directory / "trial-001" / "summary.json")
    cause = summary.health.diagnoses[0]  # the judgement train wrote at the end: the one the trial stopped on
    assert cause.kind == "learning_rate_high" and cause.kind in FATAL_KINDS
    assert summary.reason == f"health at epoch 3: {cause.kind}: {cause.message}"
    rows = files.read_rows(result.directory / "trials.csv")
    assert [row["status"] for row in rows] == ["completed", "pruned"]
    assert rows[1]["reason"] == summary.reason and rows[0]["reason"] == ""
    assert not (result.directory / JOURNAL_FILE).exists()  # no Optuna study: health is judged by the trial itself


def test_vanishing_gradients_are_pruned_and_the_same_network_in_tanh_trains_on(tmp_path: Path) -> None:
    path = sweep_file(tmp_path, {"model.activation": ["tanh", "sigmoid"]}, {"method": "health", "min_epochs": 2},
                      model__hidden=DEEP, optimizer__name="sgd", optimizer__lr=0.1)  # fmt: skip
    result = run_sweep([path], output=tmp_path, jobs=2)
    tanh, sigmoid = result.outcomes
    assert tanh.status == "completed" and tanh.final("val_accuracy") == 1.0
    assert (sigmoid.status, sigmoid.epochs) == ("pruned", 2)
    assert sigmoid.reason.startswith("health at epoch 2: vanishing_gradients: the backpropagated signal")


def test_health_checks_at_doubling_epochs_from_min_epochs(tmp_path: Path) -> None:
    """A trial that is judged healthy at min_epochs is judged again at 2×, 4×, …: here Adam at 0.5 on the deep
    tanh network, whose learning rate shows as too high only after a few epochs."""
    path = sweep_file(tmp_path, {"optimizer.lr": [0.5]}, {"method": "health", "min_epochs": 1},
                      model__hidden=DEEP)  # fmt: skip
    result = run_sweep([path], output=tmp_path, jobs=1)
    (outcome,) = result.outcomes
    assert outcome.status == "pruned" and outcome.epochs in (1, 2, 4, 8)
    assert outcome.reason.startswith(f"health at epoch {outcome.epochs}: ")


def test_health_combines_with_asha_each_pruning_for_its_own_reason(tmp_path: Path) -> None:
    early = {"method": ["health", "asha"], "min_epochs": 2, "reduction_factor": 2}
    path = sweep_file(tmp_path, {"optimizer.lr": [0.05, 5.0, 0.001, 0.002, 0.003]}, early)
    result = run_sweep([path], output=tmp_path, jobs=1)
    statuses = [outcome.status for outcome in result.outcomes]
    assert statuses[0] == "completed" and statuses[1] == "pruned"
    assert result.outcomes[1].reason.startswith("health at epoch 2: learning_rate_high")
    by_asha = [o for o in result.outcomes[2:] if o.status == "pruned"]
    assert by_asha and all(o.reason.endswith("by early_terminate") for o in by_asha)
    assert (result.directory / JOURNAL_FILE).exists()


@pytest.mark.parametrize("method, problem", [
    (["asha", "median"], "combine health with at most one of asha, median, hyperband"),
    (["health", "health"], "lists a method twice"),
    ("helth", "'helth' is not allowed (allowed: health, asha, median, hyperband) — did you mean 'health'?"),
    ([], "at least 1 item"),
])  # fmt: skip
def test_the_sweep_file_checks_early_terminate_methods(tmp_path: Path, method: object, problem: str) -> None:
    path = sweep_file(tmp_path, {"optimizer.lr": [0.05]}, {"method": method})
    with pytest.raises(ConfigError) as caught:
        run_sweep([path], output=tmp_path)
    assert "early_terminate.method" in str(caught.value) and problem in str(caught.value)


@pytest.mark.parametrize("kind, evidence, fatal", [
    ("learning_rate_high", {"update_ratio_median": 0.375, "threshold": 0.1}, False),  # Adam's first steps, loss falls
    ("learning_rate_high", {"update_ratio_median": 3.75, "threshold": 0.1}, True),  # far off
    ("learning_rate_high", {"update_ratio_median": 0.8, "threshold": 0.1, "unstable": True}, True),  # the loss shows it
    ("learning_rate_high", {"update_ratio_max": 7.0, "threshold": 1.0}, True),  # one step moved more than the weights
    ("learning_rate_low", {"update_ratio_median": 5e-5, "threshold": 1e-4}, False),
    ("learning_rate_low", {"update_ratio_median": 5e-6, "threshold": 1e-4}, True),
    ("vanishing_gradients", {}, True), ("dead_units", {}, True), ("saturated_units", {}, True),
    ("exploding_gradients", {}, True), ("overfitting", {}, False), ("not_converged", {}, False),
    ("underfitting", {}, False), ("gradient_noise", {}, False),
])  # fmt: skip
def test_which_causes_are_fatal(kind: str, evidence: dict, fatal: bool) -> None:
    from autobp.health import is_fatal
    from autobp.rundir.summary import Diagnosis

    assert is_fatal(Diagnosis(kind=kind, layer=None, evidence=evidence, message="", suggestion="")) is fatal
