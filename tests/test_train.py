"""`autobp train`: training reaches accuracies, the run directory keeps its contract, failures end cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import CONFIGS, read_csv
from typer.testing import CliRunner

from autobp.cli import app
from autobp.common.errors import ConfigError
from autobp.common.files import read_table
from autobp.engine import Tensor, dense, mse, ops
from autobp.health import judge
from autobp.rundir.reader import read_numbers, read_run
from autobp.training.trainer import Trainer
from autobp.training.entry import train

EXAMPLES = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("sweep"))
RUN_FILES = {"config.yaml", "metrics.csv", "gradients.csv", "model.npz", "summary.json", "checkpoint.npz",
             "histograms.npz"}
GRADIENT_COLUMNS = [
    "step", "epoch", "layer", "grad_norm_w", "grad_norm_b", "weight_norm", "update_ratio",
    "out_grad_norm", "grad_mean", "grad_std", "dead_fraction", "saturated_fraction",
]  # fmt: skip


def small_config(tmp_path: Path, **changes) -> dict:
    config = {
        "name": "t",
        "seed": 3,
        "data": {"source": "moons", "n_samples": 120, "noise": 0.1},
        "model": {"hidden": [8, 8], "activation": "relu", "init": "he"},
        "loss": "cross_entropy",
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 4, "batch_size": 16},
        "output": {"dir": str(tmp_path / "runs")},
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            config[section] = {**config[section], field: value}
        else:
            config[section] = value
    return config


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_trains_through_the_cli(example: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["train", str(example), "--set", "training.epochs=2", "--output-dir", str(tmp_path), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    assert {p.name for p in run_dir.iterdir()} == RUN_FILES
    assert str(run_dir) in result.output
    metrics = read_csv(run_dir / "metrics.csv")
    metric = "accuracy" if "train_accuracy" in metrics[0] else "r2"
    assert list(metrics[0]) == ["epoch", "step", "train_loss", "val_loss", f"train_{metric}", f"val_{metric}", "lr", "seconds"]
    assert [row["epoch"] for row in metrics] == ["1", "2"]
    gradients = read_csv(run_dir / "gradients.csv")
    assert list(gradients[0]) == GRADIENT_COLUMNS
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 2
    assert int(gradients[-1]["step"]) == summary["steps"]  # the last step is always logged
    with np.load(run_dir / "model.npz", allow_pickle=False) as model:
        assert "layer0.weight" in model.files and "layer0.bias" in model.files
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["model"]["layers"][-1]["units"] is not None


def test_xor_reaches_full_accuracy(tmp_path: Path) -> None:
    result = train(CONFIGS / "xor.yaml", output=tmp_path)
    assert result.status == "completed"
    assert result.summary.final["train_accuracy"] == 1.0
    assert result.summary.final["val_accuracy"] == 1.0


def test_spirals_quickstart_reaches_95_percent_validation_accuracy(tmp_path: Path) -> None:
    result = train(CONFIGS / "quickstart.yaml", output=tmp_path)
    assert result.summary.final["val_accuracy"] >= 0.95


def test_deep_sigmoid_example_shows_vanishing_gradients(tmp_path: Path) -> None:
    result = train(CONFIGS / "deep_sigmoid.yaml", ["training.epochs=3"], output=tmp_path)
    rows = read_csv(result.run_dir / "gradients.csv")
    layers = sorted({r["layer"] for r in rows}, key=lambda name: int(name[5:]))
    signal = {name: np.median([float(r["out_grad_norm"]) for r in rows if r["layer"] == name]) for name in layers}
    assert signal[layers[0]] * 100 <= signal[layers[-1]]
    assert result.summary.health.layers[0].verdict == "vanishing"


def test_huge_learning_rate_diverges_with_exit_code_3(tmp_path: Path) -> None:
    config = small_config(
        tmp_path,
        data={"source": "linear", "n_samples": 120},
        loss="mse",
        optimizer={"name": "sgd", "lr": 100.0},
        model={"hidden": [16], "activation": "identity"},
    )
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["train", str(path), "--quiet"])
    assert result.exit_code == 3, result.output
    assert "diverged" in result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert summary["diverged"]["step"] >= 1
    assert summary["diverged"]["layer"] is None or summary["diverged"]["layer"].startswith("layer")
    rows = read_csv(run_dir / "gradients.csv")
    assert int(rows[-1]["step"]) == summary["diverged"]["step"]  # the failing step is in the log
    assert (run_dir / "model.npz").exists()


def test_identical_runs_are_bit_identical(tmp_path: Path) -> None:
    config = small_config(tmp_path, model={"layers": [{"units": 8, "activation": "tanh", "dropout": 0.2}, {}]})
    first, second = train(config), train(config)
    assert first.run_dir != second.run_dir
    for name in ("gradients.csv", "config.yaml"):
        assert (first.run_dir / name).read_bytes() == (second.run_dir / name).read_bytes()
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(read_csv(first.run_dir / "metrics.csv")) == strip(read_csv(second.run_dir / "metrics.csv"))
    with np.load(first.run_dir / "model.npz") as a, np.load(second.run_dir / "model.npz") as b:
        assert a.files == b.files
        for key in a.files:
            assert np.array_equal(a[key], b[key])


def test_a_different_seed_gives_different_numbers(tmp_path: Path) -> None:
    a = train(small_config(tmp_path))
    b = train(small_config(tmp_path, seed=4))
    assert (a.run_dir / "gradients.csv").read_bytes() != (b.run_dir / "gradients.csv").read_bytes()


def test_config_error_exits_2_before_any_run_directory(tmp_path: Path) -> None:
    config = small_config(tmp_path, optimizer={"name": "adam", "lr": -1})
    with pytest.raises(ConfigError, match="optimizer.lr"):
        train(config)
    assert not (tmp_path / "runs").exists()


def test_run_directories_are_never_reused(tmp_path: Path) -> None:
    config = small_config(tmp_path, training={"epochs": 1})
    names = {train(config).run_dir.name for _ in range(3)}
    assert len(names) == 3
    assert all(name.startswith("t-") for name in names)


def test_gradient_log_matches_a_hand_computed_step(tmp_path: Path) -> None:
    """One full-batch SGD step: every logged number against numpy backprop written out here."""
    config = small_config(
        tmp_path,
        model={"layers": [{"units": 5, "activation": "tanh"}, {"units": 1, "activation": "identity"}]},
        data={"source": "sine", "n_samples": 40, "noise": 0.0},
        loss="mse",
        optimizer={"name": "sgd", "lr": 0.1},
        training={"epochs": 1, "batch_size": None},
    )
    from autobp.model.prepare import prepare

    resolved, dataset = prepare(config)
    w0_init = Trainer(resolved, dataset, tmp_path, _Silent()).network.state_dict()
    result = train(config)
    rows = read_csv(result.run_dir / "gradients.csv")
    x, y = dataset.X_train, dataset.y_train
    w0, b0, w1, b1 = (w0_init[k] for k in ("layer0.weight", "layer0.bias", "layer1.weight", "layer1.bias"))
    z0 = x @ w0 + b0
    f0 = np.tanh(z0)
    out = f0 @ w1 + b1
    g_out = 2 * (out - y) / out.size
    g_w1, g_b1 = f0.T @ g_out, g_out.sum(0)
    g_f0 = g_out @ w1.T
    g_z0 = g_f0 * (1 - f0**2)
    g_w0, g_b0 = x.T @ g_z0, g_z0.sum(0)
    expected = {
        "layer0": (g_w0, g_b0, w0, g_f0, z0),
        "layer1": (g_w1, g_b1, w1, g_out, None),
    }
    for row in rows:
        g_w, g_b, w, g_f, z = expected[row["layer"]]
        assert float(row["grad_norm_w"]) == pytest.approx(np.linalg.norm(g_w), rel=1e-12)
        assert float(row["grad_norm_b"]) == pytest.approx(np.linalg.norm(g_b), rel=1e-12)
        assert float(row["out_grad_norm"]) == pytest.approx(np.linalg.norm(g_f), rel=1e-12)
        assert float(row["weight_norm"]) == pytest.approx(np.linalg.norm(w - 0.1 * g_w), rel=1e-12)
        assert float(row["update_ratio"]) == pytest.approx(0.1 * np.linalg.norm(g_w) / np.linalg.norm(w), rel=1e-12)
        assert float(row["grad_mean"]) == pytest.approx(g_w.mean(), rel=1e-10, abs=1e-15)
        assert float(row["grad_std"]) == pytest.approx(g_w.std(), rel=1e-10)
        if z is None:
            assert row["saturated_fraction"] == "" and row["dead_fraction"] == ""
        else:
            assert float(row["saturated_fraction"]) == np.mean(np.all(np.abs(z) > 3, axis=0))
            assert row["dead_fraction"] == ""


class _Silent:
    def start(self, *args) -> None: ...
    def update(self, *args) -> None: ...
    def close(self) -> None: ...


def test_dead_fraction_counts_units_dead_for_the_whole_batch() -> None:
    from autobp.training.gradstats import inactive_fraction

    z = np.array([[-1.0, 2.0, 0.0, -3.0], [-2.0, -1.0, 0.0, 1.0]])
    assert inactive_fraction("relu", z) == (0.5, None)
    assert inactive_fraction("tanh", np.array([[3.5, 1.0], [-4.0, 5.0]])) == (None, 0.5)
    assert inactive_fraction("sin", z) == (None, None)
    # A NaN passes neither test: its unit is neither dead nor saturated, whatever the other rows say.
    nan = np.nan
    assert inactive_fraction("relu", np.array([[nan, -1.0, -1.0], [-1.0, -1.0, 2.0]])) == (1 / 3, None)
    assert inactive_fraction("sigmoid", np.array([[nan, 4.0, 5.0], [4.0, -4.0, 1.0]])) == (None, 1 / 3)
    rng = np.random.default_rng(0)
    for _ in range(200):  # against the definition: every row ≤ 0, every |row| > 3
        z = rng.integers(-5, 6, size=(int(rng.integers(1, 6)), int(rng.integers(1, 6)))).astype(float)
        assert inactive_fraction("relu", z)[0] == np.mean([all(z[:, j] <= 0) for j in range(z.shape[1])])
        assert inactive_fraction("tanh", z)[1] == np.mean([all(abs(z[:, j]) > 3) for j in range(z.shape[1])])


def test_log_every_spaces_long_runs_to_about_2000_steps(tmp_path: Path) -> None:
    config = small_config(tmp_path, data={"source": "moons", "n_samples": 200}, training={"epochs": 30, "batch_size": 1})
    result = train(config)  # 160 train examples x 30 epochs = 4800 steps
    steps = sorted({int(r["step"]) for r in read_csv(result.run_dir / "gradients.csv")})
    assert steps[0] == 1 and steps[-1] == 4800
    assert steps[1:-1] == list(range(3, 4800, 3))
    every = train(config, ["training.log_every=1000", "training.epochs=10"])
    logged = sorted({int(r["step"]) for r in read_csv(every.run_dir / "gradients.csv")})
    assert logged == [1, 1000, 1600]


def test_max_steps_ends_the_run_completed(tmp_path: Path) -> None:
    result = train(small_config(tmp_path), ["training.max_steps=10"])
    assert result.status == "completed" and result.summary.steps == 10
    assert read_csv(result.run_dir / "metrics.csv")[-1]["step"] == "10"


def test_early_stopping_restores_the_best_weights(tmp_path: Path) -> None:
    config = small_config(
        tmp_path,
        optimizer={"name": "sgd", "lr": 3.0},  # too large: validation loss bounces, so patience runs out
        training={"epochs": 200, "batch_size": 8, "early_stopping": {"monitor": "val_loss", "patience": 3}},
    )
    result = train(config)
    assert result.status == "stopped_early"
    metrics = read_csv(result.run_dir / "metrics.csv")
    best = min(metrics, key=lambda r: float(r["val_loss"]))
    assert result.summary.early_stopping.best_epoch == int(best["epoch"])
    assert len(metrics) == int(best["epoch"]) + 3
    trainer_check = _evaluate_saved(result.run_dir, config)
    assert trainer_check == pytest.approx(float(best["val_loss"]), rel=1e-12)


def _evaluate_saved(run_dir: Path, config: dict) -> float:
    from autobp.common.files import load_npz
    from autobp.model.prepare import prepare

    resolved, dataset = prepare(config)
    trainer = Trainer(resolved, dataset, run_dir, _Silent())
    trainer.network.load_state_dict(load_npz(run_dir / "model.npz"))
    return trainer.evaluate(trainer.X_val, trainer.y_val)["loss"]


def test_regression_metrics_are_reported_in_original_units(tmp_path: Path) -> None:
    base = {"data": {"source": "linear", "n_samples": 200, "noise": 0.5, "n_features": 2}, "loss": "mse",
            "model": {"hidden": [8]}, "training": {"epochs": 3}}  # fmt: skip
    config = small_config(tmp_path, **base)
    result = train(config)
    _, dataset = __import__("autobp.training.entry", fromlist=["prepare"]).prepare(config)
    assert dataset.y_std is not None and not np.allclose(dataset.y_std, 1.0)
    val_loss = _evaluate_saved(result.run_dir, config)
    from autobp.common.files import load_npz

    model = load_npz(result.run_dir / "model.npz")
    h = np.tanh(dataset.X_val @ model["layer0.weight"] + model["layer0.bias"])
    pred = (h @ model["layer1.weight"] + model["layer1.bias"]) * dataset.y_std + dataset.y_mean
    truth = dataset.y_val * dataset.y_std + dataset.y_mean
    assert val_loss == pytest.approx(np.mean((pred - truth) ** 2), rel=1e-10)
    r2 = 1 - np.sum((pred - truth) ** 2) / np.sum((truth - truth.mean()) ** 2)
    assert result.summary.final["val_r2"] == pytest.approx(r2, rel=1e-10)


def test_float32_runs_stay_float32(tmp_path: Path) -> None:
    result = train(small_config(tmp_path), ["training.dtype=float32"])
    assert result.status == "completed"
    with np.load(result.run_dir / "model.npz") as model:
        assert model["layer0.weight"].dtype == np.float32


def test_interrupt_saves_logs_and_weights_with_exit_130(tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    original = Trainer._train_step

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_step", interrupted)
    result = train(small_config(tmp_path))
    assert result.status == "interrupted" and result.exit_code == 130
    assert result.summary.steps == 19  # the 20th step never finished
    assert len(read_csv(result.run_dir / "metrics.csv")) == 3  # 6 steps per epoch: three whole epochs
    assert (result.run_dir / "model.npz").exists()


def test_unexpected_failure_is_recorded_with_exit_1(tmp_path: Path, monkeypatch) -> None:
    def broken(self, *args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Trainer, "_train_step", broken)
    result = train(small_config(tmp_path))
    assert result.status == "failed" and result.exit_code == 1
    assert result.summary.error == "RuntimeError: disk on fire"


def test_summary_records_what_a_user_needs(tmp_path: Path) -> None:
    result = train(small_config(tmp_path))
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 * 6  # 96 training examples, batches of 16
    assert summary["final"]["epoch"] == 4
    assert set(summary["best"]) == {"train_loss", "val_loss", "train_accuracy", "val_accuracy"}
    assert summary["versions"]["numpy"] == np.__version__
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]  # what numpy's BLAS is: same machine + BLAS
    assert summary["versions"]["blas"] == f"{blas['name']} {blas['version']}"
    assert summary["versions"]["blas_build"] == " ".join(blas.get("openblas configuration", "").split())
    assert summary["samples_per_second"] > 0
    assert summary["started"] <= summary["ended"]


def test_progress_in_a_log_is_plain_lines(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(small_config(tmp_path)))
    done = subprocess.run(
        [sys.executable, "-m", "autobp", "train", str(config)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    assert "step 24/24" in done.stderr
    assert "layer0 (relu):" in done.stdout


def test_engine_trains_a_network_without_the_runner() -> None:
    """The engine alone learns XOR: a check that its gradients drive a real optimisation."""
    rng = np.random.default_rng(0)
    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([[0.0], [1.0], [1.0], [0.0]])
    params = [Tensor(rng.standard_normal(s), requires_grad=True) for s in [(2, 8), (8,), (8, 1), (1,)]]
    for _ in range(2000):
        loss = mse(dense(ops.tanh(dense(x, params[0], params[1])), params[2], params[3]), y)
        loss.backward()
        for p in params:
            p.data -= 0.2 * p.grad
            p.grad = None
    assert float(loss.data) < 1e-3


@pytest.mark.parametrize(("activation", "kept_rows"), [("relu", None), ("tanh", None), ("tanh", 5)])
def test_the_end_of_run_judgement_from_the_rows_in_memory_is_the_one_read_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, activation: str, kept_rows: int | None
) -> None:
    """A fresh run judges its gradients from the rows it wrote, not the file read back: the same verdict as report's
    (and, with more rows than it keeps, from the file)."""
    if kept_rows is not None:
        monkeypatch.setattr("autobp.training.gradstats.KEPT_ROWS", kept_rows)
    result = train(small_config(tmp_path, model__activation=activation, training__log_every=1))
    from_file = read_run(result.run_dir)
    assert result.summary.health == judge(from_file)
    assert len(from_file.layers) == 3 and len(from_file.layers[0].steps) == result.summary.steps
    rows = [list(row.values()) for row in read_numbers(result.run_dir / "gradients.csv")]
    assert list(read_numbers(result.run_dir / "gradients.csv")[0]) == read_table(result.run_dir / "gradients.csv")[0]
    assert read_run(result.run_dir, gradient_rows=rows).layers == from_file.layers
