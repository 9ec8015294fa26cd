"""A corpus of broken configs: each one, run through `autobp validate`, exits 2 with a message that names the key
or the place in the file, and never shows a traceback."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from autobp.cli import app

GOOD = """\
data:
  source: xor
model:
  hidden: [4]
loss: cross_entropy
"""
IRIS = "a,b,species\n" + "".join(f"{i},{i % 7},{['x', 'y', 'z'][i % 3]}\n" for i in range(30))


def case(name: str, config: str, *expected: str, overrides: tuple[str, ...] = (), files: dict[str, str] | None = None):
    return pytest.param(config, expected, overrides, files or {}, id=name)


CASES = [
    # typos, with a suggestion
    case("top-level typo", GOOD + "optimiser: {lr: 0.1}\n",
         "config.yaml:6:1: optimiser: unknown key — did you mean 'optimizer'?"),
    case("nested typo", GOOD.replace("hidden: [4]", "layers: [{units: 4, activaton: relu}, {}]"),
         "config.yaml:4:23: model.layers.0.activaton: unknown key — did you mean 'activation'?"),
    case("unknown activation", GOOD.replace("[4]", "[4]\n  activation: rleu"),
         "config.yaml:5:15: model.activation: 'rleu' is not allowed (allowed: identity, sigmoid, tanh, relu",
         "did you mean 'relu'?"),
    case("unknown loss", GOOD.replace("cross_entropy", "cross_entropi"),
         "config.yaml:5:7: loss: 'cross_entropi' is not allowed", "did you mean 'cross_entropy'?"),
    case("unknown optimizer", GOOD + "optimizer: {name: adamm}\n",
         "config.yaml:6:19: optimizer.name: 'adamm' is not allowed", "did you mean 'adam'?"),
    case("unknown source", GOOD.replace("xor", "spiral"),
         "config.yaml:2:11: data.source: 'spiral' is not allowed", "did you mean 'spirals'?"),
    case("unknown schedule", GOOD + "optimizer:\n  schedule: {name: cosin}\n",
         "config.yaml:7:20: optimizer.schedule.name: 'cosin' is not allowed", "did you mean 'cosine'?"),
    # wrong types and values out of range
    case("text for an integer", GOOD + "training: {epochs: many}\n",
         "config.yaml:6:20: training.epochs: expected an integer, got 'many'"),
    case("bool for a number", GOOD + "optimizer: {lr: true}\n",
         "config.yaml:6:17: optimizer.lr: expected a number, got true"),
    case("nothing for a number", GOOD + "optimizer:\n  lr:\n",
         "config.yaml:7:6: optimizer.lr: expected a number, got null"),
    case("dropout out of range", GOOD.replace("hidden: [4]", "layers: [{units: 4, dropout: 1.5}, {}]"),
         "config.yaml:4:32: model.layers.0.dropout: must be < 1, got 1.5"),
    case("negative learning rate", GOOD + "optimizer: {lr: -1e-3}\n",
         "optimizer.lr: must be > 0, got -0.001"),
    case("val_fraction too large", GOOD.replace("source: xor", "source: xor\n  val_fraction: 0.95"),
         "config.yaml:3:17: data.val_fraction: must be <= 0.9, got 0.95"),
    case("unsafe name", "name: ../../etc\n" + GOOD,
         "config.yaml:1:7: name: use 1-64 letters, digits, '.', '_' or '-', not starting with '.', got '../../etc'"),
    # structure
    case("missing loss", GOOD.replace("loss: cross_entropy\n", ""), "config.yaml:1:1: loss: required key is missing"),
    case("layers and hidden", GOOD.replace("[4]", "[4]\n  layers: [{units: 3}]"),
         "config.yaml:4:3: model.hidden: give either model.layers or model.hidden, not both"),
    case("path for a synthetic source", GOOD.replace("source: xor", "source: xor\n  path: data.csv"),
         "config.yaml:3:3: data.path: not used with data.source 'xor' (it takes: n_samples, noise)"),
    case("n_classes for xor", GOOD.replace("source: xor", "source: xor\n  n_classes: 3"),
         "config.yaml:3:3: data.n_classes: not used with data.source 'xor'"),
    case("early stopping without validation",
         GOOD.replace("xor", "xor\n  val_fraction: 0") + "training: {early_stopping: {monitor: val_loss}}\n",
         "training.early_stopping.monitor: 'val_loss' needs a validation split, but data.val_fraction is 0"),
    # YAML itself
    case("bad YAML", GOOD + "optimizer: {lr: [0.1}\n", "config.yaml:6:21: invalid YAML"),
    case("tab indentation", GOOD.replace("  source", "\tsource"),
         "config.yaml:2:1: tabs are not allowed for indentation in YAML — use spaces"),
    case("duplicate key", GOOD + "loss: mse\n",
         "config.yaml:6:1: loss: duplicate key (also on line 5) — keep only one"),
    case("empty section", GOOD.replace("model:\n  hidden: [4]\n", "model:\nhidden: [4]\n"),
         "config.yaml:3:1: model: empty — check the indentation of the lines below it",
         "config.yaml:4:1: hidden: unknown key"),
    case("empty file", "", "config.yaml: the file is empty"),
    case("list at the top", "- data: {source: xor}\n- loss: mse\n",
         "config.yaml:1:1: the top level must be a mapping (data:, model:, loss: ...), not a list"),
    case("python tag", GOOD + "name: !!python/object/apply:os.system [echo hacked]\n",
         "config.yaml:6:7: tag '!!python/object/apply:os.system' is not allowed"),
    case("alias bomb", "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{letter}: &{letter} [{', '.join([f'*{previous}'] * 10)}]\n" for previous, letter in zip("abcde", "bcdef")),
         "config.yaml: aliases expand the document to ", " values (limit 100,000)"),
    # loss, task and output against each other and the data
    case("task contradicts loss", GOOD.replace("source: xor", "source: xor\n  task: regression"),
         "config.yaml:3:3: data.task: 'regression' contradicts loss 'cross_entropy', a classification loss"),
    case("classification loss on a regression source", GOOD.replace("xor", "sine"),
         "loss: 'cross_entropy' needs class labels, but data.source 'sine' has non-integer values"),
    case("bce with three classes", GOOD.replace("xor", "blobs").replace("cross_entropy", "bce"),
         "loss: 'bce' needs exactly 2 classes, but the data has 3"),
    case("output units do not fit",
         GOOD.replace("xor", "blobs").replace("hidden: [4]", "layers: [{units: 4}, {units: 2}]"),
         "model.layers.1.units: 2 output units, but the data has 3 classes"),
    case("regression loss on text labels", "data: {source: csv, path: iris.csv}\nmodel: {hidden: []}\nloss: mse\n",
         "iris.csv:2: column 'species': 'x' is not a number — loss 'mse' needs numeric targets",
         files={"iris.csv": IRIS}),
    # data files
    case("missing data file", "data: {source: csv, path: nowhere/d.csv}\nmodel: {hidden: []}\nloss: mse\n",
         "data.path: file not found: ", "nowhere/d.csv"),
    case("non-numeric CSV value", "data: {source: csv, path: d.csv}\nmodel: {hidden: []}\nloss: mse\n",
         "d.csv:3: column 'b': 'abc' is not a number", files={"d.csv": "a,b,y\n1,2,3\n4,abc,6\n"}),
    case("missing CSV target column", "data: {source: csv, path: iris.csv, target: label}\nmodel: {hidden: []}\n"
         "loss: cross_entropy\n", "data.target: no column 'label'", "(columns: a, b, species)",
         files={"iris.csv": IRIS}),
    case("class with one example", "data: {source: csv, path: d.csv}\nmodel: {hidden: []}\nloss: cross_entropy\n",
         "column 'y' of ", "d.csv: class 'lonely' has only 1 example", files={"d.csv": "x,y\n1,a\n2,a\n3,lonely\n"}),
    # command-line overrides
    case("bad override value", GOOD, "--set optimizer.lr=abc: optimizer.lr: expected a number, got 'abc'",
         overrides=("optimizer.lr=abc",)),
    case("override typo", GOOD, "--set optimizer.lrr=0.1: optimizer.lrr: unknown key — did you mean 'lr'?",
         overrides=("optimizer.lrr=0.1",)),
    case("override index out of range", GOOD, "--set model.hidden.3=8: model.hidden has 1 item, so '3' is not",
         overrides=("model.hidden.3=8",)),
]


@pytest.mark.parametrize(("config", "expected", "overrides", "files"), CASES)
def test_broken_config_exits_2_with_a_clear_message(tmp_path: Path, config, expected, overrides, files):
    (tmp_path / "config.yaml").write_text(config)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    arguments = ["validate", str(tmp_path / "config.yaml")] + [part for item in overrides for part in ("--set", item)]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in expected:
        assert fragment in result.output


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 25


def test_a_missing_config_file_exits_2(tmp_path):
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert (result.exit_code, result.output) == (2, f"error: {tmp_path / 'nope.yaml'}: config file not found\n")
