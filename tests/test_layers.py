"""The package's layers import downward only: the engine knows nothing of configs or files, shared utilities sit
low, the trainer never imports the tools that read its output, and the CLI sits on top.

Every `import` in every module counts, including the lazy ones inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "autobp"

# Lowest first: a module may import its own layer and the layers before it.
LAYERS = ("engine", "common", "config", "model", "rundir", "health", "training", "sweeps", "tools", "api", "cli")
# Entry points above everything: the package's lazy front door and `python -m autobp`.
TOP = ("__init__", "__main__")


def layer_of(module: str) -> str:
    """`autobp.training.entry` → `training`; `autobp.health` → `health`."""
    return module.split(".")[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every autobp module that `path` imports."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    return imports_in(path.read_text(encoding="utf-8"), package)


def imports_in(source: str, package: str) -> list[tuple[int, str]]:
    """(line, module) for every autobp module that `source`, a module of `package`, imports."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import, resolved against the importing package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] if base == "autobp" else [base]
            found += [(node.lineno, name) for name in names]
    return sorted((line, name) for line, name in found if name.startswith("autobp."))


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_belongs_to_a_layer() -> None:
    strays = [str(p.relative_to(PACKAGE)) for p in MODULES
              if p.parent == PACKAGE and p.stem not in (*LAYERS, *TOP)]  # fmt: skip
    strays += [str(p.relative_to(PACKAGE)) for p in MODULES
               if p.parent != PACKAGE and p.relative_to(PACKAGE).parts[0] not in LAYERS]  # fmt: skip
    assert strays == [], "modules outside the layer table (add them to LAYERS in tests/test_layers.py)"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downward(path: Path) -> None:
    if path.parent == PACKAGE and path.stem in TOP:
        return
    own = LAYERS.index(layer_of(module_name(path)))
    upward = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name} ({layer_of(name)} is above {LAYERS[own]})"
        for line, name in imported(path)
        if layer_of(name) in LAYERS and LAYERS.index(layer_of(name)) > own
    ]
    assert upward == []


def test_the_checker_sees_every_form_of_import() -> None:
    """The test above must be able to fail: lazy, relative and from-package imports are all seen."""
    source = ("import autobp.engine\n"
              "def f():\n    from autobp.tools.report import render\n"
              "from ..rundir import reader\nfrom autobp import health\nfrom . import metrics\n")  # fmt: skip
    assert imports_in(source, "autobp.training") == [
        (1, "autobp.engine"), (3, "autobp.tools.report"), (4, "autobp.rundir"), (5, "autobp.health"),
        (6, "autobp.training"),
    ]  # fmt: skip
