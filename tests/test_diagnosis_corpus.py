"""The labelled corpus of faults (tests/benchmarks/faults/): its shape, and a fast subset trained for real — each sick
config's first diagnosis is its labelled cause, every diagnosis's fix and alternatives are valid `--set` changes of
the run's own config that read back exactly, and the first fix repairs the run. The whole corpus is measured by
tests/benchmarks/bench_diagnosis.py."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from autobp.health import describe_change
from autobp.rundir.summary import Diagnosis, read_summary
from autobp.config.catalog import OPTIMIZERS
from autobp.config.configfile import load_config
from autobp.config.overrides import override_arguments

sys.path.insert(0, str(Path(__file__).resolve().parent / "benchmarks"))
from bench_diagnosis import FAULTS, HEALTHY, load_labels, reached, train_case  # noqa: E402

KINDS = ("vanishing_gradients", "exploding_gradients", "dead_units", "saturated_units", "learning_rate_high",
         "learning_rate_low", "overfitting", "underfitting", "not_converged", "gradient_noise")  # fmt: skip
# A few seconds each, one per family of cause: the learning rate, the start, the units, the fit, the batch; and
# controls (one with the instruments on).
FAST = ["lr_high_sgd50_blobs", "lr_low_rmsprop_wine", "unstandardized_sigmoid_wine", "narrow_relu_blobs",
        "tiny_circles", "short_sgd_moons", "noise_momentum_circles", "ok_iris", "ok_iris_instruments"]  # fmt: skip


def test_the_corpus_covers_every_kind_data_set_depth_and_optimizer() -> None:
    labels = load_labels()
    sick = {name: label for name, label in labels.items() if label["cause"] != HEALTHY}
    assert len(sick) >= 40 and len(labels) - len(sick) >= 10
    assert {label["cause"] for label in sick.values()} == set(KINDS)
    configs = [yaml.safe_load((FAULTS / f"{name}.yaml").read_text()) for name in labels]
    sources = {c["data"].get("path", c["data"]["source"]).rsplit("/", 1)[-1] for c in configs}
    assert {"iris.csv", "wine.csv"} <= sources and len(sources) >= 6
    depths = {len(c["model"]["hidden"]) for c in configs}
    assert min(depths) == 0 and max(depths) == 10  # 1 to 11 layers, output included
    assert {c["optimizer"]["name"] for c in configs} == set(OPTIMIZERS)
    assert len({c["training"]["batch_size"] for c in configs}) >= 4
    for name, label in sick.items():  # every label names a textbook fix and a target in the metric's direction
        assert label["textbook"] and label["metric"].startswith("val_") and label["why"], name


def check_changes(run_dir: Path, diagnosis: Diagnosis) -> None:
    """The fix and every alternative: valid `--set` changes of the run's config.yaml, read back value for value, that
    change something; the suggestion is written from them."""
    original = load_config(run_dir / "config.yaml")
    assert diagnosis.fix, diagnosis
    assert diagnosis.suggestion.startswith(f"set {describe_change(diagnosis.fix)}")
    for change in [diagnosis.fix, *diagnosis.alternatives]:
        assert describe_change(change) in diagnosis.suggestion
        changed = load_config(run_dir / "config.yaml", override_arguments(change))
        assert changed != original, (diagnosis.kind, change)
        dumped = changed.model_dump(mode="json")
        for key, value in change.items():
            assert_contains(value_at(dumped, key), value, key)


def value_at(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[int(part)] if re.fullmatch(r"\d+", part) else data[part]
    return data


def assert_contains(found: Any, wanted: Any, key: str) -> None:
    """`wanted` as it was set: mappings and lists of mappings may have gained the defaults of their other keys."""
    if isinstance(wanted, dict):
        for name, value in wanted.items():
            assert_contains(found[name], value, f"{key}.{name}")
    elif isinstance(wanted, list):
        assert len(found) == len(wanted), key
        for index, (item, value) in enumerate(zip(found, wanted)):
            assert_contains(item, value, f"{key}.{index}")
    else:
        assert found == wanted and type(found) is type(wanted), (key, found, wanted)


@pytest.mark.parametrize("name", FAST)
def test_a_fault_is_named_first_and_its_fix_repairs_it(name: str, tmp_path: Path) -> None:
    label = load_labels()[name]
    result = train_case(name, tmp_path)
    if label["cause"] == HEALTHY:
        assert result.sick.kinds == [] and reached(result.sick.value, label)
        return
    assert result.sick.kinds[0] == label["cause"]
    assert not reached(result.sick.value, label) and reached(result.textbook.value, label)  # the label holds
    assert reached(result.repair.value, label) and result.repair.kinds[:1] != [label["cause"]]
    runs = [path.parent for path in tmp_path.glob("*/summary.json")]
    assert len(runs) == 3  # sick, textbook, repaired: every diagnosis of each offers valid changes
    for run_dir in runs:
        diagnoses = read_summary(run_dir / "summary.json").health.diagnoses
        for diagnosis in diagnoses:
            check_changes(run_dir, diagnosis)
        if diagnoses and diagnoses[0].kind == "learning_rate_high":  # no advice the evidence contradicts
            lr = load_config(run_dir / "config.yaml").optimizer.lr
            changes = [change for d in diagnoses for change in [d.fix, *d.alternatives]]
            assert all(change.get("optimizer.lr", lr) <= lr for change in changes)
