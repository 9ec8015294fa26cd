"""autobp: declarative, config-driven training of composed networks on its own autodiff engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from autobp.api import Run, Sweep, doctor, load_run, load_sweep, sweep, validate
    from autobp.training.ending import RunResult

API = ("load_run", "load_sweep", "validate", "sweep", "doctor", "Run", "Sweep")  # from autobp.api, imported on first use


def train(config: Any, overrides: Any = (), **options: Any) -> RunResult:
    """Train from a config path, dict or Config; see `autobp.training.entry.train`. Imported lazily to keep start-up fast."""
    from autobp.training.entry import train as run

    return run(config, overrides, **options)


def __getattr__(name: str) -> Any:
    if name in API:
        from autobp import api

        return getattr(api, name)
    raise AttributeError(f"module 'autobp' has no attribute {name!r}")
