"""`autobp report RUN_OR_SWEEP --html`: one HTML page per run or sweep, with interactive charts; `autobp view` serves
the same pages live.

Charts are drawn by plotly (the optional `report` extra): a run's report.html inlines its JavaScript (one
self-contained file); the pages of a sweep share one copy written in the sweep directory (PLOTLY_ASSET), referenced by
relative path, so they open offline and from a copied folder. The pages themselves are built by
`autobp.tools.html_page` (the shell and its sections), `html_run` and `html_sweep`.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from autobp.tools.html_page import page, plotly_objects
from autobp.tools.html_run import RunContext
from autobp.tools.html_sweep import SweepContext, sweep_trials

REPORT_FILE = "report.html"
PLOTLY_ASSET = "plotly.min.js"  # a sweep's one copy of plotly.js, beside sweep.yaml
PAGE_DATA_BYTES = 1_000_000  # a run page's own data beside plotly's JavaScript: curves, histograms, the graph


def write_report(path: Path, out: Path | None = None) -> Path:
    """Write the HTML report of a run or sweep directory (default DIR/report.html); return where it went. A sweep's
    trials get their own reports, all sharing one copy of plotly.js in the sweep directory."""
    from autobp.common import files
    from autobp.sweeps.record import is_sweep_dir

    plotly_objects()
    if out is not None:
        files.output_path(out, "-o")  # refused before the work, not after
    target = out or path / REPORT_FILE
    if is_sweep_dir(path):
        from autobp.sweeps.record import read_record

        read_record(path)  # a damaged sweep.yaml refuses the report (the live view shows it as a note instead)
        trials = sweep_trials(path)
        _check_trial_pages(path, trials)
        asset = _write_asset(path)
        for trial in trials:
            files.write_inside(trial, REPORT_FILE, page(RunContext(trial), _linked(asset, trial)))
        text = page(SweepContext(path, lambda trial: _relative(trial / REPORT_FILE, target.parent)),
                    _linked(asset, target.parent))  # fmt: skip
    else:
        in_sweep = out is None and is_sweep_dir(path.parent)  # a trial shares its sweep's plotly.js
        text = page(RunContext(path), _linked(_write_asset(path.parent), path) if in_sweep else _inline())
    if out is None:
        files.write_inside(path, REPORT_FILE, text)
    else:
        files.write_output(out, text, "-o")
    return target


def _check_trial_pages(sweep_dir: Path, trial_dirs: list[Path]) -> None:
    """Before the first page: every trial folder inside the sweep (none a link out of it), and room for the pages
    and the one copy of plotly's JavaScript."""
    from plotly.offline import get_plotlyjs

    from autobp.common import files

    for trial_dir in trial_dirs:
        files.inside(sweep_dir, trial_dir)
    files.check_room(sweep_dir, len(get_plotlyjs()) + (len(trial_dirs) + 1) * PAGE_DATA_BYTES, "the HTML reports")


def _write_asset(sweep_dir: Path) -> Path:
    """The sweep's copy of plotly.js, written once (again only if a different plotly made it)."""
    from plotly.offline import get_plotlyjs

    from autobp.common import files

    script = get_plotlyjs().encode()
    asset = sweep_dir / PLOTLY_ASSET
    if not asset.is_file() or asset.stat().st_size != len(script):
        files.write_inside(sweep_dir, PLOTLY_ASSET, script)
    return asset


def _inline() -> str:
    from plotly.offline import get_plotlyjs

    return f'<script type="text/javascript">{get_plotlyjs()}</script>'


def _linked(asset: Path, page_dir: Path) -> str:
    return f'<script type="text/javascript" src="{html.escape(_relative(asset, page_dir))}"></script>'


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve()).replace(os.sep, "/")
