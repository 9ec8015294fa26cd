"""`data.shuffle: window`: windows of contiguous rows in a shuffled order, each shuffled within itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_run, interrupted, resumable_config

from autobp.common.errors import ConfigError
from autobp.config.models import SHUFFLE_WINDOW
from autobp.config.configfile import config_from_dict
from autobp.training.entry import resume, train
from autobp.training.state import RandomStreams


def windowed(tmp_path: Path, window: int = 24, **training) -> dict:
    raw = resumable_config(tmp_path, **training)
    raw["data"] |= {"shuffle": "window", "shuffle_window": window}
    return raw


@pytest.mark.parametrize(("n", "window"), [(100, 7), (96, 32), (5, 2)])
def test_a_window_order_visits_every_row_once_window_by_window(n: int, window: int) -> None:
    order = RandomStreams(3, dropout=False).epoch_order(n, window)
    assert np.array_equal(np.sort(order), np.arange(n))
    starts = (order // window) * window
    blocks = np.flatnonzero(np.diff(starts)) + 1  # where the order moves to another window
    assert len(blocks) == -(-n // window) - 1  # each window is visited in one stretch
    assert len(set(starts[np.r_[0, blocks]])) == len(blocks) + 1
    assert not np.array_equal(order, np.arange(n))  # shuffled, not in file order
    assert np.array_equal(order, RandomStreams(3, dropout=False).epoch_order(n, window))  # seeded


def test_a_window_of_all_rows_is_the_exact_permutation() -> None:
    assert np.array_equal(RandomStreams(3, False).epoch_order(50, 50), RandomStreams(3, False).epoch_order(50, None))


def test_window_is_off_by_default_and_defaults_its_size(tmp_path: Path) -> None:
    assert config_from_dict(resumable_config(tmp_path)).data.shuffle == "exact"
    raw = resumable_config(tmp_path)
    raw["data"]["shuffle"] = "window"
    assert config_from_dict(raw).data.shuffle_window == SHUFFLE_WINDOW
    raw["data"] = {**resumable_config(tmp_path)["data"], "shuffle_window": 8}
    with pytest.raises(ConfigError, match=r"data\.shuffle_window.*only used with data\.shuffle: window"):
        config_from_dict(raw)


def test_windowed_training_learns_and_reruns_bit_identically(tmp_path: Path) -> None:
    first, second = train(windowed(tmp_path)), train(windowed(tmp_path))
    assert first.summary.final["val_accuracy"] >= 0.8  # as the exact permutation reaches on these moons
    assert_same_run(first.run_dir, second.run_dir)
    exact = train(resumable_config(tmp_path))
    assert (exact.run_dir / "gradients.csv").read_bytes() != (first.run_dir / "gradients.csv").read_bytes()


@pytest.mark.parametrize("stop_at", [4, 25])  # inside the first epoch, inside a later one
def test_resume_inside_a_windowed_epoch_is_bit_identical(tmp_path: Path, monkeypatch, stop_at: int) -> None:
    reference = train(windowed(tmp_path))
    broken = interrupted(windowed(tmp_path), monkeypatch, stop_at)
    assert broken.status == "interrupted"
    resumed = resume(broken.run_dir)
    assert resumed.status == "completed"
    assert_same_run(reference.run_dir, resumed.run_dir)
