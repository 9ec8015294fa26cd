"""Optimizers against their closed forms, convergence on a quadratic, exact resume, schedules and clipping."""

from __future__ import annotations

import inspect
import io
import math
from types import SimpleNamespace
from typing import get_args

import numpy as np
import pytest

from autobp.common.errors import ConfigError, DataError
from autobp.config.catalog import OPTIMIZERS, SCHEDULES
from autobp.config.models import OptimizerConfig, Schedule
from autobp.engine import Tensor
from autobp.training.optim import (
    UPDATE_RULES,
    Adam,
    AdamW,
    Momentum,
    Nesterov,
    RmsProp,
    Sgd,
    build_optimizer,
    clip_grad_norm,
    global_grad_norm,
    learning_rate,
)

LR = 0.1
MU = 0.9
RHO = 0.99
EPS = 1e-8
BETA1, BETA2 = 0.9, 0.999
G = np.array([0.5, -2.0, 3.0])
THETA0 = np.array([1.0, -1.0, 2.0])


def make(name: str, params: list[Tensor], decay: list[bool], weight_decay: float = 0.0):
    """The optimizer `name` as training builds it, with this file's hyperparameters."""
    cfg = OptimizerConfig(name=name, weight_decay=weight_decay, momentum=MU, rho=RHO, eps=EPS, beta1=BETA1, beta2=BETA2)
    return build_optimizer(cfg, params, decay)


def param(values, dtype=np.float64) -> Tensor:
    return Tensor(np.array(values, dtype=dtype), requires_grad=True)


def three_steps_with_constant_gradient(name: str) -> list[np.ndarray]:
    p = param(THETA0)
    opt = make(name, [p], decay=[True])
    deltas = []
    for _ in range(3):
        p.grad = G.copy()
        deltas.append(opt.step(LR)[0])
    np.testing.assert_allclose(p.data, THETA0 + sum(deltas), rtol=1e-14)
    return deltas


# With a constant gradient g each optimizer's t-th update (t = 1, 2, 3) has a closed form.
CLOSED_FORMS = {
    "sgd": lambda t: -LR * G,
    "momentum": lambda t: -LR * G * sum(MU**k for k in range(t)),  # v_t = (1 + μ + … + μ^(t−1))·g
    "nesterov": lambda t: -LR * G * sum(MU**k for k in range(t + 1)),  # g + μ·v_t
    "rmsprop": lambda t: -LR * G / (math.sqrt(1 - RHO**t) * np.abs(G) + EPS),  # s_t = (1 − ρ^t)·g²
    "adam": lambda t: -LR * G / (np.abs(G) + EPS),  # bias correction makes m̂ = g, v̂ = g²: ≈ −lr·sign(g)
    "adamw": lambda t: -LR * G / (np.abs(G) + EPS),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_first_three_steps_match_closed_form(name):
    deltas = three_steps_with_constant_gradient(name)
    for t, delta in enumerate(deltas, start=1):
        np.testing.assert_allclose(delta, CLOSED_FORMS[name](t), rtol=1e-12)


def test_adam_first_step_is_lr_times_sign_of_gradient():
    (delta, *_) = three_steps_with_constant_gradient("adam")
    np.testing.assert_allclose(delta, -LR * np.sign(G), rtol=1e-7)


def test_sgd_weight_decay_is_coupled_l2_and_only_where_flagged():
    wd = 0.5
    decayed, plain = param(THETA0), param(THETA0)
    opt = make("sgd", [decayed, plain], decay=[True, False], weight_decay=wd)
    for _ in range(3):
        decayed.grad, plain.grad = G.copy(), G.copy()
        opt.step(LR)
    # θ ← aθ − lr·g with a = 1 − lr·wd, three times.
    a = 1 - LR * wd
    np.testing.assert_allclose(decayed.data, a**3 * THETA0 - LR * G * (1 + a + a**2), rtol=1e-14)
    np.testing.assert_allclose(plain.data, THETA0 - 3 * LR * G, rtol=1e-14)


def test_adam_normalises_the_decay_term_but_adamw_does_not():
    wd = 0.5
    theta0, g = np.array([4.0, 4.0]), np.array([1.0, -1.0])
    adam_p, adamw_p, adamw_plain = param(theta0), param(theta0), param(theta0)
    adam = make("adam", [adam_p], decay=[True], weight_decay=wd)
    adamw = make("adamw", [adamw_p, adamw_plain], decay=[True, False], weight_decay=wd)
    for p in (adam_p, adamw_p, adamw_plain):
        p.grad = g.copy()
    (adam_delta,) = adam.step(LR)
    adamw_delta, plain_delta = adamw.step(LR)
    # Adam sees g + wd·θ = [3, 1] and still moves each coordinate by ≈ lr.
    g_l2 = g + wd * theta0
    np.testing.assert_allclose(adam_delta, -LR * g_l2 / (np.abs(g_l2) + EPS), rtol=1e-12)
    # AdamW moves by ≈ lr·sign(g) plus an unnormalised lr·wd·θ = 0.2.
    np.testing.assert_allclose(adamw_delta, -LR * wd * theta0 - LR * g / (np.abs(g) + EPS), rtol=1e-12)
    np.testing.assert_allclose(adamw_delta, [-0.3, -0.1], rtol=1e-7)
    np.testing.assert_allclose(plain_delta, -LR * g / (np.abs(g) + EPS), rtol=1e-12)


def test_adamw_three_steps_shrink_theta_geometrically():
    wd = 0.5
    p = param(THETA0)
    opt = make("adamw", [p], decay=[True], weight_decay=wd)
    for _ in range(3):
        p.grad = G.copy()
        opt.step(LR)
    # θ ← aθ + c with a = 1 − lr·wd and the constant Adam step c.
    a, c = 1 - LR * wd, -LR * G / (np.abs(G) + EPS)
    np.testing.assert_allclose(p.data, a**3 * THETA0 + c * (1 + a + a**2), rtol=1e-12)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_never_modifies_the_gradient(name):
    p = param(THETA0)
    opt = make(name, [p], decay=[True], weight_decay=0.1)
    p.grad = G.copy()
    opt.step(LR)
    np.testing.assert_array_equal(p.grad, G)


def test_parameter_without_gradient_is_left_alone():
    used, unused = param(THETA0), param(THETA0)
    opt = make("adam", [used, unused], decay=[True, True], weight_decay=0.1)
    used.grad = G.copy()
    _, delta = opt.step(LR)
    np.testing.assert_array_equal(unused.data, THETA0)
    np.testing.assert_array_equal(delta, np.zeros(3))


# f(θ) = ½‖Aθ − b‖², minimised at the least-squares solution; AᵀA has eigenvalues 2.25 and 5.
A = np.array([[2.0, 0.5], [0.0, 1.0], [1.0, -1.0]])
B = np.array([1.0, -2.0, 0.5])
CONVERGENCE_LR = {"sgd": 0.2, "momentum": 0.05, "nesterov": 0.05, "rmsprop": 0.05, "adam": 0.1, "adamw": 0.1}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_minimises_a_convex_quadratic(name):
    p = param(np.zeros(2))
    opt = make(name, [p], decay=[False])
    for _ in range(400):
        p.grad = A.T @ (A @ p.data - B)
        opt.step(CONVERGENCE_LR[name])
    np.testing.assert_allclose(p.data, np.linalg.lstsq(A, B, rcond=None)[0], atol=1e-5)


def run_steps(opt, params, grads) -> None:
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.copy()
        opt.step(LR)


def random_grads(steps: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return [[rng.normal(size=(3, 2)), rng.normal(size=2)] for _ in range(steps)]


def npz_roundtrip(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as loaded:
        return dict(loaded)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_resume_from_state_dict_is_bit_identical(name):
    grads = random_grads(10)
    rng = np.random.default_rng(1)
    start = [rng.normal(size=(3, 2)), rng.normal(size=2)]
    hyper = {"decay": [True, False], "weight_decay": 0.01}

    straight = [param(a) for a in start]
    run_steps(make(name, straight, **hyper), straight, grads)

    resumed = [param(a) for a in start]
    first = make(name, resumed, **hyper)
    run_steps(first, resumed, grads[:5])
    state = npz_roundtrip(first.state_dict())
    resumed = [param(p.data) for p in resumed]
    second = make(name, resumed, **hyper)
    second.load_state_dict(state)
    run_steps(second, resumed, grads[5:])

    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a.data, b.data)


def test_state_dict_holds_step_count_and_moments():
    p = param(THETA0)
    opt = make("adam", [p], decay=[True])
    p.grad = G.copy()
    opt.step(LR)
    state = opt.state_dict()
    assert sorted(state) == ["exp_avg.0", "exp_avg_sq.0", "step"]
    assert int(state["step"]) == 1
    np.testing.assert_allclose(state["exp_avg.0"], (1 - BETA1) * G)
    np.testing.assert_allclose(state["exp_avg_sq.0"], (1 - BETA2) * G**2)


def test_loading_state_of_another_optimizer_is_a_data_error():
    p = param(THETA0)
    with pytest.raises(DataError, match=r"missing \['velocity.0'\]"):
        make("momentum", [p], decay=[True]).load_state_dict(make("adam", [p], decay=[True]).state_dict())


def test_loading_state_of_another_model_is_a_data_error():
    state = make("momentum", [param(np.zeros(4))], decay=[True]).state_dict()
    with pytest.raises(DataError, match=r"'velocity.0' has shape \(4,\), but the model needs \(3,\)"):
        make("momentum", [param(THETA0)], decay=[True]).load_state_dict(state)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_float32_parameters_stay_float32(name):
    p = param(THETA0, dtype=np.float32)
    opt = make(name, [p], decay=[True], weight_decay=0.1)
    for _ in range(3):
        p.grad = G.astype(np.float32)
        deltas = opt.step(np.float64(LR))  # even a NumPy float64 learning rate must not promote
    assert p.data.dtype == np.float32
    assert deltas[0].dtype == np.float32
    assert all(a.dtype == np.float32 for key, a in opt.state_dict().items() if key != "step")


def optimizer_config(name="adam", lr=0.1, schedule=None) -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        lr=lr,
        weight_decay=0.01,
        momentum=0.8,
        beta1=0.85,
        beta2=0.99,
        eps=1e-6,
        rho=0.95,
        schedule=schedule or SimpleNamespace(name="constant"),
        clip_grad_norm=None,
    )


@pytest.mark.parametrize(
    ("name", "expected_class", "hyper"),
    [
        ("sgd", Sgd, {}),
        ("momentum", Momentum, {"momentum": 0.8}),
        ("nesterov", Nesterov, {"momentum": 0.8}),
        ("rmsprop", RmsProp, {"rho": 0.95, "eps": 1e-6}),
        ("adam", Adam, {"beta1": 0.85, "beta2": 0.99, "eps": 1e-6}),
        ("adamw", AdamW, {"beta1": 0.85, "beta2": 0.99, "eps": 1e-6}),
    ],
)
def test_build_optimizer_reads_its_hyperparameters_from_the_config(name, expected_class, hyper):
    opt = build_optimizer(optimizer_config(name), [param(THETA0), param([0.0])], [True, False])
    assert type(opt) is expected_class
    assert opt.decay == [True, False]
    assert opt.weight_decay == 0.01
    assert {key: getattr(opt, key) for key in hyper} == hyper


def test_every_catalog_optimizer_has_an_update_rule_reading_config_keys_with_no_defaults_of_its_own():
    assert set(UPDATE_RULES) == set(OPTIMIZERS)
    for name, rule in UPDATE_RULES.items():
        assert set(OPTIMIZERS[name].reads) <= set(OptimizerConfig.model_fields)
        # The config model owns every default: a rule that kept one could drift from it.
        defaults = [p.name for p in inspect.signature(rule.__init__).parameters.values() if p.default is not p.empty]
        assert defaults == [], (name, defaults)


def test_every_catalog_schedule_has_a_config_model_with_exactly_the_keys_it_reads():
    models = {model.model_fields["name"].default: model for model in get_args(get_args(Schedule)[0])}
    assert set(models) == set(SCHEDULES)
    for name, model in models.items():
        assert set(model.model_fields) - {"name"} == set(SCHEDULES[name].reads), name


def test_build_optimizer_rejects_an_unknown_name():
    with pytest.raises(ConfigError, match="optimizer.name: unknown optimizer 'lbfgs'"):
        build_optimizer(optimizer_config("lbfgs"), [param(THETA0)], [True])


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (SimpleNamespace(name="constant"), {0: 0.1, 5: 0.1, 9: 0.1}),
        (SimpleNamespace(name="step", step_size=3, gamma=0.1), {0: 0.1, 2: 0.1, 3: 0.01, 5: 0.01, 7: 0.001}),
        (SimpleNamespace(name="exponential", gamma=0.5), {0: 0.1, 1: 0.05, 3: 0.0125}),
        # t_max defaults to total_epochs = 10: halfway at epoch 5, min_lr from epoch 10 on.
        (SimpleNamespace(name="cosine", min_lr=0.02, t_max=None), {0: 0.1, 5: 0.06, 10: 0.02, 12: 0.02}),
        (
            SimpleNamespace(name="cosine", min_lr=0.0, t_max=4),
            {0: 0.1, 1: 0.05 * (1 + math.sqrt(0.5)), 2: 0.05, 6: 0.0},
        ),
    ],
)
def test_schedule_values(schedule, expected):
    cfg = optimizer_config(schedule=schedule)
    actual = {epoch: learning_rate(cfg, epoch, total_epochs=10) for epoch in expected}
    assert actual == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert all(type(lr) is float for lr in actual.values())


def test_clip_grad_norm_rescales_to_max_norm_and_returns_the_norm_before():
    a, b, no_grad = param([0.0, 0.0]), param([0.0]), param([0.0])
    a.grad, b.grad = np.array([3.0, 4.0]), np.array([12.0])  # global norm √(9 + 16 + 144) = 13
    assert clip_grad_norm([a, b, no_grad], max_norm=6.5) == pytest.approx(13.0, rel=1e-15)
    np.testing.assert_allclose(a.grad, [1.5, 2.0], rtol=1e-15)
    np.testing.assert_allclose(b.grad, [6.0], rtol=1e-15)
    assert global_grad_norm([a, b, no_grad]) == pytest.approx(6.5, rel=1e-15)


def test_clip_grad_norm_leaves_small_gradients_alone():
    p = param([0.0, 0.0], dtype=np.float32)
    p.grad = np.array([3.0, 4.0], dtype=np.float32)
    assert clip_grad_norm([p], max_norm=10.0) == pytest.approx(5.0)
    np.testing.assert_array_equal(p.grad, np.array([3.0, 4.0], dtype=np.float32))
    assert p.grad.dtype == np.float32


def _flat_layout(dtype) -> tuple[list[Tensor], np.ndarray]:
    """Parameters of several shapes, and a flat gradient array their `.grad` are views into (a compiled step's)."""
    from autobp.engine.compile import flat_views

    rng = np.random.default_rng(7)
    params = [param(rng.standard_normal(shape), dtype) for shape in [(3, 4), (4,), (4, 2), (2,)]]
    flat, views = flat_views(params)
    for p, view in zip(params, views):
        p.grad = view
    return params, flat


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_one_flat_update_equals_the_per_parameter_updates_bit_for_bit(name, dtype):
    """Given the flat gradient, every parameter is updated by one call per formula: the same bits, state included."""
    fused_params, flat = _flat_layout(dtype)
    plain_params, _ = _flat_layout(dtype)
    for p in plain_params:
        p.grad = p.grad.copy()
    fused = make(name, fused_params, decay=[True, False] * 2)
    plain = make(name, plain_params, decay=[True, False] * 2)
    rng = np.random.default_rng(8)
    for _ in range(4):
        flat[:] = rng.standard_normal(flat.size)
        for p, f in zip(plain_params, fused_params):
            p.grad = f.grad.copy()
        returned = fused.step(LR, flat)
        assert returned[0].base is returned[-1].base is not None  # views into one flat update: the fused path ran
        fused_deltas = [d.copy() for d in returned]
        plain_deltas = plain.step(LR)
        for a, b in zip(fused_deltas + [p.data for p in fused_params], plain_deltas + [p.data for p in plain_params]):
            assert a.dtype == b.dtype == dtype
            assert a.tobytes() == b.tobytes()
    for key, value in plain.state_dict().items():
        assert fused.state_dict()[key].tobytes() == value.tobytes(), key


def test_weight_decay_updates_parameter_by_parameter_even_with_a_flat_gradient():
    """The L2 term applies to weights only, so with weight decay the flat gradient is not used: biases stay undecayed."""
    params, flat = _flat_layout(np.float64)
    flat[:] = 0.0
    before = [p.data.copy() for p in params]
    deltas = make("sgd", params, decay=[True, False] * 2, weight_decay=0.5).step(LR, flat)
    for p, old, delta, decayed in zip(params, before, deltas, [True, False] * 2):
        np.testing.assert_allclose(delta, -LR * 0.5 * old if decayed else np.zeros_like(old), rtol=1e-15, atol=0)
        np.testing.assert_array_equal(p.data, old + delta)


def test_the_parameters_live_in_one_flat_array_and_one_replaced_since_is_still_updated():
    """The optimizer moves the parameters into one flat array (same values) and applies a flat update with one
    addition; a parameter whose array was replaced afterwards (as a load could) is updated where it now is."""
    params, flat = _flat_layout(np.float64)
    values = [p.data.copy() for p in params]
    opt = Sgd(params, decay=[True, False] * 2, weight_decay=0.0)
    assert params[0].data.base is params[-1].data.base is not None
    assert all(np.array_equal(p.data, v) for p, v in zip(params, values))
    flat[:] = np.arange(flat.size, dtype=np.float64)
    opt.step(LR, flat)
    for p, v in zip(params, values):
        np.testing.assert_array_equal(p.data, v - LR * p.grad)
    replaced = np.ones_like(params[1].data)
    params[1].data = replaced
    before = [p.data.copy() for p in params]
    opt.step(LR, flat)
    assert params[1].data is replaced
    for p, old in zip(params, before):
        np.testing.assert_array_equal(p.data, old - LR * p.grad)
