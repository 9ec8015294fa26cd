"""autobp: declarative, config-driven training of composed networks on its own autodiff engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from autobp.train.runner import RunResult


def train(config: Any, overrides: Any = (), **options: Any) -> RunResult:
    """Train from a config path, dict or Config; see `autobp.train.runner.train`. Imported lazily to keep start-up fast."""
    from autobp.train.runner import train as run

    return run(config, overrides, **options)
