"""`autobp gradcheck`: backpropagation agrees with central differences and forward mode on every example
network, and a deliberately broken derivative rule is caught in the layer that uses it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import CONFIGS
from typer.testing import CliRunner

from autobp.cli import app
from autobp.engine import ops
from autobp.tools import gradcheck
from autobp.tools.gradcheck import TOLERANCE, check_config

EXAMPLES = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("sweep"))
LAYER_ROW = re.compile(r"^(layer\d+)\s+\S+\s+\S+\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(ok|FAIL)$", re.MULTILINE)


def layer_rows(output: str) -> dict[str, tuple[list[float], str]]:
    """Each layer's four errors (central differences w, b; forward mode w, b) and its flag, from the table."""
    return {m[1]: ([float(m[i]) for i in range(2, 6)], m[6]) for m in LAYER_ROW.finditer(output)}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_network_passes(example: Path) -> None:
    result = CliRunner().invoke(app, ["gradcheck", str(example)])
    assert result.exit_code == 0, result.output
    rows = layer_rows(result.output)
    n_layers = int(re.search(r"(\d+) layers", result.output)[1])
    assert list(rows) == [f"layer{i}" for i in range(n_layers)]
    assert all(flag == "ok" and max(errors) < TOLERANCE for errors, flag in rows.values())
    parameters = re.search(r"([\d,]+) parameters", result.output)[1]
    assert re.search(rf"forward mode\s+{parameters} passes \(one JVP per parameter\)", result.output)
    assert "gradient check passed" in result.output


def test_set_overrides_change_the_network_checked() -> None:
    result = CliRunner().invoke(app, ["gradcheck", str(CONFIGS / "xor.yaml"), "--set", "model.hidden=[3, 5]"])
    assert result.exit_code == 0, result.output
    assert "3 layers, 41 parameters" in result.output  # (2·3 + 3) + (3·5 + 5) + (5·2 + 2)


def test_a_wrong_activation_derivative_fails_in_the_layer_that_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops.Tanh, "partial", lambda self, i, out, x: 1.0 - out)  # the truth is 1 − out²
    result = CliRunner().invoke(app, ["gradcheck", str(CONFIGS / "xor.yaml")])  # tanh hidden layer, identity output
    assert result.exit_code == 1, result.output
    rows = layer_rows(result.output)
    (fd_w, fd_b, jvp_w, jvp_b), flag = rows["layer0"]
    assert flag == "FAIL" and fd_w > 1e-2 and fd_b > 1e-2
    # Forward mode applies the same (wrong) local derivative, so it still agrees with reverse mode.
    assert jvp_w < TOLERANCE and jvp_b < TOLERANCE
    assert rows["layer1"][1] == "ok"
    assert "gradient check FAILED" in result.output and "layer0.weight: central differences" in result.output
    assert "suspect the derivative rule" in result.output


def test_a_wrong_reverse_rule_disagrees_with_forward_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    reverse_rule = ops.Tanh.vjp
    monkeypatch.setattr(ops.Tanh, "vjp", lambda self, i, g, out, x: 2.0 * reverse_rule(self, i, g, out, x))
    report = check_config(CONFIGS / "xor.yaml")
    errors = {a.name: a for a in report.arrays}
    assert not report.ok
    assert errors["layer0.weight"].jvp_error > 0.1 and errors["layer0.weight"].fd_error > 0.1
    assert errors["layer1.weight"].jvp_error < TOLERANCE and errors["layer1.weight"].fd_error < TOLERANCE
    assert report.timing.forward_error > 0.1
    assert "suspect the derivative rule" not in report.format()


def test_large_arrays_and_networks_are_checked_and_timed_on_a_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gradcheck, "FD_MAX_ENTRIES", 5)
    monkeypatch.setattr(gradcheck, "FORWARD_MAX_PASSES", 10)
    monkeypatch.setattr(gradcheck, "FORWARD_SAMPLE", 4)
    report = check_config(CONFIGS / "xor.yaml")  # weights 2×4 and 4×2: 8 entries each, 22 parameters
    assert report.ok
    assert [(a.name, a.checked, a.size) for a in report.arrays] == [
        ("layer0.weight", 5, 8), ("layer0.bias", 4, 4), ("layer1.weight", 5, 8), ("layer1.bias", 2, 2),
    ]  # fmt: skip
    assert report.timing.parameters == 22 and report.timing.forward_passes == 4
    text = report.format()
    assert "extrapolated from 4 timed passes" in text
    assert "sample of the entries of: layer0.weight (5 of 8), layer1.weight (5 of 8)" in text


def test_a_bad_config_exits_with_code_2() -> None:
    result = CliRunner().invoke(app, ["gradcheck", str(CONFIGS / "xor.yaml"), "--set", "model.activation=swish"])
    assert result.exit_code == 2
    assert "model.activation" in result.stderr and "Traceback" not in result.output


CURVATURE_ROW = re.compile(r"^(layer\d+)\s+\S+\s+\S+\s+(\S+)\s+(\S+)\s+(ok|FAIL)$", re.MULTILINE)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_networks_hessian_vector_products_pass(example: Path) -> None:
    result = CliRunner().invoke(app, ["gradcheck", str(example), "--order", "2"])
    assert result.exit_code == 0, result.output
    rows = {m[1]: (float(m[2]), float(m[3]), m[4]) for m in CURVATURE_ROW.finditer(result.output)}
    n_layers = int(re.search(r"(\d+) layers", result.output)[1])
    assert list(rows) == [f"layer{i}" for i in range(n_layers)]
    assert all(flag == "ok" and max(w, b) < TOLERANCE for w, b, flag in rows.values())
    assert re.search(r"forward over reverse\s+1 pass: .+ best of 5", result.output)
    assert re.search(r"central differences\s+2 gradients, at θ \+ εv and θ − εv\s+\S+ m?s, best of 5", result.output)
    assert re.search(r"Forward over reverse costs [\d.]+× two gradients here", result.output)
    assert "Hessian-vector check passed" in result.output


def test_a_wrong_second_order_rule_fails_where_it_is_used_while_gradients_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    # tanh's local derivative on tensors, 1% off: the rule only forward over reverse uses (gradients use `partial`).
    monkeypatch.setattr(ops.Tanh, "partial_graph", lambda self, i, out, x: 1.0 - out * out * 1.01)
    assert check_config(CONFIGS / "xor.yaml").ok
    report = gradcheck.check_curvature(CONFIGS / "xor.yaml")
    errors = {a.name: a.error for a in report.arrays}
    assert errors["layer0.weight"] > 1e-3 and errors["layer0.bias"] > 1e-3
    # The output layer's block of H·v reaches it through the identity output, not through tanh's rule.
    assert [a.name for a in report.failures] == ["layer0.weight", "layer0.bias"]
    result = CliRunner().invoke(app, ["gradcheck", str(CONFIGS / "xor.yaml"), "--order", "2", "-q"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "Hessian-vector check FAILED" in text and "suspect the second-order rule" in text
    assert "layer0.weight:" in text and "layer1.weight:" not in text


def test_an_order_beyond_two_is_refused_with_exit_code_2() -> None:
    result = CliRunner().invoke(app, ["gradcheck", str(CONFIGS / "xor.yaml"), "--order", "3"])
    assert result.exit_code == 2
    assert "--order" in result.output + result.stderr and "Traceback" not in result.output
