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
