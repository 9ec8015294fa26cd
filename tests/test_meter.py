"""The training meter counts correct predictions in chunks of batches: the counts must be those of every batch."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from autobp.training.metrics import EVAL_CHUNK, Meter, loss_targets

UNSTANDARDIZED = SimpleNamespace(y_mean=None, y_std=None)


def batches(loss: str, rows: int, batch: int = 32) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Random (outputs, targets as the loss takes them, loss value) batches covering `rows` rows; the last is short."""
    rng = np.random.default_rng(3)
    classes = 1 if loss == "bce" else 3
    labels = rng.integers(0, 2 if loss == "bce" else classes, rows)
    outputs = rng.standard_normal((rows, classes))
    targets = loss_targets(labels, loss, np.dtype(np.float64))
    return [(outputs[i : i + batch], targets[i : i + batch], float(rng.random())) for i in range(0, rows, batch)]


def expected_accuracy(loss: str, parts: list[tuple[np.ndarray, np.ndarray, float]]) -> float:
    outputs = np.concatenate([o for o, _, _ in parts])
    labels = np.concatenate([t.reshape(-1) for _, t, _ in parts])
    predicted = (outputs[:, 0] > 0) if loss == "bce" else outputs.argmax(axis=1)
    return float(np.mean(predicted == labels))


@pytest.mark.parametrize("loss", ["cross_entropy", "bce"])
def test_accuracy_over_more_batches_than_a_chunk_counts_every_row(loss: str) -> None:
    parts = batches(loss, 2 * EVAL_CHUNK + 100)
    meter = Meter("classification", loss, UNSTANDARDIZED)
    for output, targets, value in parts:
        meter.add(output, targets, value)
    result = meter.result()
    assert result["accuracy"] == expected_accuracy(loss, parts)
    n = sum(len(o) for o, _, _ in parts)
    assert result["loss"] == sum(value * len(o) for o, _, value in parts) / n  # summed in the same order


def test_a_meter_saved_between_chunks_continues_to_the_same_counts() -> None:
    """state_dict counts the batches still waiting for their chunk, so a checkpoint inside an epoch loses none."""
    parts = batches("cross_entropy", EVAL_CHUNK + 500)
    whole = Meter("classification", "cross_entropy", UNSTANDARDIZED)
    first = Meter("classification", "cross_entropy", UNSTANDARDIZED)
    for output, targets, value in parts:
        whole.add(output, targets, value)
    for output, targets, value in parts[:10]:  # 320 rows: fewer than a chunk, none counted yet
        first.add(output, targets, value)
    state = {key: value.copy() for key, value in first.state_dict().items()}
    assert int(state["correct"]) == round(expected_accuracy("cross_entropy", parts[:10]) * 320)
    resumed = Meter("classification", "cross_entropy", UNSTANDARDIZED)
    resumed.load_state_dict(state)
    for output, targets, value in parts[10:]:
        resumed.add(output, targets, value)
    assert resumed.result() == whole.result()


def regression_batches(rows: int, outputs: int, dtype: type, batch: int = 32) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(outputs)
    scale = rng.uniform(0.01, 100.0, (rows, 1))  # magnitudes that vary, so that any change of order shows in the bits
    predicted, targets = (rng.standard_normal((2, rows, outputs)) * scale).astype(dtype)
    return [(predicted[i : i + batch], targets[i : i + batch]) for i in range(0, rows, batch)]


def sums_batch_by_batch(parts: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Each batch's sums taken by themselves and added to the totals in order: what the meter must equal, bit for bit."""
    sse = y_sum = y_sq = 0.0
    for output, targets in parts:
        residual = output - targets
        sse = sse + np.einsum("ij,ij->j", residual, residual)
        y_sum = y_sum + targets.sum(axis=0)
        y_sq = y_sq + np.einsum("ij,ij->j", targets, targets)
    return {"sse": sse, "y_sum": y_sum, "y_sq": y_sq}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("outputs", [1, 2, 5])
@pytest.mark.parametrize("batch", [7, 32, 128])
def test_regression_sums_counted_in_chunks_are_those_of_every_batch_bit_for_bit(dtype: type, outputs: int,
                                                                               batch: int) -> None:  # fmt: skip
    """Chunks of stacked batches (the last one short) give the sums that adding batch by batch gives, to the bit."""
    parts = regression_batches(2 * EVAL_CHUNK + 100, outputs, dtype, batch)
    meter = Meter("regression", "mse", UNSTANDARDIZED)
    for output, targets in parts:
        meter.add(output, targets, 0.5)
    state = meter.state_dict()
    for key, expected in sums_batch_by_batch(parts).items():
        assert state[key].dtype == expected.dtype
        assert state[key].tobytes() == expected.tobytes(), key


def test_a_regression_meter_saved_between_chunks_continues_to_the_same_sums() -> None:
    parts = regression_batches(EVAL_CHUNK + 500, 3, np.float64)
    first = Meter("regression", "mse", UNSTANDARDIZED)
    for output, targets in parts[:10]:  # fewer rows than a chunk: nothing summed before state_dict
        first.add(output, targets, 0.5)
    resumed = Meter("regression", "mse", UNSTANDARDIZED)
    resumed.load_state_dict({key: value.copy() for key, value in first.state_dict().items()})
    for output, targets in parts[10:]:
        resumed.add(output, targets, 0.5)
    state = resumed.state_dict()
    for key, expected in sums_batch_by_batch(parts).items():
        assert state[key].tobytes() == expected.tobytes(), key
