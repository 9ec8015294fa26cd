"""Data sources, encoding of targets, the seeded split and standardization, and resolving a config with data."""

from pathlib import Path

import numpy as np
import pytest

from autobp.common.errors import ConfigError, DataError
from autobp.model.csvtable import read_table
from autobp.model.dataset import load_dataset
from autobp.model.prepare import resolve_config
from autobp.model.sources import READERS, generates, reads
from autobp.config.catalog import SOURCES
from autobp.config.configfile import config_from_dict
from autobp.config.models import DataConfig

ARRAYS = ("X_train", "y_train", "X_val", "y_val")


def config(data: dict, loss: str = "cross_entropy", seed: int = 0):
    return config_from_dict({"data": data, "model": {"hidden": [8]}, "loss": loss, "seed": seed})


def dataset(data: dict, loss: str = "cross_entropy", seed: int = 0):
    return load_dataset(config(data, loss, seed))


def write_csv(tmp_path: Path, text: str, name: str = "data.csv") -> str:
    """Write a data file; returns its path as the config's data.path."""
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --- the catalog of sources and their readers --------------------------------------------------------------------


def test_every_catalog_source_has_a_reader_and_every_reader_an_entry():
    assert sorted(READERS) == sorted(SOURCES)
    assert all(key in DataConfig.model_fields for source in SOURCES.values() for key in source.keys)


@pytest.mark.parametrize("name", [name for name, source in SOURCES.items() if source.synthetic])
def test_a_synthetic_source_fills_in_its_catalog_defaults(name):
    filled = config({"source": name}, "mse" if name in ("sine", "linear") else "cross_entropy")
    assert {key: getattr(filled.data, key) for key in SOURCES[name].keys} == dict(SOURCES[name].defaults)
    ds = load_dataset(filled)
    assert len(ds.X_train) + len(ds.X_val) == SOURCES[name].defaults["n_samples"]


def test_a_reader_is_refused_without_its_catalog_entry_of_the_same_kind():
    with pytest.raises(ValueError, match="no file source 'parquet' in autobp.config.catalog.SOURCES"):
        reads("parquet")(lambda *_: None)
    with pytest.raises(ValueError, match="no synthetic source 'csv'"):
        generates("csv")(lambda data, rng: None)
    with pytest.raises(ValueError, match="'xor' has a reader already"):
        generates("xor")(lambda data, rng: None)
    assert sorted(READERS) == sorted(SOURCES)


@pytest.mark.parametrize(
    ("source", "key", "what"), [("csv", "path", "the CSV file"), ("npy", "target_path", "the targets file")]
)
def test_a_file_source_names_what_a_missing_key_is(source, key, what):
    with pytest.raises(ConfigError, match=rf"data.{key}: required with data.source '{source}' \({what}\)"):
        config({"source": source, "path": "x.npy"} if key != "path" else {"source": source})


# --- synthetic sources ------------------------------------------------------------------------------------------

# source, loss, n_samples, features, classes (None = regression), targets
SHAPES = [
    ({"source": "xor"}, "cross_entropy", 200, 2, 2, 1),
    ({"source": "moons", "n_samples": 101}, "bce", 101, 2, 2, 1),
    ({"source": "circles"}, "cross_entropy", 200, 2, 2, 1),
    ({"source": "spirals", "n_classes": 3, "n_samples": 300}, "cross_entropy", 300, 2, 3, 1),
    ({"source": "blobs", "n_features": 5}, "cross_entropy", 300, 5, 3, 1),
    ({"source": "sine"}, "mse", 200, 1, None, 1),
    ({"source": "linear", "n_features": 4, "n_outputs": 2}, "huber", 200, 4, None, 2),
]


@pytest.mark.parametrize(
    ("data", "loss", "n", "features", "classes", "targets"), SHAPES, ids=[shape[0]["source"] for shape in SHAPES]
)
def test_synthetic_sources_have_the_documented_shapes(data, loss, n, features, classes, targets):
    ds = dataset(data, loss)
    n_val = len(ds.X_val)
    assert len(ds.X_train) + n_val == n
    assert 0.15 * n <= n_val <= 0.25 * n
    assert ds.X_train.shape[1] == ds.X_val.shape[1] == ds.n_features == features
    assert ds.X_train.dtype == np.float64
    if classes is None:
        assert ds.task == "regression"
        assert (ds.y_train.shape, ds.y_train.dtype) == ((n - n_val, targets), np.float64)
        assert ds.n_outputs == targets and ds.n_classes is None
    else:
        assert ds.task == "classification"
        assert (ds.y_train.shape, ds.y_train.dtype) == ((n - n_val,), np.int64)
        assert ds.class_names == [str(index) for index in range(classes)]
        assert set(ds.y_train) == set(ds.y_val) == set(range(classes))
        assert ds.n_outputs == ds.n_classes == classes


@pytest.mark.parametrize("data", [shape[0] for shape in SHAPES], ids=lambda data: data["source"])
def test_synthetic_sources_are_reproducible_from_the_seed(data):
    loss = "mse" if data["source"] in ("sine", "linear") else "cross_entropy"
    first, again, other = (dataset(data, loss, seed) for seed in (7, 7, 8))
    for name in ARRAYS:
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
    assert not np.array_equal(first.X_train, other.X_train)


def test_xor_labels_follow_the_quadrant():
    ds = load_dataset(config({"source": "xor", "noise": 0.1, "standardize": False, "val_fraction": 0}))
    signs_differ = ds.X_train[:, 0] * ds.X_train[:, 1] < 0
    assert np.array_equal(ds.y_train, signs_differ.astype(np.int64))


def test_sine_targets_are_the_sine_of_the_input_without_noise():
    ds = load_dataset(config({"source": "sine", "noise": 0.0, "standardize": False}, loss="mae"))
    assert np.all(np.abs(ds.X_train) <= np.pi)
    assert np.allclose(ds.y_train[:, 0], np.sin(ds.X_train[:, 0]))


def test_a_regression_loss_on_class_labels_regresses_on_the_class_ids():
    ds = load_dataset(config({"source": "xor", "standardize": False}, loss="mse"))
    assert ds.task == "regression"
    assert set(np.unique(ds.y_train)) == {0.0, 1.0}
    assert ds.y_train.shape == (len(ds.X_train), 1)


# --- split and standardization ----------------------------------------------------------------------------------


def test_the_split_is_stratified():
    ds = dataset({"source": "spirals", "n_classes": 3, "n_samples": 600, "val_fraction": 0.3})
    assert np.bincount(ds.y_val).tolist() == [60, 60, 60]
    assert np.bincount(ds.y_train).tolist() == [140, 140, 140]


def test_stratification_keeps_unequal_class_proportions(tmp_path):
    rows = ["a,b"] + [f"{i},x" for i in range(30)] + [f"{i},y" for i in range(10)]
    ds = dataset({"source": "csv", "path": write_csv(tmp_path, "\n".join(rows)), "val_fraction": 0.2})
    assert np.bincount(ds.y_val).tolist() == [6, 2]
    assert np.bincount(ds.y_train).tolist() == [24, 8]


def test_standardization_uses_training_statistics_only():
    data = {"source": "linear", "n_features": 3, "n_outputs": 2}
    raw = load_dataset(config({**data, "standardize": False}, loss="mse"))
    ds = load_dataset(config(data, loss="mse"))
    assert np.allclose(ds.x_mean, raw.X_train.mean(axis=0)) and np.allclose(ds.x_std, raw.X_train.std(axis=0))
    assert np.allclose(ds.X_train.mean(axis=0), 0) and np.allclose(ds.X_train.std(axis=0), 1)
    assert np.allclose(ds.X_val, (raw.X_val - raw.X_train.mean(axis=0)) / raw.X_train.std(axis=0))
    assert np.allclose(ds.y_val, (raw.y_val - raw.y_train.mean(axis=0)) / raw.y_train.std(axis=0))
    assert not np.allclose(ds.X_val.mean(axis=0), 0)
    assert raw.x_mean is None and raw.y_std is None


def test_a_constant_feature_is_not_divided_by_zero(tmp_path):
    path = write_csv(tmp_path, "c,x,y\n" + "".join(f"5,{i},{i % 2}\n" for i in range(10)))
    ds = dataset({"source": "csv", "path": path})
    assert ds.x_std[0] == 1.0
    assert np.all(ds.X_train[:, 0] == 0.0)


def test_class_labels_are_not_standardized():
    ds = dataset({"source": "blobs"})
    assert ds.y_mean is None and ds.y_std is None


def test_no_validation_split_gives_empty_arrays_with_the_right_columns():
    ds = dataset({"source": "linear", "n_features": 3, "n_outputs": 2, "val_fraction": 0}, loss="mse")
    assert ds.X_val.shape == (0, 3) and ds.y_val.shape == (0, 2)
    assert len(ds.X_train) == 200


# --- CSV and npz files ------------------------------------------------------------------------------------------


def test_iris_classes_are_named_in_sorted_order():
    path = str(Path(__file__).resolve().parents[1] / "configs" / "data" / "iris.csv")
    ds = dataset({"source": "csv", "path": path, "target": "species"})
    assert ds.class_names == ["setosa", "versicolor", "virginica"]
    assert ds.feature_names == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert ds.target_names == ["species"]
    assert (len(ds.X_train), len(ds.X_val)) == (120, 30)


def test_numeric_labels_are_ordered_as_numbers(tmp_path):
    path = write_csv(tmp_path, "x,label\n" + "".join(f"{i},{[10, 9, 2.0][i % 3]}\n" for i in range(12)))
    ds = dataset({"source": "csv", "path": path, "val_fraction": 0, "standardize": False})
    assert ds.class_names == ["2", "9", "10"]
    assert ds.y_train[:3].tolist() == [2, 1, 0]


def test_csv_features_and_targets_are_chosen_by_name(tmp_path):
    path = write_csv(tmp_path, "a,b,c,d\n" + "".join(f"{i},{2 * i},{3 * i},{i % 3}\n" for i in range(12)))
    ds = load_dataset(config(
        {"source": "csv", "path": path, "target": ["a", "c"], "features": ["d"], "standardize": False}, loss="mse"
    ))
    assert (ds.feature_names, ds.target_names) == (["d"], ["a", "c"])
    assert np.array_equal(ds.y_train[:, 1], 3 * ds.y_train[:, 0])
    assert ds.X_train.shape[1] == 1


def test_read_table_keeps_file_lines_and_skips_blank_rows(tmp_path):
    table = read_table(Path(write_csv(tmp_path, "a, b\n1,2\n\n3,4\n")))
    assert table.columns == ["a", "b"]
    assert table.lines == [2, 4]
    assert table.numeric(["b", "a"]).tolist() == [[2.0, 1.0], [4.0, 3.0]]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("a,b,y\n", "only a header row"),
        ("a,b,y\n1,2,0\n3,0\n", ":3: 2 values, but the header has 3 columns"),
        ("a,b,y\n1,2,0\n3,x,1\n", ":3: column 'b': 'x' is not a number"),
        ("a,b,y\n1,2,0\n3,,1\n", ":3: column 'b': missing value"),
        ("a,b,y\n1,nan,0\n3,4,1\n", ":2: column 'b': 'nan' is not a finite number"),
        ("a,b,y\n1,2,0\n3,4,\n", ":3: column 'y': missing value"),
        ("a,a,y\n1,2,0\n", ":1: the header needs a distinct, non-empty name for every column"),
    ],
)
def test_bad_csv_files_are_data_errors_with_their_line(tmp_path, text, expected):
    path = write_csv(tmp_path, text)
    with pytest.raises(DataError) as caught:
        dataset({"source": "csv", "path": path})
    assert str(caught.value).startswith(path)
    assert expected in str(caught.value)


def test_a_missing_target_column_lists_the_columns(tmp_path):
    path = write_csv(tmp_path, "a,b,y\n1,2,0\n")
    with pytest.raises(DataError, match=r"^data.target: no column 'label' in .* \(columns: a, b, y\)$"):
        dataset({"source": "csv", "path": path, "target": "label"})


def test_a_missing_data_file_names_the_resolved_path(tmp_path):
    raw = {"data": {"source": "csv", "path": "nope.csv"}, "model": {"hidden": []}, "loss": "cross_entropy"}
    with pytest.raises(DataError, match=f"^data.path: file not found: {tmp_path / 'nope.csv'}$"):
        load_dataset(config_from_dict(raw, base_dir=tmp_path))


def test_a_class_with_one_example_cannot_be_split(tmp_path):
    path = write_csv(tmp_path, "x,y\n1,a\n2,a\n3,b\n4,b\n5,c\n")
    with pytest.raises(DataError, match="class 'c' has only 1 example"):
        dataset({"source": "csv", "path": path})
    assert dataset({"source": "csv", "path": path, "val_fraction": 0}).class_names == ["a", "b", "c"]


def test_text_targets_need_a_classification_loss(tmp_path):
    path = write_csv(tmp_path, "x,y\n1,a\n2,b\n")
    with pytest.raises(DataError, match=r":2: column 'y': 'a' is not a number — loss 'mse' needs numeric targets"):
        dataset({"source": "csv", "path": path}, loss="mse")


def test_npz_files_give_X_and_y(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.arange(40.0).reshape(20, 2), y=np.arange(20) % 2)
    ds = dataset({"source": "npz", "path": str(path), "standardize": False})
    assert (ds.X_train.shape, ds.feature_names, ds.class_names) == ((16, 2), ["x0", "x1"], ["0", "1"])


def test_an_npz_without_y_names_the_missing_array(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((5, 2)), labels=np.zeros(5))
    with pytest.raises(DataError, match=r"no array 'y' \(found: X, labels\)"):
        dataset({"source": "npz", "path": str(path)})


def test_a_file_that_is_not_npz(tmp_path):
    with pytest.raises(DataError, match="not a readable .npz file"):
        dataset({"source": "npz", "path": write_csv(tmp_path, "a,b\n1,2\n", name="d.npz")})


# --- resolving the config with the data -------------------------------------------------------------------------


def test_resolve_fills_the_task_and_the_output_units():
    for data, loss, units in [({"source": "blobs", "n_classes": 4}, "cross_entropy", 4),
                              ({"source": "moons"}, "bce", 1),
                              ({"source": "linear", "n_outputs": 3}, "mae", 3)]:
        cfg = config(data, loss)
        resolved = resolve_config(cfg, load_dataset(cfg))
        assert resolved.model.layers[-1].units == units
        assert resolved.data.task == ("regression" if loss == "mae" else "classification")
        assert cfg.model.layers[-1].units is None and cfg.data.task == "auto"


def test_resolve_rejects_output_units_that_do_not_fit():
    raw = {"data": {"source": "blobs"}, "loss": "cross_entropy", "model": {"layers": [{"units": 4}, {"units": 2}]}}
    cfg = config_from_dict(raw)
    with pytest.raises(ConfigError, match=r"^model.layers.1.units: 2 output units, but the data has 3 classes"):
        resolve_config(cfg, load_dataset(cfg))


def test_bce_needs_two_classes():
    cfg = config({"source": "blobs"}, loss="bce")
    with pytest.raises(ConfigError, match="^loss: 'bce' needs exactly 2 classes, but the data has 3"):
        resolve_config(cfg, load_dataset(cfg))


def test_a_classification_loss_on_continuous_targets_names_both_sides():
    with pytest.raises(ConfigError, match="^loss: 'cross_entropy' needs class labels, but data.source 'sine' has "
                                          "non-integer values"):
        dataset({"source": "sine"})
