"""Config files: YAML reading, `--set` overrides, error positions, dumping, the JSON Schema and the commands."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS
from typer.testing import CliRunner

from autobp.cli import app
from autobp.common.errors import ConfigError
from autobp.model.dataset import load_dataset
from autobp.model.prepare import resolve_config
from autobp.config.configfile import config_from_dict, dump_config, load_config
from autobp.config.schema import config_json_schema

EXAMPLES = sorted(path for path in CONFIGS.glob("*.yaml") if not path.name.startswith("sweep_"))

MINIMAL = """\
data:
  source: xor
model:
  hidden: [4]
loss: cross_entropy
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    return str(caught.value)


# --- the example configs ----------------------------------------------------------------------------------------


def test_the_examples_are_all_there():
    assert {path.stem for path in EXAMPLES} >= {"quickstart", "xor", "sine", "iris", "deep_sigmoid"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_every_example_validates_with_its_data(path):
    config = load_config(path)
    resolved = resolve_config(config, load_dataset(config))
    assert resolved.model.layers[-1].units is not None
    assert resolved.data.task != "auto"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_every_example_starts_with_the_schema_line_and_a_description(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "# yaml-language-server: $schema=./autobp.schema.json"
    description = [line for line in lines[1:] if line.startswith("#") and len(line) > 2]
    assert len(description) >= 2


def test_deep_sigmoid_example_is_deep_and_sigmoid():
    layers = load_config(CONFIGS / "deep_sigmoid.yaml").model.layers
    assert len(layers) >= 8
    assert {layer.activation for layer in layers[:-1]} == {"sigmoid"}


# --- YAML reading -----------------------------------------------------------------------------------------------


def test_floats_are_read_as_in_yaml_1_2(tmp_path):
    floats = "optimizer: {lr: 1e-3, eps: 1E-7, momentum: .5, clip_grad_norm: 1e2, beta1: +5.e-1}\n"
    path = write(tmp_path, MINIMAL + floats)
    optimizer = load_config(path).optimizer
    assert (optimizer.lr, optimizer.eps, optimizer.momentum) == (1e-3, 1e-7, 0.5)
    assert (optimizer.clip_grad_norm, optimizer.beta1) == (100.0, 0.5)


def test_integers_and_strings_keep_their_yaml_meaning(tmp_path):
    path = write(tmp_path, MINIMAL + "seed: 42\nname: e5\n")
    config = load_config(path)
    assert (config.seed, config.name) == (42, "e5")


def test_relative_data_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    path = write(tmp_path, """\
        data: {source: csv, path: ../data/t.csv}
        model: {hidden: [4], init_from: runs/a/model.npz}
        loss: cross_entropy
        """, name="sub/config.yaml")
    config = load_config(path)
    assert config.data.path == str(tmp_path / "data" / "t.csv")
    assert config.model.init_from == str(tmp_path / "sub" / "runs" / "a" / "model.npz")


def test_dict_configs_resolve_paths_against_base_dir(tmp_path):
    raw = {"data": {"source": "npz", "path": "d.npz"}, "model": {"hidden": []}, "loss": "mse"}
    assert config_from_dict(raw, base_dir=tmp_path).data.path == str(tmp_path / "d.npz")


# --- --set overrides --------------------------------------------------------------------------------------------


def test_overrides_reach_nested_keys_list_items_and_take_yaml_values(tmp_path):
    path = write(tmp_path, """\
        data: {source: xor}
        model:
          layers: [{units: 8}, {units: 8}, {}]
        loss: cross_entropy
        """)
    config = load_config(path, [
        "optimizer.lr=1e-3",
        "model.layers.1.units=64",
        "model.layers.0.activation=relu",
        "training.batch_size=null",
        "optimizer.schedule={name: step, step_size: 5}",
    ])
    assert config.optimizer.lr == 1e-3
    assert [layer.units for layer in config.model.layers] == [8, 64, None]
    assert config.model.layers[0].activation == "relu"
    assert config.training.batch_size is None
    assert (config.optimizer.schedule.name, config.optimizer.schedule.step_size) == ("step", 5)


def test_an_override_can_replace_a_list_and_fill_an_empty_section(tmp_path):
    path = write(tmp_path, "data: {source: xor}\nmodel:\nloss: cross_entropy\n")
    config = load_config(path, ["model.hidden=[16, 16]"])
    assert [layer.units for layer in config.model.layers] == [16, 16, None]


def test_later_overrides_win(tmp_path):
    path = write(tmp_path, MINIMAL)
    assert load_config(path, ["seed=1", "seed=2"]).seed == 2


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer.lr=abc", "--set optimizer.lr=abc: optimizer.lr: expected a number, got 'abc'"),
        ("optimizer.lrr=0.1", "--set optimizer.lrr=0.1: optimizer.lrr: unknown key — did you mean 'lr'?"),
        ("model.hidden.0=0", "--set model.hidden.0=0: model.hidden.0: must be >= 1, got 0"),
        ("model.hidden.5=3", "--set model.hidden.5=3: model.hidden has 1 item, so '5' is not an index of it"),
        ("loss.x=1", "--set loss.x=1: loss is a single value, not a section with keys"),
        ("optimizer.lr", "--set optimizer.lr: expected key.path=value"),
        ("a..b=1", "--set a..b=1: expected key.path=value"),
        ("seed=[1", "--set seed=[1: the value is not valid YAML"),
    ],
)
def test_a_bad_override_is_named_in_the_error(tmp_path, override, expected):
    assert error_of(write(tmp_path, MINIMAL), (override,)).startswith(expected)


def test_override_problems_are_reported_with_the_file_problems(tmp_path):
    path = write(tmp_path, MINIMAL + "optimiser: {}\n")
    assert error_of(path, ("seed=-1",)).splitlines() == [
        f"{path}: 2 problems",
        f"  {path}:6:1: optimiser: unknown key — did you mean 'optimizer'?",
        "  --set seed=-1: seed: must be >= 0, got -1",
    ]


# --- error positions --------------------------------------------------------------------------------------------


def test_every_problem_is_listed_with_its_line_and_column(tmp_path):
    path = write(tmp_path, """\
        data:
          source: spirals
        model:
          layers:
            - {units: 8, activation: rleu}
            - {}
        loss: cross_entropy
        optimizer:
          lr: 0
        optimiser: {lr: 1}
        """)
    assert error_of(path).splitlines() == [
        f"{path}: 3 problems",
        f"  {path}:5:30: model.layers.0.activation: 'rleu' is not allowed (allowed: identity, sigmoid, tanh, relu, "
        "leaky_relu, elu, softplus, sin) — did you mean 'relu'?",
        f"  {path}:9:7: optimizer.lr: must be > 0, got 0",
        f"  {path}:10:1: optimiser: unknown key — did you mean 'optimizer'?",
    ]


def test_a_missing_key_points_at_its_section(tmp_path):
    path = write(tmp_path, "loss: mse\nmodel: {hidden: []}\ndata:\n  noise: 0.1\n")
    assert error_of(path) == f"{path}:3:1: data.source: required key is missing"


def test_duplicate_keys_name_both_lines(tmp_path):
    path = write(tmp_path, MINIMAL + "seed: 1\nseed: 2\n")
    assert error_of(path) == f"{path}:7:1: seed: duplicate key (also on line 6) — keep only one"


def test_a_discriminated_schedule_is_checked_against_its_own_keys(tmp_path):
    path = write(tmp_path, MINIMAL + "optimizer:\n  schedule: {name: step, gama: 0.5}\n")
    assert error_of(path) == f"{path}:7:26: optimizer.schedule.gama: unknown key — did you mean 'gamma'?"


def test_dict_config_errors_name_the_source():
    with pytest.raises(ConfigError, match=r"^sweep point 3: loss: required key is missing$"):
        config_from_dict({"data": {"source": "xor"}, "model": {"hidden": []}}, source="sweep point 3")


def test_alias_bombs_are_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]
    assert "aliases expand the document to" in error_of(write(tmp_path, "\n".join(lines) + "\n"))


def test_recursive_aliases_are_refused(tmp_path):
    assert "recursive documents are not allowed" in error_of(write(tmp_path, "a: &x [1, *x]\n"))


def test_anchors_and_aliases_within_the_limit_work(tmp_path):
    path = write(tmp_path, MINIMAL + "training: &t {epochs: 7}\noutput: {dir: out}\n")
    assert load_config(path).training.epochs == 7


def test_large_files_are_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("#" * 1_000_001)
    assert error_of(path) == f"{path}: 1,000,001 bytes is too large for a config file (limit 1,000,000)"


def test_deeply_nested_yaml_is_an_error_not_a_crash(tmp_path):
    assert error_of(write(tmp_path, "[" * 1000)).endswith("the YAML is nested too deeply")


def test_a_missing_config_file(tmp_path):
    assert error_of(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: config file not found"


# --- dumping ----------------------------------------------------------------------------------------------------


def test_dump_round_trips_through_load(tmp_path):
    config = load_config(CONFIGS / "iris.yaml", ["name='1e3'", "optimizer.eps=1e-10"])
    dumped = write(tmp_path, dump_config(config), name="dumped.yaml")
    assert load_config(dumped) == config


def test_dump_of_a_resolved_config_round_trips(tmp_path):
    config = load_config(CONFIGS / "quickstart.yaml")
    resolved = resolve_config(config, load_dataset(config))
    assert load_config(write(tmp_path, dump_config(resolved))) == resolved


def test_dump_fills_every_default_and_writes_absolute_paths():
    dumped = yaml.safe_load(dump_config(load_config(CONFIGS / "iris.yaml")))
    assert dumped["data"]["path"] == str(CONFIGS / "data" / "iris.csv")
    assert dumped["optimizer"]["schedule"] == {"name": "constant"}
    assert dumped["training"]["log_every"] == "auto"
    assert dumped["model"]["hidden"] is None
    assert [layer["activation"] for layer in dumped["model"]["layers"]] == ["relu", "identity"]


# --- JSON Schema ------------------------------------------------------------------------------------------------


def test_committed_schema_file_is_what_autobp_schema_prints_byte_for_byte():
    printed = subprocess.run([sys.executable, "-m", "autobp", "schema"], capture_output=True, check=True).stdout
    assert printed == (CONFIGS / "autobp.schema.json").read_bytes(), (
        "regenerate it: autobp schema > configs/autobp.schema.json"
    )
    assert json.loads(printed) == config_json_schema()


def test_schema_forbids_unknown_keys_everywhere_and_requires_the_three_sections():
    schema = config_json_schema()
    objects = [schema, *schema["$defs"].values()]
    assert all(definition.get("additionalProperties") is False for definition in objects if "properties" in definition)
    assert sorted(schema["required"]) == ["data", "loss", "model"]
    assert set(schema["properties"]) == {"name", "seed", "data", "model", "loss", "optimizer", "training", "output"}


def test_schema_accepts_every_example_and_rejects_a_typo():
    import jsonschema  # a test dependency (the `test` extra), not a runtime one

    from autobp.config.yamlfile import Loader

    validator = jsonschema.Draft202012Validator(config_json_schema())
    for path in EXAMPLES:
        assert list(validator.iter_errors(yaml.load(path.read_text(), Loader=Loader))) == [], path.name
    typo = yaml.safe_load(MINIMAL + "optimiser: {lr: 0.1}\n")
    assert [error.message for error in validator.iter_errors(typo)] == [
        "Additional properties are not allowed ('optimiser' was unexpected)"
    ]


# --- the commands -----------------------------------------------------------------------------------------------


def test_validate_prints_the_resolved_config():
    result = CliRunner().invoke(app, ["validate", str(CONFIGS / "xor.yaml"), "--set", "seed=3"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)
    assert (printed["seed"], printed["data"]["task"]) == (3, "classification")
    assert printed["model"]["layers"][-1]["units"] == 2


def test_schema_command_prints_the_schema():
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == config_json_schema()


def test_the_command_line_module_does_not_import_numpy_or_pydantic():
    code = "import sys, autobp.cli; print(sorted({'numpy', 'pydantic', 'yaml'} & set(sys.modules)))"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"


def test_errors_reach_the_user_without_a_traceback(tmp_path):
    path = write(tmp_path, MINIMAL + "seed: x\n")
    result = subprocess.run(
        [sys.executable, "-m", "autobp", "validate", str(path)], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr == f"error: {path}:6:7: seed: expected an integer, got 'x'\n"
    assert result.stdout == ""
