"""The lean trainer: what a training process imports, and loading data without redundant copies."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
from conftest import CONFIGS

from autobp.health.layers import median
from autobp.model import split
from autobp.model.dataset import load_dataset
from autobp.config.configfile import config_from_dict


def test_median_is_numpys_median_of_the_finite_values() -> None:
    rng = np.random.default_rng(0)
    for size in (1, 2, 3, 10, 11):
        values = list(rng.standard_normal(size))
        assert median(values) == float(np.median(values))
    assert median([1.0, math.inf, 2.0, None]) == 1.5 and median([1.0, math.nan, 2.0]) == 1.5
    assert median([]) is None and median([math.nan]) is None


def test_a_training_run_imports_nothing_it_does_not_use(tmp_path: Path) -> None:
    script = (
        "import sys, json\n"
        "from autobp.training.entry import train\n"
        f"train({str(CONFIGS / 'xor.yaml')!r}, ['training.epochs=2'], output={str(tmp_path)!r})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'autobp'))))\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    modules = set(json.loads(done.stdout))
    assert "autobp.training.compiled" in modules  # the run went through the compiled path
    # numpy.ma (via np.median), sweeps, reports' plotting and predictions are not a training run's business, nor
    # are the instruments (off by default) or the thread pool that reads mapped files.
    assert not modules & {"numpy.ma", "autobp.sweeps.plan", "autobp.sweeps.run", "autobp.tools.plot", "autobp.tools.predict",
                          "autobp.training.instruments"}  # fmt: skip
    assert "concurrent.futures" not in json.loads(done.stderr)


# --- memory: split by index in place, statistics in chunks, standardize in place -----------------------------------
def test_split_rows_moves_training_rows_forward_in_place(monkeypatch) -> None:
    monkeypatch.setattr(split, "SPLIT_CHUNK_BYTES", 3 * 4 * 8)  # three rows per chunk: many chunks
    rng = np.random.default_rng(2)
    X = rng.standard_normal((50, 4))
    val = np.sort(rng.choice(50, 13, replace=False))
    train = np.setdiff1d(np.arange(50), val)
    expected_train, expected_val = X[train], X[val]
    got_train, got_val = split.split_rows(X, train, val)
    assert np.shares_memory(got_train, X)  # no copy of the training rows
    assert got_train.tobytes() == expected_train.tobytes() and got_val.tobytes() == expected_val.tobytes()


def test_column_std_in_chunks_is_numpys_std(monkeypatch) -> None:
    monkeypatch.setattr(split, "SPLIT_CHUNK_BYTES", 7 * 3 * 8)
    X = np.random.default_rng(3).standard_normal((100, 3)) * [1.0, 1e-3, 1e5] + [0.0, 5.0, -1e6]
    np.testing.assert_allclose(split._column_std(X, X.mean(axis=0)), X.std(axis=0), rtol=1e-10)


def test_loading_an_npz_holds_little_more_than_the_data(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(split, "SPLIT_CHUNK_BYTES", 2**18)
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((40_000, 25)), rng.standard_normal(40_000)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    size = X.nbytes + y.nbytes
    config = config_from_dict({"data": {"source": "npz", "path": str(tmp_path / "d.npz")}, "model": {"hidden": [4]},
                               "loss": "mse"})  # fmt: skip
    del X, y
    tracemalloc.start()
    try:
        dataset = load_dataset(config)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The arrays as read, a copy of the validation rows and a few row chunks; loading used to peak at 3-4× the data.
    assert peak <= 1.5 * size
    assert dataset.X_train.shape == (32_000, 25) and abs(dataset.X_train.mean()) < 1e-12


def test_config_models_read_no_docstrings_at_start_up_yet_the_schema_has_them() -> None:
    from autobp.config.models import DataConfig
    from autobp.config.schema import config_json_schema

    assert all(field.description is None for field in DataConfig.model_fields.values())  # not parsed at import
    described = config_json_schema()["$defs"]["DataConfig"]["properties"]
    assert described["target_path"]["description"].startswith("npy: the targets (n,) or (n, k)")
    assert described["val_fraction"]["description"].startswith("Share of examples held out for validation")
    # Every other description is checked against the committed schema (test_configfile), written before this change.


def test_the_command_leaves_the_interpreters_exit_no_objects_to_collect(tmp_path: Path) -> None:
    """After a command, every object is exempt from the exit's collections (≈ 35 ms saved per `autobp train`), and
    what the command wrote is whole: the run directory reads back completed."""
    script = (
        "import gc, sys\n"
        "from autobp.cli import main\n"
        f"sys.argv = ['autobp', 'train', {str(CONFIGS / 'xor.yaml')!r}, '--quiet', '--output-dir', {str(tmp_path)!r},"
        " '--set', 'training.epochs=2']\n"
        "try:\n    main()\nexcept SystemExit as end:\n    print(end.code, gc.get_freeze_count() > 1000, gc.get_count()[2])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split()[-3:] == ["0", "True", "0"], done.stdout
    (run,) = tmp_path.iterdir()
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
