"""Every file schema has one owner: its column names are spelled as string literals only in the module that owns them.

To guard another file, add a Schema to SCHEMAS: its owner module, its columns (read from the owner) and, per other
module, the words that name something else there (a summary.json field, a config key) with what they name.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

from autobp.sweeps.record import TRIALS_FILE, TrialsCsv, best_column

PACKAGE = Path(__file__).resolve().parent.parent / "autobp"


@dataclass(frozen=True)
class Schema:
    file: str
    owner: str  # the module, relative to the package, that spells the columns
    columns: frozenset[str]
    elsewhere: dict[str, tuple[set[str], str]] = field(default_factory=dict)  # module -> (words, what they name)


def _fixed_trials_columns() -> frozenset[str]:
    """trials.csv's columns that do not depend on the sweep (its swept keys and metrics do)."""
    monitor = "val_loss"
    return frozenset(TrialsCsv((), monitor).header()) - {monitor, best_column(monitor)}


SCHEMAS = [
    Schema(TRIALS_FILE, "sweeps/record.py", _fixed_trials_columns(), {
        "health.py": ({"epochs"}, "the config key training.epochs and health.json's field"),
        "rundir/histograms.py": ({"epochs"}, "histograms.npz's array"),
        "rundir/summary.py": ({"reason"}, "summary.json's field"),
        "sweeps/cluster.py": ({"run_dir"}, "summary.json's field"),
        "sweeps/executor.py": ({"status"}, "the key of run_trial's result"),
        "sweeps/plan.py": ({"trial"}, "the prefix of the trial folders' names, trial-000"),
        "sweeps/run.py": ({"epochs", "status"}, "the config key training.epochs; the key of run_trial's result"),
        "sweeps/search.py": ({"trial"}, "the Optuna trial's attribute holding the trial's name"),
        "tools/compare.py": ({"epochs", "run_dir", "seconds", "status"},
                             "summary.json's fields in compare's own table and JSON; isoformat's timespec"),
        "tools/doctor.py": ({"status"}, "doctor.json's field"),
        "tools/html_report.py": ({"epochs"}, "compare's column to sort the runs by"),
        "tools/report.py": ({"seconds", "status"}, "metrics.csv's column; the verified-fix table's column"),
        "tools/tensorboard_export.py": ({"seconds"}, "metrics.csv's column"),
        "tools/view.py": ({"epochs", "run_dir", "status"}, "the page's JSON keys, from summary.json"),
        "training/progress.py": ({"trial"}, "the unit the sweep's progress bar counts"),
        "training/runner.py": ({"reason", "seconds"}, "summary.json's field; metrics.csv's column"),
        "training/state.py": ({"seconds"}, "checkpoint.npz's array; isoformat's timespec"),
    }),  # fmt: skip
]


def _literals(path: Path) -> set[str]:
    """Every string constant of a module (docstrings and f-string parts included: they never equal a bare name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def _spelled_outside(schema: Schema) -> dict[str, set[str]]:
    """Modules other than the owner that spell a column of the schema, with the words not explained there."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if module == schema.owner:
            continue
        words = _literals(path) & schema.columns
        words -= schema.elsewhere.get(module, (set(), ""))[0]
        if words:
            found[module] = words
    return found


def test_every_column_is_spelled_only_by_its_owner() -> None:
    for schema in SCHEMAS:
        assert (PACKAGE / schema.owner).is_file(), schema.owner
        spelled = _spelled_outside(schema)
        assert not spelled, (f"{schema.file}'s columns are spelled outside {schema.owner}: {spelled}; import the "
                             "owner's names, or if the word names something else there, say what in `elsewhere`")  # fmt: skip


def test_the_guard_finds_a_column_spelled_outside_its_owner(tmp_path, monkeypatch) -> None:
    """The scan sees a header copied into another module, and not the same word inside a longer text."""
    module = tmp_path / "tools" / "copy.py"
    module.parent.mkdir()
    module.write_text('HEADER = ["trial", "status"]\nTEXT = f"{1} trial"\n', encoding="utf-8")
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "record.py").write_text('TRIAL = "trial"\n', encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    assert _spelled_outside(SCHEMAS[0]) == {"tools/copy.py": {"trial", "status"}}
