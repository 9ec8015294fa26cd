"""The lean trainer: what a training process imports, and the helpers that keep it small."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from autobp.gradstats import median

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_median_is_numpys_median() -> None:
    rng = np.random.default_rng(0)
    for n in range(1, 30):
        values = list(rng.standard_normal(n) * 10.0 ** rng.uniform(-5, 5, n))
        assert median(values) == float(np.median(values))
    assert median([1.0, math.inf, 2.0]) == 2.0
    assert math.isnan(median([1.0, math.nan, 2.0])) and math.isnan(median([]))


def test_a_training_run_imports_nothing_it_does_not_use(tmp_path: Path) -> None:
    script = (
        "import sys, json\n"
        "from autobp.runner import train\n"
        f"train({str(CONFIGS / 'xor.yaml')!r}, ['training.epochs=2'], output={str(tmp_path)!r})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'autobp'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    modules = set(json.loads(done.stdout))
    assert "autobp.compiled" in modules  # the run went through the compiled path
    # numpy.ma (via np.median), sweeps, reports' plotting and predictions are not a training run's business.
    assert not modules & {"numpy.ma", "autobp.sweep", "autobp.plot", "autobp.predict"}
