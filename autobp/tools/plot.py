"""The gradient-flow figure: per-layer gradient norms over training, next to the loss curves.

matplotlib is an optional extra (`pip install 'autobp[plot]'`), imported only when a figure is drawn. The
figure is built with matplotlib's object-oriented API (no pyplot), so drawing never needs a display or changes
the user's backend.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from autobp.common import files
from autobp.common.errors import ConfigError
from autobp.rundir.logs import GRAD_NORM_W, OUT_GRAD_NORM
from autobp.rundir.reader import LayerLog, RunLog

FORMATS = (".png", ".svg", ".pdf")
INSTALL_HINT = "the gradient-flow plot needs matplotlib: pip install 'autobp[plot]'"
DPI = 110
SMOOTH_ABOVE = 100  # logged steps beyond which a moving median is drawn over the (faint) raw values
PANELS = (
    (OUT_GRAD_NORM, r"backpropagated signal $\|\partial L/\partial f_i\|$"),
    (GRAD_NORM_W, r"weight gradient $\|\partial L/\partial W_i\|$"),
)


def check_plot_target(path: Path) -> None:
    """Refuse, before anything runs, a figure that could not be drawn: a file type matplotlib is not asked to write,
    or matplotlib missing (ConfigError, exit code 2)."""
    if path.suffix.lower() not in FORMATS:
        raise ConfigError(f"--plot {path}: use a file name ending in {', '.join(FORMATS)}")
    files.output_path(path, "--plot")
    _matplotlib()


def plot_run(log: RunLog, path: Path) -> None:
    """Draw the run's gradient-flow figure into `path` (.png, .svg or .pdf)."""
    check_plot_target(path)
    figure_class, colormaps = _matplotlib()
    figure = figure_class(figsize=(15, 4.8), layout="constrained")
    axes = figure.subplots(1, 3)
    colors = colormaps["viridis"](np.linspace(0.0, 0.9, max(len(log.layers), 1)))
    labels = _layer_labels(log)
    diverged_at = log.summary.diverged.step if log.summary and log.summary.diverged else None
    for axis, (column, title) in zip(axes, PANELS):
        for layer, color in zip(log.layers, colors):
            steps, values = _series(layer, column)
            if len(steps) > SMOOTH_ABOVE:
                axis.plot(steps, values, color=color, linewidth=0.6, alpha=0.25)
                values = _moving_median(values, len(steps) // SMOOTH_ABOVE * 2 + 1)
            axis.plot(steps, values, color=color, linewidth=1.5, label=labels[layer.name])
        if diverged_at is not None:
            label = f"diverged (step {diverged_at})"
            axis.axvline(diverged_at, color="crimson", linestyle="--", linewidth=1, label=label)
        _style(axis, title, "step", log_scale=True)
    # Both gradient panels share the layers' colours: one legend for the two, beside the figure.
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=9,
                  title="input → output", title_fontsize=9)  # fmt: skip
    _plot_losses(axes[2], log)
    figure.suptitle(f"{log.name} ({log.status})", fontsize=12)
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=DPI, format=path.suffix.lower().removeprefix("."))
    files.write_output(path, buffer.getvalue(), "--plot")


def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib import colormaps
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return Figure, colormaps


def _layer_labels(log: RunLog) -> dict[str, str]:
    """`layer0 (tanh)`, … when the config says which activation each layer has."""
    activations = log.activations()
    return {
        layer.name: f"{layer.name} ({activations[index]})" if index < len(activations) else layer.name
        for index, layer in enumerate(log.layers)
    }


def _series(layer: LayerLog, column: str) -> tuple[np.ndarray, np.ndarray]:
    # Non-finite and empty values become gaps in the line rather than breaking the log scale.
    values = np.array([math.nan if v is None or not math.isfinite(v) else v for v in layer.values(column)])
    return np.array(layer.steps), values


def _moving_median(values: np.ndarray, window: int) -> np.ndarray:
    padded = np.pad(values, window // 2, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-gap window is a gap, not a problem
        return np.nanmedian(windows, axis=1)


def _plot_losses(axis: Any, log: RunLog) -> None:
    epochs = [row.get("epoch") for row in log.metrics]
    for name, color in (("train_loss", "tab:blue"), ("val_loss", "tab:orange")):
        values = [math.nan if row.get(name) is None else row[name] for row in log.metrics]
        if any(math.isfinite(v) for v in values):
            axis.plot(epochs, values, color=color, marker="o" if len(epochs) < 30 else None, markersize=3, label=name)
    losses = [row[name] for row in log.metrics for name in ("train_loss", "val_loss") if row.get(name) is not None]
    finite_losses = [v for v in losses if math.isfinite(v)]
    # A log scale helps only when the loss spans more than a decade.
    spans_decades = bool(finite_losses) and min(finite_losses) > 0 and max(finite_losses) > 10 * min(finite_losses)
    _style(axis, "loss", "epoch", log_scale=spans_decades)
    if finite_losses:
        axis.legend(fontsize=8)
    else:
        axis.text(0.5, 0.5, "no epoch completed", ha="center", va="center", transform=axis.transAxes, color="gray")


def _style(axis: Any, title: str, xlabel: str, *, log_scale: bool) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_title(title, fontsize=11)
    axis.set_xlabel(xlabel)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))  # whole steps and epochs
    if log_scale:
        axis.set_yscale("log", nonpositive="mask")
    axis.grid(True, which="major", alpha=0.3)
