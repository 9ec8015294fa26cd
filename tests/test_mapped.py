"""`source: npy`: features memory-mapped and read a batch at a time, giving the same runs as the same data in an npz."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import assert_same_run
from typer.testing import CliRunner

from autobp.cli import app
from autobp.common.errors import ConfigError, DataError
from autobp.model.dataset import load_dataset
from autobp.model.mapped import MappedArray, MappedRows
from autobp.model.prepare import prepare
from autobp.config.configfile import config_from_dict, load_config
from autobp.sweeps.cluster import run_shipped
from autobp.tools.predict import load_model, predict_file
from autobp.training.entry import train


def write_data(folder: Path, X: np.ndarray, y: np.ndarray) -> None:
    """The same examples as features.npy + targets.npy and as data.npz."""
    np.save(folder / "features.npy", X)
    np.save(folder / "targets.npy", y)
    np.savez(folder / "data.npz", X=X, y=y)


def configs(folder: Path, loss: str, dtype: str, layers: list[dict]) -> tuple[Path, Path]:
    base = {"seed": 3, "model": {"layers": layers}, "loss": loss,
            "training": {"epochs": 3, "batch_size": 48, "dtype": dtype, "log_every": 1}}  # fmt: skip
    paths = []
    for name, data in (("npy", {"source": "npy", "path": "features.npy", "target_path": "targets.npy"}),
                       ("npz", {"source": "npz", "path": "data.npz"})):  # fmt: skip
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**base, "name": name, "data": data}))
        paths.append(path)
    return paths[0], paths[1]


CASES = [  # loss, dtype, features dtype, targets
    ("cross_entropy", "float32", np.float32, "labels"),
    ("cross_entropy", "float64", np.int16, "text"),
    ("bce", "float64", np.float64, "labels"),
    ("mse", "float64", np.float32, "two targets"),
    ("huber", "float32", np.float64, "one target"),
]


@pytest.mark.parametrize(("loss", "dtype", "stored", "targets"), CASES)
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "interpreted"])
def test_npy_trains_bit_identically_to_the_same_data_as_npz(loss, dtype, stored, targets, compiled,
                                                             tmp_path) -> None:  # fmt: skip
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((301, 5)) * [1, 10, 0.1, 3, 100] + [0, 5, -2, 1, 50]).astype(stored)
    signal = X[:, 0] - X[:, 1] / 10
    y = {
        "labels": (signal > 0).astype(np.int64) + (loss == "cross_entropy") * (signal > 1),
        "text": np.where(signal > 0, "up", "down"),
        "two targets": np.stack([signal, X[:, 3] * 2.0], axis=1),
        "one target": signal.astype(np.float32),
    }[targets]
    write_data(tmp_path, X, y)
    layers = [{"units": 16, "activation": "tanh", "dropout": 0.2}, {"units": 8, "activation": "relu"}, {}]
    npy, npz = configs(tmp_path, loss, dtype, layers)
    overrides = [f"training.compile={str(compiled).lower()}"]
    a, b = (train(config, overrides, output=tmp_path / "runs") for config in (npy, npz))
    assert a.status == b.status == "completed"
    assert_same_run(a.run_dir, b.run_dir)


def test_the_split_rows_read_from_the_map_are_the_npz_arrays(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("autobp.model.split.SPLIT_CHUNK_BYTES", 7 * 3 * 8)  # statistics over many chunks
    rng = np.random.default_rng(5)
    X = rng.standard_normal((100, 3)) * [1.0, 1e-3, 1e5] + [0.0, 5.0, -1e6]
    write_data(tmp_path, X, rng.standard_normal(100))
    common = {"model": {"hidden": [4]}, "loss": "mse"}
    npy = load_dataset(config_from_dict({**common, "data": {
        "source": "npy", "path": str(tmp_path / "features.npy"), "target_path": str(tmp_path / "targets.npy")}}))
    npz = load_dataset(config_from_dict({**common, "data": {"source": "npz", "path": str(tmp_path / "data.npz")}}))
    assert isinstance(npy.X_train, MappedRows) and isinstance(npy.X_val, MappedRows)
    assert npy.x_mean.tobytes() == npz.x_mean.tobytes() and npy.x_std.tobytes() == npz.x_std.tobytes()
    assert npy.X_train[:].tobytes() == npz.X_train.tobytes() and npy.X_val[:].tobytes() == npz.X_val.tobytes()
    assert npy.X_train[7].tobytes() == npz.X_train[7].tobytes()
    order = rng.permutation(len(npz.X_train))[:10]
    assert npy.X_train.astype("float32")[order].tobytes() == npz.X_train[order].astype(np.float32).tobytes()
    assert npy.y_train.tobytes() == npz.y_train.tobytes()
    assert np.abs(npz.X_train.mean(axis=0)).max() < 1e-9  # the chunked statistics standardize
    np.testing.assert_allclose(npz.X_train.std(axis=0), 1.0, rtol=1e-9)


RESIDENT_SCRIPT = """
import sys
from pathlib import Path
import numpy as np
from autobp.model import mapped

def status_mb(*fields):
    lines = Path("/proc/self/status").read_text().splitlines()
    return sum(int(line.split()[1]) for line in lines if line.split(":")[0] in fields) / 1024

rows = mapped.MappedRows(mapped.MappedArray(Path(sys.argv[1]), "data.path"), np.arange(2**15))
for start in range(0, 2**15, 512):  # warm up: the first chunk's buffers, numpy's caches
    rows[start : start + 512]
    break
anon, file = status_mb("RssAnon", "RssShmem"), status_mb("RssFile")
peak = anon
for start in range(0, 2**15, 512):  # every row once in chunks, then random batches read ahead on a thread
    rows[start : start + 512]
    peak = max(peak, status_mb("RssAnon", "RssShmem"))
reader = mapped.BatchReader(rows, np.random.default_rng(0).permutation(2**15), 256)
for begin in range(0, 2**15, 256):
    reader(begin)
    peak = max(peak, status_mb("RssAnon", "RssShmem"))
reader.close()
print(peak - anon, status_mb("RssFile") - file)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssAnon from /proc")
def test_reading_every_row_keeps_the_processs_own_memory_bounded(tmp_path) -> None:
    path = tmp_path / "features.npy"
    np.lib.format.open_memmap(path, "w+", np.float64, (2**15, 256))[:] = 1.0  # 64 MiB
    done = subprocess.run([sys.executable, "-c", RESIDENT_SCRIPT, str(path)], check=True, capture_output=True, text=True)
    anon_growth, file_growth = map(float, done.stdout.split())
    # MB: a few batch buffers of its own, while the whole file is mapped (page cache, which the kernel reclaims).
    assert anon_growth < 12
    assert file_growth > 60


# --- checked before mapping ---------------------------------------------------------------------------------------
def npy_config(tmp_path: Path, X: np.ndarray | None, y: np.ndarray | None, loss: str = "mse") -> dict:
    if X is not None:
        np.save(tmp_path / "features.npy", X, allow_pickle=True)
    if y is not None:
        np.save(tmp_path / "targets.npy", y, allow_pickle=True)
    return {"data": {"source": "npy", "path": str(tmp_path / "features.npy"),
                     "target_path": str(tmp_path / "targets.npy")}, "model": {"hidden": [4]}, "loss": loss}  # fmt: skip


BAD = [
    (np.ones(10), np.ones(10), r"data.path: .*features must be a numeric array of shape \(n, d\).*float64 \(10,\)"),
    (np.ones((2, 3, 4)), np.ones(2), r"shape \(n, d\) with n, d ≥ 1, got float64 \(2, 3, 4\)"),
    (np.zeros((0, 3)), np.ones(0), r"got float64 \(0, 3\)"),
    (np.array([["a", "b"]] * 4), np.ones(4), r"features must be a numeric array .* got <U1 \(4, 2\)"),
    (np.array([[1, None]] * 4), np.ones(4), r"data.path: .*the array holds Python objects"),
    (np.asfortranarray(np.ones((6, 3))), np.ones(6), r"Fortran order.*np.ascontiguousarray"),
    (np.ones((6, 3)), np.ones(5), r"data.target_path: .*shape \(6,\) or \(6, k\), one row per row of features.npy; "
                                  r"got float64 \(5,\)"),
    (np.ones((6, 3)), np.array([1.0, None] * 3), r"data.target_path: .*the array holds Python objects"),
    (np.ones((6, 3)), np.ones((6, 2, 2)), r"got float64 \(6, 2, 2\)"),
    (np.ones((6, 3)), np.array([0, 1, 2, np.nan, 4, 5.0]), r"data.target_path: .*row 3 is not a finite number"),
    (np.array([[1.0, 2.0]] * 5 + [[np.inf, 0.0]]), np.ones(6), r"data.path: .*row 5 has a value that is not a finite"),
]


@pytest.mark.parametrize(("X", "y", "message"), BAD)
def test_a_bad_npy_is_a_clear_data_error(X, y, message, tmp_path) -> None:
    with pytest.raises(DataError, match=message):
        prepare(npy_config(tmp_path, X, y))


def test_a_truncated_or_foreign_file_is_refused_before_mapping(tmp_path) -> None:
    config = npy_config(tmp_path, np.ones((1000, 4)), np.ones(1000))
    path = tmp_path / "features.npy"
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(DataError, match=r"features.npy: the file has 32,120 bytes, its header describes 32,128; it is "
                                        "truncated"):  # fmt: skip
        prepare(config)
    path.write_bytes(b"x,y\n1,2\n")
    with pytest.raises(DataError, match=r"data.path: .*features.npy: not a readable .npy file"):
        prepare(config)
    path.unlink()
    with pytest.raises(DataError, match=r"data.path: file not found: .*features.npy"):
        prepare(config)
    np.save(path, np.ones((3, 2)))
    (tmp_path / "targets.npy").unlink()
    with pytest.raises(DataError, match=r"data.target_path: file not found: .*targets.npy"):
        prepare(config)


def test_npy_needs_its_targets_and_takes_only_its_keys(tmp_path) -> None:
    with pytest.raises(ConfigError, match="data.target_path: required with data.source 'npy'"):
        config_from_dict({"data": {"source": "npy", "path": "f.npy"}, "model": {"hidden": [4]}, "loss": "mse"})
    with pytest.raises(ConfigError, match=r"data.target_path: not used with data.source 'npz' \(it takes: path\)"):
        config_from_dict({"data": {"source": "npz", "path": "d.npz", "target_path": "t.npy"}, "model": {"hidden": [4]},
                          "loss": "mse"})  # fmt: skip


def test_the_cli_reports_a_bad_npy_with_exit_code_2(tmp_path) -> None:
    config = npy_config(tmp_path, np.ones((6, 3)), np.ones(5))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["train", str(tmp_path / "c.yaml"), "--quiet"])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "one row per row of features.npy" in result.output
    assert "Traceback" not in result.output


def test_target_path_is_a_file_path_key(tmp_path, monkeypatch) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text(yaml.safe_dump(
        {"data": {"source": "npy", "path": "f.npy", "target_path": "../t.npy"}, "model": {"hidden": [4]}, "loss": "mse"}))
    loaded = load_config(tmp_path / "sub" / "c.yaml")
    assert loaded.data.target_path == str(tmp_path / "t.npy")  # relative to the config file
    monkeypatch.chdir(tmp_path)
    loaded = load_config(tmp_path / "sub" / "c.yaml", ["data.target_path=other.npy"])
    assert loaded.data.target_path == str(tmp_path / "other.npy")  # --set: relative to the current folder


def test_shipped_files_of_the_same_name_do_not_overwrite_each_other(tmp_path) -> None:
    config = {"data": {"source": "npy", "path": "/a/x.npy", "target_path": "/b/x.npy"}, "model": {"init_from": None}}
    files = {("data", "path"): b"features", ("data", "target_path"): b"targets"}

    def read_back(local: dict, run_dir: str) -> dict:
        return {key: Path(local["data"][key]).read_bytes() for key in ("path", "target_path")}

    outcome, _ = run_shipped(read_back, config, files)
    assert outcome == {"path": b"features", "target_path": b"targets"}


# --- predictions --------------------------------------------------------------------------------------------------
def test_predict_on_an_npy_equals_predict_on_the_npz(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("autobp.training.metrics.EVAL_CHUNK", 64)  # several chunks
    rng = np.random.default_rng(2)
    X = rng.standard_normal((200, 4)).astype(np.float32) * 3 + 1
    write_data(tmp_path, X, (X[:, 0] > 1).astype(np.int64))
    npy, _ = configs(tmp_path, "cross_entropy", "float32", [{"units": 8}, {}])
    model = load_model(train(npy, output=tmp_path / "runs").run_dir)
    mapped_prediction = predict_file(model, tmp_path / "features.npy")
    assert mapped_prediction.csv == predict_file(model, tmp_path / "data.npz").csv
    assert mapped_prediction.rows == 200 and mapped_prediction.metrics is None
    np.save(tmp_path / "wide.npy", np.ones((3, 5)))
    with pytest.raises(DataError, match="wide.npy: the model takes 4 features per row, the array has 5"):
        predict_file(model, tmp_path / "wide.npy")
    np.save(tmp_path / "nan.npy", np.array([[1.0, 2, 3, 4], [np.nan, 0, 0, 0]]))
    with pytest.raises(DataError, match="nan.npy: row 1 has a value that is not a finite number"):
        predict_file(model, tmp_path / "nan.npy")


def test_mapped_rows_index_like_an_array(tmp_path) -> None:
    X = np.arange(24, dtype=np.int32).reshape(8, 3)
    np.save(tmp_path / "f.npy", X)
    rows = MappedRows(MappedArray(tmp_path / "f.npy", "data.path"), np.array([6, 1, 3]))
    assert rows.shape == (3, 3) and len(rows) == 3
    assert rows[1].tolist() == [3.0, 4.0, 5.0] and rows[1:].tolist() == [[3.0, 4.0, 5.0], [9.0, 10.0, 11.0]]
    assert rows.take(np.array([2, 0]))[np.array([1])].tolist() == [[18.0, 19.0, 20.0]]
    scaled = rows.scaled(np.array([1.0, 1, 1]), np.array([2.0, 2, 2])).astype("float32")
    assert scaled[0].dtype == np.float32 and scaled[0].tolist() == [8.5, 9.0, 9.5]
