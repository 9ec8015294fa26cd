"""What the suite needs is declared: the `test` extra holds every package a test imports, and each extra a test
requires (conftest.require) provides the module asked of it."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions

from conftest import ROOT

LOCAL = {"autobp", *(path.stem for path in (ROOT / "tests").glob("**/*.py"))}  # tests' helpers, benchmarks


def requirements(block: str) -> set[str]:
    """The distribution names of a TOML list of requirement strings, normalized (PEP 503)."""
    return {normalized(re.split(r"[<>=!~\[; ]", item, maxsplit=1)[0]) for item in re.findall(r'"([^"]+)"', block)}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, set[str]]:
    """`dependencies` under "runtime", and each optional extra under its name, from pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text()
    runtime = re.search(r"^dependencies = \[(.*?)\]", text, flags=re.S | re.M)[1]
    extras = re.search(r"^\[project\.optional-dependencies\]\n(.*?)\n\[", text, flags=re.S | re.M)[1]
    found = {name: requirements(block) for name, block in re.findall(r"^(\w+) = \[(.*?)\]", extras, flags=re.M)}
    return {"runtime": requirements(runtime), **found}


def distributions(module: str) -> set[str]:
    return {normalized(name) for name in packages_distributions().get(module, [])}


def trees() -> list[ast.AST]:
    return [ast.parse(path.read_text()) for path in (ROOT / "tests").glob("*.py")]


def required() -> set[tuple[str, str]]:
    """(module, extra) of every `require(module, extra)` in the tests: what an extra's tests need from it."""
    return {(node.args[0].value, node.args[1].value) for tree in trees() for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require" and len(node.args) == 2}


def test_the_test_extra_holds_every_package_the_tests_import() -> None:
    """Every third-party import is the runtime's, the test extra's, or a module an extra's tests require."""
    imported: set[str] = set()
    for node in (node for tree in trees() for node in ast.walk(tree)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    third_party = sorted(imported - LOCAL - set(sys.stdlib_module_names) - {"__future__"})
    needs = declared()
    extras_own = {module for module, _ in required()}
    undeclared = [m for m in third_party if m not in extras_own and not distributions(m) & (needs["runtime"] | needs["test"])]
    assert "onnx" in third_party and undeclared == []


def test_each_required_extra_provides_its_module() -> None:
    calls = required()
    assert {module for module, _ in calls} >= {"plotly", "optuna", "distributed", "matplotlib"}
    needs = declared()
    assert [(module, extra) for module, extra in sorted(calls) if not distributions(module) & needs[extra]] == []
