"""What the training loss did, epoch by epoch (metrics.csv), and the training score it reached."""

from __future__ import annotations

from dataclasses import dataclass

from autobp.config.catalog import task_metric, task_of_loss
from autobp.config.models import Config
from autobp.health.layers import finite, is_finite
from autobp.health.thresholds import CLIMB, CLIMB_SHARE, FALLING_LEVEL, FALLING_SHARE, UNSTABLE_RISE, UNSTABLE_SHARE
from autobp.rundir.reader import RunLog


@dataclass
class Course:
    """The training loss epoch by epoch (metrics.csv) and what it says about the cause."""

    epochs: list[int]
    losses: list[float]

    @property
    def first(self) -> float:
        return self.losses[0]

    @property
    def lowest(self) -> float:
        return min(self.losses)

    @property
    def last(self) -> float:
        return self.losses[-1]

    def climbs(self) -> bool:
        """The loss ends well above its lowest value: the steps throw the weights out of a minimum they found."""
        above = self.last - self.lowest
        return above > CLIMB * abs(self.lowest) and above > CLIMB_SHARE * abs(self.first - self.lowest)

    def unstable(self) -> bool:
        """The loss rises from one epoch to the next in a good share of the epochs, each time by a visible amount."""
        if len(self.losses) < 4:
            return False
        spread = max(self.losses) - self.lowest
        # A rise counts against the loss's range and its level alike: a flat loss's jitter is no swing.
        rises = sum(b - a > UNSTABLE_RISE * max(spread, abs(a)) for a, b in zip(self.losses, self.losses[1:]))
        return spread > 0 and rises >= UNSTABLE_SHARE * (len(self.losses) - 1)

    def swings(self) -> bool:
        """Climbs or is unstable: the evidence that forbids ever raising the learning rate."""
        return self.climbs() or self.unstable()

    def recent_decline(self) -> tuple[float, float]:
        """(share of the whole decline made over the last third of the epochs, that drop relative to the level)."""
        window = self.losses[-max(2, len(self.losses) // 3):]
        whole = self.first - self.last
        drop = window[0] - window[-1] if len(self.losses) > 2 else whole
        if whole <= 0 or drop <= 0:
            return 0.0, 0.0
        return drop / whole, drop / max(abs(window[0]), 1e-12)

    def still_falling(self) -> bool:
        share, level = self.recent_decline()
        return share >= FALLING_SHARE and level >= FALLING_LEVEL


def loss_course(log: RunLog) -> Course | None:
    """The finite training losses by epoch; None without any."""
    rows = [row for row in log.metrics if is_finite(row.get("train_loss")) and is_finite(row.get("epoch"))]
    if not rows:
        return None
    return Course([int(row["epoch"]) for row in rows], [float(row["train_loss"]) for row in rows])


def training_score(log: RunLog, config: Config | None) -> float | None:
    """The best training accuracy (classification) or R² (regression) of the run."""
    if config is None:
        return None
    column = f"train_{task_metric(task_of_loss(config.loss))}"
    return max(finite(row.get(column) for row in log.metrics), default=None)


def steps_per_epoch(log: RunLog) -> int:
    """Batches in an epoch: the step count logged with the first epoch."""
    first = log.metrics[0].get("step") if log.metrics else None
    return int(first) if first else 0
