"""Every file schema has one owner: its column names are written as string literals only in the module that owns
them, and every other module of the package reads them from there. (Tests spell the columns out on purpose: they
check the file format independently of the code that writes it.) So has every run and trial state: `Status`
(rundir/status.py) spells them, and nothing else in the package quotes one.

metrics.csv's loss and metric columns (`train_loss`, `val_accuracy`, …) are the catalog's metric names with a split
prefix (`config.catalog.METRICS`, `MONITORS`): a module may name one as the monitor or curve it means. What the file
alone owns is its list of columns and its bookkeeping columns (`lr`, `seconds`), so a literal list holding them is
what this test refuses.

trials.csv's columns are owned by `sweeps/record.py` (`TrialsCsv`): its status, epochs, seconds and reason are
summary.json's fields under their own names, so only a list holding `trial` or `run_dir` beside them copies its header.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import autobp
from autobp.config.catalog import METRICS
from autobp.rundir.logs import (
    GRADIENT_COLUMNS, GRADIENT_VALUES, LAYER, LR, METRICS_BOOKKEEPING, SECONDS, SPLITS,
)  # fmt: skip
from autobp.rundir.status import Status
from autobp.sweeps.record import RUN_DIR, TRIAL, TrialsCsv

PACKAGE = Path(autobp.__file__).parent
LOGS_OWNER = "rundir/logs.py"
TRIALS_OWNER = "sweeps/record.py"
STATUS_OWNER = "rundir/status.py"
STATES = [state.value for state in Status]
# Where a state's word means something else: (module, word) -> what. Each must still occur (a stale entry fails).
NOT_STATES = {
    ("rundir/summary.py", "diverged"): "summary.json's key `diverged`, the Divergence record summary.py owns",
    ("sweeps/run.py", "failed"): "the sweep's progress tally: trials that ended unkept, what max_failures counts "
                                 "(diverged, interrupted, … too), not the state `failed`",
    ("sweeps/run.py", "running"): "the same tally's label, beside `done` and `failed`",
}
METRICS_COLUMNS = [*METRICS_BOOKKEEPING, *(f"{split}_{metric}" for metric in METRICS for split in SPLITS)]


def _modules(root: Path) -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(root.rglob("*.py")):
        yield path.relative_to(root).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the bare string expressions (docstrings): prose, not code."""
    bare = (node.value for node in ast.walk(tree) if isinstance(node, ast.Expr))
    return {id(value) for value in bare if isinstance(value, ast.Constant)}


def literals_outside(
    root: Path, owner: str, names: Iterable[str], allowed: Iterable[tuple[str, str]] = (),
) -> list[str]:  # fmt: skip
    """`module:line: 'name'` for each string literal equal to one of `names` in a module of `root` other than
    `owner`, less the (module, name) pairs `allowed`."""
    allowed = set(allowed)
    return [f"{module}:{line}: {name!r}" for module, line, name in _literals(root, owner, names)
            if (module, name) not in allowed]  # fmt: skip


def _literals(root: Path, owner: str, names: Iterable[str]) -> list[tuple[str, int, str]]:
    names = set(names)
    found = []
    for module, tree in _modules(root):
        if module == owner:
            continue
        prose = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in prose:
                found.append((module, node.lineno, node.value))
    return sorted(found)


def lists_outside(root: Path, owner: str, columns: Iterable[str], own: Iterable[str]) -> list[str]:
    """`module:line: [...]` for each tuple, list or set literal outside `owner` that holds two or more of a file's
    `columns`, one of them among the columns only that file has (`own`): a copy of part of its header."""
    columns, own = set(columns), set(own)
    found = []
    for module, tree in _modules(root):
        if module == owner:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                held = [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in columns]
                if len(held) >= 2 and own & set(held):
                    found.append((module, node.lineno, f"{module}:{node.lineno}: {held}"))
    return [text for *_, text in sorted(found)]


def test_the_finders_find_a_column_spelled_outside_its_owner(tmp_path: Path) -> None:
    (tmp_path / "owner.py").write_text('COLUMNS = ["epoch", "lr"]\n')
    (tmp_path / "reader.py").write_text('"""Reads lr."""\nSKIP = ("epoch", "lr")\nX = "lr"\nY = "epoch"\n')
    assert literals_outside(tmp_path, "owner.py", ["lr"]) == ["reader.py:2: 'lr'", "reader.py:3: 'lr'"]
    assert lists_outside(tmp_path, "owner.py", ["epoch", "lr"], ["lr"]) == ["reader.py:2: ['epoch', 'lr']"]
    assert lists_outside(tmp_path, "owner.py", ["epoch", "lr"], ["seconds"]) == []  # shares only common names


def test_gradients_csv_columns_are_spelled_only_in_their_owner() -> None:
    assert literals_outside(PACKAGE, LOGS_OWNER, GRADIENT_VALUES) == []
    assert lists_outside(PACKAGE, LOGS_OWNER, GRADIENT_COLUMNS, [LAYER, *GRADIENT_VALUES]) == []


def test_metrics_csv_columns_are_listed_only_in_their_owner() -> None:
    assert lists_outside(PACKAGE, LOGS_OWNER, METRICS_COLUMNS, [LR, SECONDS]) == []


def test_trials_csv_columns_are_listed_only_in_their_owner() -> None:
    columns = TrialsCsv.of(["optimizer.lr"], "val_loss", ["classification", "regression"]).header()
    assert lists_outside(PACKAGE, TRIALS_OWNER, columns, [TRIAL, RUN_DIR]) == []


def test_the_finder_sees_a_quoted_state_but_not_one_in_prose(tmp_path: Path) -> None:
    (tmp_path / "status.py").write_text('RUNNING = "running"\n')
    (tmp_path / "user.py").write_text(
        'status = "diverged"\n'
        'counts = {"pruned": 1}\n'
        'def f(s: Literal["pending", "x"]) -> None: ...\n'
        'text = f"{name} killed"  # prose around a placeholder is not a state\n'
        '"""The run was interrupted."""\n'
    )  # fmt: skip
    found = ["user.py:1: 'diverged'", "user.py:2: 'pruned'", "user.py:3: 'pending'"]
    assert literals_outside(tmp_path, "status.py", STATES) == found
    assert literals_outside(tmp_path, "status.py", STATES, [("user.py", "pruned")]) == [found[0], found[2]]


def test_no_state_is_quoted_outside_the_status_module() -> None:
    assert literals_outside(PACKAGE, STATUS_OWNER, STATES, NOT_STATES) == []
    stale = set(NOT_STATES) - {(module, name) for module, _, name in _literals(PACKAGE, STATUS_OWNER, STATES)}
    assert not stale, f"NOT_STATES lists words no longer there: {sorted(stale)}"
