"""histograms.npz: the fixed bins, the counts the trainer writes at its snapshots, percentiles, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS

from autobp.common.errors import DataError
from autobp.model.network import build_network
from autobp.model.prepare import prepare
from autobp.rundir.histograms import (
    BINS,
    MAX_SNAPSHOTS,
    QUANTITIES,
    SAMPLE,
    HistogramLog,
    bin_edges,
    bin_index,
    read,
    sample,  # fmt: skip
)
from autobp.training.entry import resume, train
from autobp.training.state import INIT_STREAM


def test_every_value_falls_in_the_bin_whose_edges_hold_it() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.standard_normal(2000) * 10.0 ** rng.uniform(-14, 6, 2000), [0.0, -0.0, 1e-12, -1e-12, 1e4, -1e4, 1.0],
        [np.inf, -np.inf, 5e-13, 3e5],
    ])  # fmt: skip
    edges = bin_edges()
    index = bin_index(values)
    assert len(edges) == BINS + 1 and np.all(np.diff(edges) > 0)
    assert np.all((edges[index] <= values) & (values <= edges[index + 1]))
    # Bins are half-open away from zero, as np.histogram's are towards +inf: exact decade edges agree with it.
    positive = values[values > 1e-12]
    expected, _ = np.histogram(positive, bins=np.concatenate([edges[BINS // 2 + 1 : -1], [np.inf]]))
    assert np.array_equal(np.bincount(bin_index(positive), minlength=BINS)[BINS // 2 + 1 :], expected)


def test_a_snapshot_counts_each_array_in_its_own_histogram() -> None:
    rng = np.random.default_rng(1)
    arrays = [(rng.standard_normal((5, 4)) * 1e-6, rng.standard_normal((5, 4)), rng.standard_normal((64, 4)) * 3),
              (np.array([[np.nan, 1.0]]), np.ones((4, 2)), rng.standard_normal((5000, 2)))]  # fmt: skip
    log = HistogramLog(["layer0", "layer1"], total_steps=10)
    log.record(1, 1, arrays)
    counts, nans = log.counts[0], log.nan_counts[0]
    for layer, triple in enumerate(arrays):
        for q, array in enumerate(triple):
            kept = sample(array)
            finite = kept[~np.isnan(kept)]
            assert np.array_equal(counts[layer, q], np.bincount(bin_index(finite), minlength=BINS))
            assert nans[layer, q] == np.isnan(kept).sum()
    assert counts[1, 2].sum() == 1000 <= SAMPLE  # 10,000 entries, every 10th counted
    assert nans[1, 0] == 1


def test_percentiles_from_the_bins_are_within_a_bin_of_the_exact_ones() -> None:
    rng = np.random.default_rng(2)
    values = rng.lognormal(-3, 2, 1000) * rng.choice([-1, 1], 1000)
    log = HistogramLog(["layer0"], total_steps=1)
    log.record(1, 1, [(values, values, values)])
    histograms = _in_memory(log)
    levels = (0, 16, 50, 84, 100)
    estimate = histograms.percentiles(0, "weight", levels)[0]
    exact = np.percentile(values, levels)
    width = 10 ** (1 / 8)  # one bin spans this factor of |v|
    assert np.all(np.sign(estimate) == np.sign(exact))
    assert np.all((np.abs(estimate) <= np.abs(exact) * width) & (np.abs(estimate) >= np.abs(exact) / width))


def _in_memory(log: HistogramLog):
    from autobp.rundir.histograms import Histograms

    return Histograms(np.array(log.steps), np.array(log.epochs), log.layers, np.stack(log.counts),
                      np.stack(log.nan_counts))  # fmt: skip


@pytest.fixture(scope="module")
def deep_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    return train(CONFIGS / "deep_sigmoid.yaml", ["training.epochs=3"], output=runs).run_dir


def test_training_writes_bounded_snapshots_starting_from_the_initial_weights(deep_run: Path) -> None:
    histograms = read(deep_run)
    config, dataset = prepare(deep_run / "config.yaml")
    steps = 3 * 10  # 3 epochs of 10 batches
    assert histograms.steps.tolist() == list(range(1, steps + 1))
    assert histograms.counts.shape == (steps, 9, len(QUANTITIES), BINS)
    assert not histograms.nan_counts.any()
    # Step 1's W is the initial weights, counted before the first update: rebuild them from the seed.
    network = build_network(config, dataset.n_features, np.random.default_rng([config.seed, INIT_STREAM]))
    for index, layer in enumerate(network.layers):
        expected = np.bincount(bin_index(sample(layer.weight.data)), minlength=BINS)
        assert np.array_equal(histograms.counts[0, index, QUANTITIES.index("weight")], expected)
    # Pre-activations of a 32-row batch × 16 units: 512 entries, all counted.
    assert histograms.counts[:, 1, 2].sum(axis=-1).tolist() == [512] * steps


def test_snapshots_are_spaced_to_at_most_the_bound() -> None:
    log = HistogramLog(["layer0"], total_steps=12_345)
    wanted = [step for step in range(1, 12_346) if log.wants(step)]
    assert wanted[0] == 1 and wanted[-1] == 12_345 and len(wanted) <= MAX_SNAPSHOTS + 2
    for step in wanted:
        log.record(step, 1, [(np.ones(3), np.ones(3), np.ones(3))])
    extended = [step for step in range(12_346, 40_000, 50)]
    for step in extended:  # as after --resume with more epochs: thinned, never beyond the bound
        log.record(step, 2, [(np.ones(3), np.ones(3), np.ones(3))])
    assert len(log.steps) <= MAX_SNAPSHOTS + 2 and log.steps[0] == 1 and log.steps[-1] == extended[-1]
    assert log.steps == sorted(log.steps)


def test_same_seed_same_histograms_and_resume_keeps_the_earlier_snapshots(tmp_path: Path) -> None:
    first = train(CONFIGS / "xor.yaml", ["training.epochs=4"], output=tmp_path / "a").run_dir
    again = train(CONFIGS / "xor.yaml", ["training.epochs=4"], output=tmp_path / "b").run_dir
    a, b = read(first), read(again)
    assert np.array_equal(a.counts, b.counts) and np.array_equal(a.steps, b.steps)
    resumed = train(CONFIGS / "xor.yaml", ["training.epochs=2"], output=tmp_path / "c").run_dir
    resume(resumed, ["training.epochs=4"])
    c = read(resumed)
    assert np.array_equal(c.steps, a.steps) and np.array_equal(c.counts, a.counts)


def test_a_damaged_histograms_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "histograms.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="histograms.npz"):
        read(tmp_path)
    np.savez(tmp_path / "histograms.npz", steps=np.arange(2))
    with pytest.raises(DataError, match="missing epochs, layers, counts, nan_counts"):
        read(tmp_path)
