"""Training instruments: every column of instruments.csv against per-example gradients from the engine run on each
example alone (moments by numpy), α against its own quadratic fit, and the file's reproducibility and resumption."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import interrupted

from autobp.model.network import build_network
from autobp.model.prepare import prepare
from autobp.rundir import instruments as instrument_file
from autobp.config.catalog import ACTIVATIONS, LOSSES
from autobp.training.instruments import EMA_DECAY, Instruments
from autobp.training.metrics import loss_targets
from autobp.training.entry import resume, train
from autobp.training.state import INIT_STREAM, SHUFFLE_STREAM

DATA = {
    "cross_entropy": {"source": "blobs", "n_samples": 60, "n_classes": 3},
    "bce": {"source": "moons", "n_samples": 60},
    "mse": {"source": "linear", "n_samples": 60, "n_outputs": 2},
    "mae": {"source": "linear", "n_samples": 60, "n_outputs": 2},
    "huber": {"source": "linear", "n_samples": 60, "n_outputs": 2, "noise": 2.0},
}


def settings(tmp_path: Path, loss: str = "cross_entropy", activation: str = "tanh", **training) -> dict:
    return {
        "name": "i", "seed": 3, "data": DATA[loss], "loss": loss,
        "model": {"hidden": [5, 4], "activation": activation, "init_scale": 0.5},
        "optimizer": {"name": "adam", "lr": 0.05},
        "training": {"epochs": 2, "batch_size": 8, "instruments": {"every": 1}, **training},
        "output": {"dir": str(tmp_path / "runs")},
    }  # fmt: skip


def flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([a.reshape(-1) for a in arrays])


def one_by_one(network, loss_name: str, X: np.ndarray, y: np.ndarray,
               masks: list | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(B × parameters) per-example gradients and the B per-example losses: the engine run on each example alone
    (under its row of each layer's dropout mask, if `masks` gives them: None for a layer without dropout)."""
    grads, losses = [], []
    for n in range(len(X)):
        h = X[n : n + 1]
        for layer, mask in zip(network.layers, masks or [None] * len(network.layers)):
            h = layer.forward(h, None if mask is None else mask[n : n + 1])[1]
        loss = LOSSES[loss_name].engine(h, y[n : n + 1])
        loss.backward()
        params = network.parameters()
        grads.append(flat([p.grad for p in params]))
        losses.append(float(loss.data))
        for p in params:
            p.grad = None
    return np.array(grads), np.array(losses)


def expected_row(G: np.ndarray) -> dict[str, float]:
    """A block's columns from its per-example gradients G (examples × parameters), by numpy."""
    B = len(G)
    g = G.mean(axis=0)
    cov = float(np.trace(np.atleast_2d(np.cov(G, rowvar=False))))  # unbiased covariance of the g_n
    grad_sq = float(g @ g)
    projections = G @ g
    orthogonal = G - np.outer(projections / grad_sq, g)
    return {
        "grad_sq_norm": grad_sq,
        "sum_sq_example_grad_norms": float((G * G).sum()),
        "trace_cov": cov,
        "noise_scale": cov / grad_sq,
        # after one step both averages hold (1 − decay) times the first values: the ratio is S / (‖g‖² − S/B),
        # empty while the estimate of |G|² is not positive
        "noise_scale_smoothed": cov / (grad_sq - cov / B) if grad_sq > cov / B else None,
        "norm_test": math.sqrt(cov / (B * grad_sq)),
        "inner_test": math.sqrt(np.var(projections, ddof=1) / (B * grad_sq**2)),
        "ortho_test": math.sqrt((orthogonal**2).sum() / (B - 1) / (B * grad_sq)),
    }


def blocks(network, G: np.ndarray) -> dict[str, np.ndarray]:
    sizes = [p.data.size for p in network.parameters()]
    edges = np.cumsum([0, *sizes])
    found = {layer.name: G[:, edges[2 * i] : edges[2 * i + 2]] for i, layer in enumerate(network.layers)}
    return found | {"total": G}


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_every_column_matches_per_example_gradients(tmp_path: Path, activation: str, loss: str) -> None:
    config, data = prepare(settings(tmp_path, loss, activation))
    network = build_network(config, data.n_features, np.random.default_rng([3, INIT_STREAM]))
    X, y = data.X_train[:9], loss_targets(data.y_train[:9], loss, np.dtype("float64"))
    G, losses = one_by_one(network, loss, X, y)
    per_example = assert_rows_match(config, network, X, y, network.forward(X, retain=True), G)
    np.testing.assert_allclose(per_example, losses, rtol=1e-12)


def assert_rows_match(config, network, X: np.ndarray, y: np.ndarray, trace, G: np.ndarray) -> np.ndarray:
    """Instrument one step of the recorded forward pass `trace` and check every block's row against the per-example
    gradients G; returns the per-example losses the trainer hands the instruments."""
    batch_loss = LOSSES[config.loss].engine(trace.output, y)
    batch_loss.backward()
    np.testing.assert_allclose(G.mean(axis=0), flat([p.grad for p in network.parameters()]), rtol=1e-12, atol=1e-15)
    instruments = Instruments(network, config.training.instruments, "auto", 10, config.loss)
    per_example = LOSSES[config.loss].engine.per_example(trace.output.data, y)
    instruments.before_update(1, 1, X, y, trace, per_example, float(batch_loss.data), 0.05)
    instruments.after_update(1, [np.zeros_like(p.data) for p in network.parameters()])
    rows = {row[2]: dict(zip(instrument_file.COLUMNS, row)) for row in instruments.pending}
    assert list(rows) == [*(layer.name for layer in network.layers), "total"]
    for name, G_block in blocks(network, G).items():
        for column, value in expected_row(G_block).items():
            if column in ("inner_test", "ortho_test") and name != "total":
                assert rows[name][column] is None
                continue
            assert rows[name][column] == (None if value is None else pytest.approx(value, rel=1e-9, abs=1e-14)), (
                name, column)
    return per_example


def test_with_dropout_each_example_gradient_is_under_the_mask_it_drew(tmp_path: Path) -> None:
    """Per-example gradients from the engine run on each example alone with its own row of the batch's masks."""
    config, data = prepare(settings(tmp_path) | {"model": {"hidden": [6, 5], "dropout": 0.4, "activation": "relu"}})
    network = build_network(config, data.n_features, np.random.default_rng([3, INIT_STREAM]))
    X, y = data.X_train[:9], loss_targets(data.y_train[:9], "cross_entropy", np.dtype("float64"))
    trace = network.forward(X, np.random.default_rng(7), retain=True)
    masks = [*trace.masks, None]  # the hidden layers drop units, the output layer does not
    assert all(layer.dropout == (0.4 if m is not None else 0.0) for layer, m in zip(network.layers, masks))
    assert_rows_match(config, network, X, y, trace, one_by_one(network, "cross_entropy", X, y, masks)[0])


def test_the_smoothed_noise_scale_is_the_ratio_of_moving_averages(tmp_path: Path) -> None:
    run = train(settings(tmp_path, epochs=1))
    total = instrument_file.read(run.run_dir).total
    S, G2 = np.array(total.values("trace_cov")), np.array(total.values("grad_sq_norm")) - np.array(total.values("trace_cov")) / 8
    weights = EMA_DECAY ** np.arange(len(S))[::-1]
    last = float((weights * S).sum() / (weights * G2).sum())
    assert total.values("noise_scale_smoothed")[-1] == pytest.approx(last, rel=1e-12)


def fit_alpha(t: float, f: list[float], df: list[float], var_f: list[float], var_df: list[float]) -> float:
    """Cockpit's quadratic fit solved as a weighted least-squares problem by numpy's lstsq."""
    design = np.array([[1, 0, 0], [1, t, t * t], [0, 1, 0], [0, 1, 2 * t]], dtype=float)
    scale = 1 / np.sqrt(np.array([*var_f, *var_df]))
    mu = np.linalg.lstsq(design * scale[:, None], np.array([*f, *df]) * scale, rcond=None)[0]
    return -1.0 if mu[2] < 0 else 2 * t / (-mu[1] / mu[2]) - 1


@pytest.mark.parametrize("optimizer", [
    {"name": "adam", "lr": 0.05, "weight_decay": 0.01, "clip_grad_norm": 0.05},
    {"name": "momentum", "lr": 0.5},
    {"name": "adamw", "lr": 0.05, "weight_decay": 0.1},
])  # fmt: skip
def test_alpha_fits_the_actual_update_with_the_next_batch(tmp_path: Path, optimizer: dict) -> None:
    """α of step 1 from θ₀ and θ₁ = the weights after one step (weight decay and clipping included)."""
    config_dict = settings(tmp_path, max_steps=2) | {"optimizer": optimizer}
    run = train(config_dict)
    total = instrument_file.read(run.run_dir).total
    alpha = total.values("alpha")[0]
    after_one = train(config_dict | {"training": config_dict["training"] | {"max_steps": 1}})
    config, data = prepare(config_dict)
    start = build_network(config, data.n_features, np.random.default_rng([3, INIT_STREAM]))
    end = build_network(config, data.n_features, np.random.default_rng([3, INIT_STREAM]))
    end.load_state_dict(dict(np.load(after_one.run_dir / "model.npz")))
    order = np.random.default_rng([3, SHUFFLE_STREAM]).permutation(len(data.X_train))
    y = loss_targets(data.y_train, config.loss, np.dtype("float64"))
    d = flat([p.data for p in end.parameters()]) - flat([p.data for p in start.parameters()])
    t = float(np.linalg.norm(d))
    seen = [one_by_one(net, config.loss, data.X_train[batch], y[batch])
            for net, batch in ((start, order[:8]), (end, order[8:16]))]  # fmt: skip
    slopes = [G @ d / t for G, _ in seen]
    expected = fit_alpha(t, [losses.mean() for _, losses in seen], [s.mean() for s in slopes],
                         [np.var(losses, ddof=1) for _, losses in seen], [np.var(s, ddof=1) for s in slopes])  # fmt: skip
    assert alpha == pytest.approx(expected, rel=1e-7)
    assert total.values("alpha")[-1] is None  # the last step has no next batch


def test_compiled_and_interpreted_give_the_same_file_and_reruns_are_bit_identical(tmp_path: Path) -> None:
    dropout = settings(tmp_path) | {"model": {"hidden": [6, 6], "dropout": 0.3, "activation": "relu"}}
    compiled = train(dropout).run_dir / "instruments.csv"
    interpreted = train(dropout, ["training.compile=false"]).run_dir / "instruments.csv"
    again = train(dropout).run_dir / "instruments.csv"
    assert compiled.read_bytes() == interpreted.read_bytes() == again.read_bytes()
    total = instrument_file.read(compiled.parent).total
    assert total.steps == list(range(1, 13)) and all(a is not None for a in total.values("alpha")[:-1])


def test_float32_agrees_with_float64_at_the_first_step(tmp_path: Path) -> None:
    """Within 1e-4 relative at step 1 (the trajectories then drift apart as float32 rounding accumulates)."""
    wide = instrument_file.read(train(settings(tmp_path)).run_dir)
    narrow = instrument_file.read(train(settings(tmp_path), ["training.dtype=float32"]).run_dir)
    for block in ("layer0", "total"):
        for column in instrument_file.VALUES[:9]:
            a, b = wide.block(block).values(column)[0], narrow.block(block).values(column)[0]
            if a is None:
                assert b is None
                continue
            assert b == pytest.approx(a, rel=1e-4), (block, column)


@pytest.mark.parametrize("stop_at", [4, 5, 7, 15])  # 6 steps an epoch; 7: right after the epoch-1 checkpoint
def test_resume_continues_the_smoothed_estimates_and_alpha_exactly(tmp_path: Path, monkeypatch, stop_at: int) -> None:
    config_dict = settings(tmp_path, epochs=3, checkpoint_every=1, instruments={"every": 2})
    reference = train(config_dict).run_dir / "instruments.csv"
    broken = interrupted(config_dict, monkeypatch, stop_at)
    cut = instrument_file.read(broken.run_dir).total
    assert cut.steps[-1] == (stop_at - 1) // 2 * 2
    # truthful: the α of a step is known once the next step has run
    assert (cut.values("alpha")[-1] is None) == (cut.steps[-1] == stop_at - 1)
    resumed = resume(broken.run_dir)
    assert (resumed.run_dir / "instruments.csv").read_bytes() == reference.read_bytes()


def test_a_killed_runs_half_row_is_dropped_and_a_finished_run_extends_exactly(tmp_path: Path) -> None:
    short = train(settings(tmp_path, epochs=1, checkpoint_every=1))
    path = short.run_dir / "instruments.csv"
    with open(path, "a") as handle:
        handle.write("9,2,layer0,0.12")  # a row cut by a kill
    assert instrument_file.read(short.run_dir).block("layer0").steps[-1] == 6
    resume(short.run_dir, ["training.epochs=2"])
    assert path.read_bytes() == (train(settings(tmp_path)).run_dir / "instruments.csv").read_bytes()


def test_instruments_are_off_by_default_and_auto_follows_the_gradient_log(tmp_path: Path) -> None:
    plain = settings(tmp_path)
    del plain["training"]["instruments"]
    assert not (train(plain).run_dir / "instruments.csv").exists()
    auto = train(settings(tmp_path, log_every=3, instruments={"every": "auto"}))
    assert instrument_file.read(auto.run_dir).total.steps == [1, 3, 6, 9, 12]


def finite_difference_hessian(network, loss: str, X: np.ndarray, y: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """The full Hessian of the batch loss from central differences of the engine's gradients, symmetrized."""
    params = network.parameters()
    theta = flat([p.data for p in params])

    def gradient(at: np.ndarray) -> np.ndarray:
        start = 0
        for p in params:
            p.data[...] = at[start : start + p.data.size].reshape(p.data.shape)
            start += p.data.size
        value = LOSSES[loss].engine(network.forward(X).output, y)
        value.backward()
        found = flat([p.grad for p in params])
        for p in params:
            p.grad = None
        return found

    columns = []
    for j in range(theta.size):
        step = np.zeros_like(theta)
        step[j] = eps
        columns.append((gradient(theta + step) - gradient(theta - step)) / (2 * eps))
    gradient(theta)  # put the parameters back
    H = np.array(columns).T
    return (H + H.T) / 2


@pytest.mark.parametrize("loss, activation", [("cross_entropy", "tanh"), ("mse", "sigmoid"), ("huber", "softplus")])
def test_lambda_max_is_the_dominant_eigenvalue_of_the_finite_difference_hessian(tmp_path: Path, loss: str,
                                                                               activation: str) -> None:  # fmt: skip
    curvature = {"every": 1, "curvature_every": 1, "power_iterations": 1000}
    config_dict = settings(tmp_path, loss, activation, max_steps=1, instruments=curvature)
    total = instrument_file.read(train(config_dict).run_dir).total
    config, data = prepare(config_dict)
    network = build_network(config, data.n_features, np.random.default_rng([3, INIT_STREAM]))
    batch = np.random.default_rng([3, SHUFFLE_STREAM]).permutation(len(data.X_train))[:8]
    y = loss_targets(data.y_train, loss, np.dtype("float64"))
    eigenvalues = np.linalg.eigvalsh(finite_difference_hessian(network, loss, data.X_train[batch], y[batch]))
    assert total.values("lambda_max")[0] == pytest.approx(eigenvalues[-1], rel=1e-6)
    assert total.values("lr_lambda_max")[0] == pytest.approx(0.05 * eigenvalues[-1], rel=1e-6)


def test_a_negative_dominant_eigenvalue_is_passed_over_for_the_largest() -> None:
    from autobp.training.instruments import largest_eigenvalue

    H = np.diag([-5.0, 3.0, 1.0, -1.0]) + 0.01 * np.ones((4, 4))
    value, vector = largest_eigenvalue(lambda v: [H @ v[0]], [np.ones(4)], 2000)
    assert value == pytest.approx(np.linalg.eigvalsh(H)[-1], rel=1e-9)
    assert np.linalg.norm(H @ vector[0] - value * vector[0]) < 1e-4  # a vector converges as the root of its value


def test_curvature_steps_warm_start_and_resume_exactly(tmp_path: Path, monkeypatch) -> None:
    curvature = {"every": 2, "curvature_every": 3, "power_iterations": 4}
    config_dict = settings(tmp_path, epochs=3, checkpoint_every=1, instruments=curvature)
    reference = train(config_dict).run_dir
    total = instrument_file.read(reference).total
    assert [s for s, v in zip(total.steps, total.values("lambda_max")) if v is not None] == [3, 6, 9, 12, 15, 18]
    assert total.steps == [1, 2, 3, 4, 6, 8, 9, 10, 12, 14, 15, 16, 18]
    broken = interrupted(config_dict, monkeypatch, 11)
    resume(broken.run_dir)
    assert (broken.run_dir / "instruments.csv").read_bytes() == (reference / "instruments.csv").read_bytes()


def test_a_damaged_row_inside_the_file_is_a_clear_error(tmp_path: Path) -> None:
    from autobp.common.errors import DataError

    run = train(settings(tmp_path, epochs=1))
    path = run.run_dir / "instruments.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([*lines[:3], "2,1,layer0\n", *lines[3:]]))
    with pytest.raises(DataError, match=r"instruments.csv:4: a damaged row"):
        instrument_file.read(run.run_dir)
    from autobp.rundir.reader import read_run

    assert read_run(run.run_dir).instruments is None  # the report reads the rest of the run, with a note
    assert any("instruments.csv:4" in note for note in read_run(run.run_dir).notes)


def test_the_python_api_reads_instruments_csv(tmp_path: Path) -> None:
    import autobp

    run = train(settings(tmp_path, epochs=1))
    records = autobp.load_run(run.run_dir).instruments
    total = instrument_file.read(run.run_dir).total
    mask = records["block"] == "total"
    assert records["step"][mask].tolist() == total.steps
    assert records["alpha"][mask][:-1].tolist() == total.values("alpha")[:-1] and np.isnan(records["alpha"][mask][-1])
