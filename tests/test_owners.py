"""Every rule has one owner: words that files and tools share are written once, in the module that owns them."""

from __future__ import annotations

import ast
from pathlib import Path

import autobp
from autobp.rundir import status as status_module
from autobp.rundir.status import Status

PACKAGE = Path(autobp.__file__).resolve().parent
# Where a state's word means something else: (module, word) -> what. Each must still occur (a stale entry fails).
NOT_STATES = {
    ("autobp/rundir/summary.py", "diverged"): "summary.json's key `diverged`, the Divergence record summary.py owns",
    ("autobp/sweeps/plan.py", "failed"): "the sweep's progress tally: trials that ended unkept, what max_failures "
                                         "counts (diverged, interrupted, … too), not the state `failed`",
    ("autobp/sweeps/plan.py", "running"): "the same tally's label, beside `done` and `failed`",
}


def string_constants(source: str) -> list[tuple[int, str]]:
    """(line, value) of every string constant of Python source: literals, dict keys, Literal[...] members, and the
    literal parts of f-strings (a part is the whole text between two placeholders, so a word inside prose is not one)."""
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]  # fmt: skip


def quoted_outside(owner: Path, words: set[str]) -> list[tuple[str, int, str]]:
    """(module, line, word) for each string constant equal to one of `words` in autobp/, outside `owner`."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == owner:
            continue
        module = path.relative_to(PACKAGE.parent).as_posix()
        found += [(module, line, value) for line, value in string_constants(path.read_text(encoding="utf-8"))
                  if value in words]  # fmt: skip
    return found


def test_no_state_is_quoted_outside_the_status_module() -> None:
    owner = Path(status_module.__file__).resolve()
    found = quoted_outside(owner, {state.value for state in Status})
    stray = [f"{module}:{line}: {word!r}" for module, line, word in found if (module, word) not in NOT_STATES]
    assert not stray, f"state words belong to {owner.name} (use Status.…): " + "; ".join(stray)
    stale = set(NOT_STATES) - {(module, word) for module, _, word in found}
    assert not stale, f"NOT_STATES lists words no longer there: {sorted(stale)}"


def test_the_check_sees_a_quoted_state_and_nothing_else() -> None:
    source = (
        'status = "diverged"\n'
        'counts = {"pruned": 1}\n'
        'def f(s: Literal["pending", "x"]) -> None: ...\n'
        'text = f"{name} killed"  # prose around a placeholder is not a state\n'
        '"""A docstring saying the run was interrupted."""\n'
    )
    states = {state.value for state in Status}
    assert [(line, value) for line, value in string_constants(source) if value in states] == [
        (1, "diverged"), (2, "pruned"), (3, "pending")]  # fmt: skip
