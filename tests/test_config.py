"""The config schema: defaults, the `hidden` shorthand, strict types and cross-field checks."""

import pytest

from autobp.common.errors import ConfigError
from autobp.config.catalog import task_of_loss
from autobp.config.models import Config, ConstantSchedule, CosineSchedule, StepSchedule
from autobp.config.configfile import config_from_dict


def make(**sections) -> dict:
    """A minimal valid config dict, with sections replaced or added."""
    return {"data": {"source": "xor"}, "model": {"hidden": [4]}, "loss": "cross_entropy", **sections}


def problem_lines(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(raw)
    return str(caught.value).splitlines()


def test_minimal_config_fills_every_default():
    config = config_from_dict(make())
    assert (config.name, config.seed, config.data.task, config.data.val_fraction) == ("run", 0, "auto", 0.2)
    assert (config.optimizer.name, config.optimizer.lr, config.optimizer.eps) == ("adam", 0.01, 1e-8)
    assert config.optimizer.schedule == ConstantSchedule()
    assert (config.training.epochs, config.training.batch_size, config.training.log_every) == (100, 32, "auto")
    assert config.training.dtype == "float64"
    assert config.output.dir == "runs"


def test_hidden_shorthand_expands_into_layers():
    config = config_from_dict(make(model={"hidden": [8, 5], "activation": "relu", "init": "he"}))
    layers = [(layer.units, layer.activation, layer.init, layer.dropout) for layer in config.model.layers]
    assert layers == [(8, "relu", "he", 0.0), (5, "relu", "he", 0.0), (None, "identity", "he", 0.0)]
    assert config.model.hidden is None


def test_empty_hidden_list_is_a_single_output_layer():
    config = config_from_dict(make(model={"hidden": []}))
    assert [(layer.units, layer.activation) for layer in config.model.layers] == [(None, "identity")]


def test_explicit_layers_take_model_defaults_unless_they_name_their_own():
    model = {
        "activation": "sigmoid",
        "init": "lecun",
        "layers": [{"units": 3}, {"units": 2, "activation": "elu", "init": "normal", "dropout": 0.5}, {"units": 2}],
    }
    layers = config_from_dict(make(model=model)).model.layers
    assert [(layer.activation, layer.init) for layer in layers] == [
        ("sigmoid", "lecun"), ("elu", "normal"), ("identity", "lecun")
    ]
    assert layers[1].dropout == 0.5


def test_validating_a_validated_config_changes_nothing():
    config = config_from_dict(make(model={"hidden": [8]}))
    assert Config.model_validate(config.model_dump()) == config


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"init": "he"}, "model: give either model.layers (a list of layers) or model.hidden"),
        ({"hidden": [3], "layers": [{"units": 2}]}, "model.hidden: give either model.layers or model.hidden, not both"),
        ({"layers": [{"activation": "tanh"}, {"units": 2}]}, "model.layers.0.units: required on hidden layers"),
        ({"layers": []}, "model.layers: needs at least 1 item"),
        ({"layers": None}, "model.layers: empty — check the indentation"),
    ],
)
def test_model_shape_errors(model, expected):
    assert any(expected in line for line in problem_lines(make(model=model)))


def test_synthetic_sources_fill_their_documented_defaults():
    spirals = config_from_dict(make(data={"source": "spirals"})).data
    assert (spirals.n_samples, spirals.noise, spirals.n_classes, spirals.n_features) == (1000, 0.05, 2, None)
    blobs = config_from_dict(make(data={"source": "blobs", "n_classes": 4})).data
    assert (blobs.n_samples, blobs.noise, blobs.n_classes, blobs.n_features) == (300, 1.0, 4, 2)
    linear = config_from_dict(make(data={"source": "linear"}, loss="mse")).data
    assert (linear.n_features, linear.n_outputs) == (3, 1)


def test_file_sources_get_no_synthetic_defaults():
    data = config_from_dict(make(data={"source": "csv", "path": "x.csv"})).data
    assert (data.n_samples, data.noise, data.n_classes) == (None, None, None)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"source": "xor", "path": "a.csv"}, "data.path: not used with data.source 'xor' (it takes: n_samples, noise)"),
        ({"source": "xor", "n_classes": 3}, "data.n_classes: not used with data.source 'xor'"),
        ({"source": "spirals", "target": "y"}, "data.target: not used with data.source 'spirals'"),
        ({"source": "npz", "path": "a.npz", "features": ["a"]}, "data.features: not used with data.source 'npz'"),
        ({"source": "csv"}, "data.path: required with data.source 'csv'"),
        ({"source": "csv", "path": "a.csv", "target": "y", "features": ["x", "y"]}, "data.features: 'y' is also in"),
        ({"source": "csv", "path": "a.csv", "target": 3}, "data.target: expected a column name or a non-empty list"),
    ],
)
def test_data_cross_field_errors_name_both_keys(data, expected):
    assert any(expected in line for line in problem_lines(make(data=data)))


def test_all_cross_field_problems_of_a_section_are_reported_together():
    lines = problem_lines(make(data={"source": "xor", "path": "a.csv", "n_classes": 3, "n_outputs": 2}))
    assert lines[0] == "<dict>: 3 problems"
    assert {line.split(": ")[1] for line in lines[1:]} == {"data.path", "data.n_classes", "data.n_outputs"}


@pytest.mark.parametrize("name", ["run", "spirals-tanh_v2.1", "A", "x" * 64])
def test_valid_names(name):
    assert config_from_dict(make(name=name)).name == name


@pytest.mark.parametrize("name", ["../../x", ".hidden", "", "a b", "a/b", "x" * 65])
def test_names_that_could_escape_the_output_folder_are_rejected(name):
    assert any(line.startswith("<dict>: name: use 1-64 letters") for line in problem_lines(make(name=name)))


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"training": {"epochs": True}}, "training.epochs: expected an integer, got true"),
        ({"training": {"epochs": "10"}}, "training.epochs: expected an integer, got '10'"),
        ({"training": {"epochs": 2.5}}, "training.epochs: expected an integer, got 2.5"),
        ({"optimizer": {"lr": None}}, "optimizer.lr: expected a number, got null"),
        ({"optimizer": {"lr": False}}, "optimizer.lr: expected a number, got false"),
        ({"optimizer": {"lr": float("inf")}}, "optimizer.lr: expected a finite number, got inf"),
        ({"data": {"source": "xor", "standardize": "yes please"}}, "data.standardize: expected true or false"),
        ({"optimizer": {"momentum": 1}}, "optimizer.momentum: must be < 1, got 1"),
        ({"optimizer": {"rho": 0}}, "optimizer.rho: must be > 0, got 0"),
        ({"seed": -1}, "seed: must be >= 0, got -1"),
        ({"data": {"source": "xor", "n_samples": 3}}, "data.n_samples: must be >= 4, got 3"),
        ({"training": {"log_every": "sometimes"}}, "training.log_every: expected 'auto' or an integer >= 1"),
    ],
)
def test_types_are_strict_and_ranges_checked(section, expected):
    assert any(expected in line for line in problem_lines(make(**section)))


def test_integers_are_accepted_where_numbers_are_expected():
    config = config_from_dict(make(optimizer={"lr": 1, "clip_grad_norm": 5}))
    assert (config.optimizer.lr, config.optimizer.clip_grad_norm) == (1.0, 5.0)
    assert isinstance(config.optimizer.lr, float)


def test_schedules_are_chosen_by_name_with_their_own_defaults():
    step = config_from_dict(make(optimizer={"schedule": {"name": "step"}})).optimizer.schedule
    assert step == StepSchedule(step_size=10, gamma=0.1)
    cosine = config_from_dict(make(optimizer={"schedule": {"name": "cosine", "t_max": 50}})).optimizer.schedule
    assert cosine == CosineSchedule(min_lr=0.0, t_max=50)


def test_a_schedule_rejects_the_parameters_of_another():
    lines = problem_lines(make(optimizer={"schedule": {"name": "exponential", "step_size": 3}}))
    assert "optimizer.schedule.step_size: unknown key (allowed: name, gamma)" in lines[0]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"data": {"source": "xor", "task": "regression"}},
         "data.task: 'regression' contradicts loss 'cross_entropy', a classification loss"),
        ({"loss": "mse", "data": {"source": "xor", "task": "classification"}},
         "data.task: 'classification' contradicts loss 'mse', a regression loss"),
        ({"loss": "bce", "model": {"layers": [{"units": 4}, {"units": 2}]}},
         "model.layers.1.units: loss 'bce' needs exactly 1 output unit"),
        ({"model": {"layers": [{"units": 4}, {"units": 1}]}},
         "model.layers.1.units: loss 'cross_entropy' needs one output unit per class"),
        ({"data": {"source": "csv", "path": "a.csv", "target": ["a", "b"]}},
         "data.target: lists 2 columns, but loss 'cross_entropy' needs one column of class labels"),
        ({"training": {"early_stopping": {}}, "data": {"source": "xor", "val_fraction": 0}},
         "training.early_stopping.monitor: 'val_loss' needs a validation split, but data.val_fraction is 0"),
        ({"training": {"early_stopping": {"monitor": "val_r2"}}},
         "training.early_stopping.monitor: 'val_r2' needs a regression loss, but the loss is a classification loss"),
        ({"loss": "huber", "training": {"early_stopping": {"monitor": "val_accuracy"}}},
         "training.early_stopping.monitor: 'val_accuracy' needs a classification loss"),
    ],
)
def test_loss_must_fit_task_output_and_monitor(changes, expected):
    assert any(expected in line for line in problem_lines(make(**changes)))


def test_each_loss_implies_its_task():
    assert [task_of_loss(loss) for loss in ("mse", "mae", "huber", "cross_entropy", "bce")] == [
        "regression", "regression", "regression", "classification", "classification"
    ]


def test_a_train_loss_monitor_needs_no_validation_split():
    raw = make(training={"early_stopping": {"monitor": "train_loss"}}, data={"source": "xor", "val_fraction": 0})
    assert config_from_dict(raw).training.early_stopping.monitor == "train_loss"
