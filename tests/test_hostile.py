"""Hostile input for `autobp validate` and `autobp train`: generated configs, YAML, CSV and npz edge cases, paths.

Every case ends cleanly: exit 0 (a valid config then trains, or stops with exit 2 or 3), or exit 2 with one short
paragraph that says where the problem is. Never a traceback, a hang or an attempt to allocate without bound.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import resource
import signal
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import as_unprivileged, give_to_unprivileged
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from autobp.cli import app
from autobp.config.schema import config_json_schema

MAX_MESSAGE = 2_000  # characters of an error message
MAX_LINE = 500  # characters of one of its lines
CASE_SECONDS = 30  # a case still running after this long has hung
SUBPROCESS_MEMORY = 1 << 30  # address space of `python -m autobp` in the memory-bound cases
FUZZ = settings(
    max_examples=150, derandomize=True, database=None, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)  # fmt: skip

CLASSIFY = {
    "name": "hostile",
    "seed": 1,
    "data": {"source": "blobs", "n_samples": 40, "n_classes": 3, "n_features": 2, "noise": 0.5, "val_fraction": 0.25},
    "model": {"layers": [{"units": 4, "activation": "relu", "dropout": 0.1}, {"init": "xavier"}], "init_scale": 0.1},
    "loss": "cross_entropy",
    "optimizer": {"name": "adam", "lr": 0.01, "schedule": {"name": "step", "step_size": 2}, "clip_grad_norm": 5.0},
    "training": {"epochs": 2, "batch_size": 8, "early_stopping": {"patience": 2}, "log_every": 1},
}
REGRESS = {
    "data": {"source": "csv", "path": "table.csv", "target": "y", "features": ["a", "b"], "val_fraction": 0.2},
    "model": {"hidden": [3], "activation": "tanh", "init": "he"},
    "loss": "huber",
    "optimizer": {"name": "momentum", "lr": 0.05, "weight_decay": 0.001, "schedule": {"name": "cosine"}},
    "training": {"epochs": 2, "batch_size": None, "dtype": "float32", "checkpoint_every": 1},
}
TABLE = "a,b,y\n" + "".join(f"{i % 5},{i % 3},{i * 0.5}\n" for i in range(12))
GOOD_YAML = "data:\n  source: xor\n  n_samples: 20\nmodel:\n  hidden: [3]\nloss: cross_entropy\n"


def _schema_keys() -> list[str]:
    schema = config_json_schema()
    return sorted({key for part in [schema, *schema["$defs"].values()] for key in part.get("properties", {})})


KEYS = st.sampled_from(_schema_keys()) | st.text(max_size=12)
HOSTILE_NUMBERS = st.sampled_from([
    0, -1, 2**31, 2**63, -(2**63), 10**9, 10**12, 10**30, 10**400, 1e-320, 1e308, -0.0,
    float("nan"), float("inf"), float("-inf"),
])  # fmt: skip
WORDS = st.sampled_from(["relu", "adam", "cosine", "csv", "auto", "float32", "table.csv", "../../x", "/", "", "~"])
LONG_TEXT = st.builds(lambda piece, count: piece * count, st.sampled_from(["x", "é", "💥", "\x00", "../"]),
                      st.integers(5_000, 100_000))  # fmt: skip
LEAVES = (
    st.none() | st.booleans() | st.integers() | st.floats() | HOSTILE_NUMBERS | WORDS | st.text(max_size=20)
    | LONG_TEXT
)
VALUES = st.recursive(
    LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4), max_leaves=8
)


# --- helpers -----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the test if the block runs longer than `seconds`: a hang fails instead of stalling."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def invoke(*args: object) -> Result:
    with time_limit(CASE_SECONDS):
        return CliRunner().invoke(app, [str(arg) for arg in args])


def assert_clean(result: Result, codes: tuple[int, ...] = (0, 2)) -> None:
    """The command ended with one of `codes` and no traceback; exit 2 with one short paragraph 'error: …'."""
    crash = None if isinstance(result.exception, (SystemExit, type(None))) else result.exception
    assert crash is None, "".join(traceback.format_exception(crash))
    assert result.exit_code in codes, result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert_short_error(result.output)


def assert_short_error(output: str) -> None:
    assert output.startswith("error: "), output
    assert len(output) < MAX_MESSAGE, output[:MAX_MESSAGE]
    assert "\n\n" not in output.strip(), output
    assert max(map(len, output.splitlines())) < MAX_LINE, output


def assert_error(result: Result, *fragments: str) -> None:
    assert_clean(result, (2,))
    for fragment in fragments:
        assert fragment in result.output, result.output


def write_config(folder: Path, config: Any) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def validate_then_train(config: Path, output: Path) -> None:
    """Validate; a valid config must then train a few steps to exit 0, or stop cleanly with exit 2 or 3."""
    result = invoke("validate", config)
    assert_clean(result)
    if result.exit_code == 0:
        limits = ["--set", "training.epochs=1", "--set", "training.max_steps=3"]
        assert_clean(invoke("train", config, *limits, "--output-dir", output, "--quiet"), (0, 2, 3))


def mutated(node: Any, path: tuple, action: str, value: Any, key: str) -> Any:
    """`node` with the value at `path` replaced, given a new key or item, or deleted."""
    if path:
        head, rest = path[0], path[1:]
        if not rest and action == "delete":
            node.pop(head)
        else:
            node[head] = mutated(node[head], rest, action, value, key)
        return node
    if action == "insert" and isinstance(node, dict):
        return {**node, key: value}
    if action == "insert" and isinstance(node, list):
        return [*node, value]
    return value


def key_paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from key_paths(child, (*prefix, key))


@st.composite
def mutated_configs(draw: st.DrawFn) -> Any:
    config = copy.deepcopy(draw(st.sampled_from([CLASSIFY, REGRESS])))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(key_paths(config))))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        config = mutated(config, path, action, draw(VALUES), draw(KEYS))
    return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the CSV the regression config reads, shared by the generated cases."""
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "table.csv").write_text(TABLE)
    return folder


# --- generated configs -------------------------------------------------------------------------------------------


def test_the_base_configs_train(workdir: Path) -> None:
    for base in (CLASSIFY, REGRESS):
        result = invoke("train", write_config(workdir, base), "--output-dir", workdir / "runs", "--quiet")
        assert_clean(result, (0,))


@FUZZ
@given(config=mutated_configs())
def test_mutated_configs_end_cleanly(workdir: Path, config: Any) -> None:
    validate_then_train(write_config(workdir, config), workdir / "runs")


@settings(FUZZ, max_examples=100)
@given(document=st.dictionaries(KEYS, VALUES, max_size=6) | VALUES)
def test_random_yaml_documents_end_cleanly(workdir: Path, document: Any) -> None:
    validate_then_train(write_config(workdir, document), workdir / "runs")


@settings(FUZZ, max_examples=100)
@given(key=st.sampled_from([".".join(map(str, path)) for path in key_paths(CLASSIFY) if path]) | st.text(max_size=30),
       value=st.text(max_size=40) | st.sampled_from(["&a [*a]", "!!python/name:os.system", "[[[[", "{a: 1", ".nan"]))
def test_random_overrides_end_cleanly(workdir: Path, key: str, value: str) -> None:
    config = write_config(workdir, CLASSIFY)
    assert_clean(invoke("validate", config, "--set", f"{key}={value}"))


@settings(FUZZ, max_examples=100)
@given(content=st.binary(max_size=300) | st.text(alphabet=":-[]{}&*!|>'\"#%@`, \t\n\r?~.0123456789abcdefx\x00\x85",
                                                  max_size=300).map(str.encode))
def test_random_bytes_end_cleanly(workdir: Path, content: bytes) -> None:
    (workdir / "junk.yaml").write_bytes(content)
    assert_clean(invoke("validate", workdir / "junk.yaml"))


# --- limits that keep memory bounded -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.n_samples=1000000000000"], "data.n_samples: must be <= 10,000,000, got 1000000000000"),
        (["model.hidden=[1000000000]"], "model.hidden.0: must be <= 100,000, got 1000000000"),
        (["model.hidden=[50000, 50000]"], "model: 2,500,300,002 parameters for 2 input features"),
        (["model.hidden=" + json.dumps([1] * 1000)], "model.hidden: at most 999 items are allowed, got 1,000"),
        (["training.epochs=10**9"], "training.epochs: expected an integer, got '10**9'"),
        (["training.epochs=1000000001"], "training.epochs: must be <= 1,000,000,000"),
        (["training.batch_size=1000000000000"], "training.batch_size: must be <= 10,000,000"),
        (["data.source=blobs", "data.n_samples=1000000", "data.n_features=1000"],
         "data.n_samples: n_samples × (n_features + n_outputs) is 1,001,000,000 values, more than the limit"),
        (["data.source=blobs", "data.n_samples=10", "data.n_classes=50000"],
         "data.n_classes: 50,000 classes need as many examples, but data.n_samples is 10"),
        (["optimizer.lr=.nan"], "optimizer.lr: expected a finite number, got nan"),
        (["optimizer.lr=-.inf"], "optimizer.lr: expected a finite number, got -inf"),
        (["seed=1" + "0" * 2000], "the value:1:1: an integer of more than 1,000 digits is not allowed"),
    ],
)
def test_sizes_beyond_the_limits_are_clear_errors(tmp_path: Path, overrides: list[str], expected: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(GOOD_YAML)
    arguments = [part for override in overrides for part in ("--set", override)]
    assert_error(invoke("train", config, *arguments, "--output-dir", tmp_path / "runs"), expected)
    assert not (tmp_path / "runs").exists()


def run_autobp(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m autobp …` in its own process, with its address space capped at SUBPROCESS_MEMORY."""

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (SUBPROCESS_MEMORY, SUBPROCESS_MEMORY))

    return subprocess.run(
        [sys.executable, "-m", "autobp", *map(str, args)], cwd=cwd, capture_output=True, text=True,
        timeout=CASE_SECONDS * 2, preexec_fn=cap_memory, check=False, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD_YAML.replace("n_samples: 20", "n_samples: 1000000000000"), "data.n_samples: must be <= 10,000,000"),
        (GOOD_YAML.replace("[3]", "[1000000000]"), "model.hidden.0: must be <= 100,000"),
        (GOOD_YAML.replace("[3]", "[3000, 3000, 3000]"), "parameters for 2 input features, more than the limit"),
    ],
    ids=["samples", "units", "parameters"],
)
def test_huge_sizes_fail_in_a_process_with_bounded_memory(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "config.yaml").write_text(text)
    done = run_autobp("train", "config.yaml", "--output-dir", "runs", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert_short_error(done.stderr)


# --- YAML ----------------------------------------------------------------------------------------------------------


def test_anchors_aliases_and_merge_keys_work(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "data: {source: xor, n_samples: 20}\n"
        "model:\n"
        "  layers:\n"
        "    - &hidden {units: 5, activation: relu}\n"
        "    - *hidden\n"
        "    - {<<: *hidden, units: 2, activation: identity}\n"
        "loss: cross_entropy\n"
    )
    result = invoke("validate", config)
    assert_clean(result, (0,))
    layers = yaml.safe_load(result.output)["model"]["layers"]
    assert [(layer["units"], layer["activation"]) for layer in layers] == [(5, "relu"), (5, "relu"), (2, "identity")]


def billion_laughs(levels: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n" + GOOD_YAML


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (billion_laughs(9).encode(), "aliases expand the document to 1,234,567,922 values (limit 100,000)"),
        (b"a: &a [*a]\n" + GOOD_YAML.encode(), "an alias refers to its own anchor"),
        (GOOD_YAML.encode() + b"name: !!python/object/apply:os.system [touch pwned]\n",
         ":7:7: tag '!!python/object/apply:os.system' is not allowed"),
        (GOOD_YAML.encode() + b"seed: !!python/object:builtins.dict {}\n", "tag '!!python/object:builtins.dict'"),
        (GOOD_YAML.encode() + b"seed: !!python/name:os.system\n", "tag '!!python/name:os.system' is not allowed"),
        (GOOD_YAML.encode() + b"# " + b"x" * 10_000_000 + b"\n", "bytes is too large for a config file (limit 1,000,000)"),
        (np.random.default_rng(0).bytes(4096), "not a UTF-8 text file"),
        (b"data:\n  source: xor\xff\xfe\n", "not a UTF-8 text file"),
        (b"data:\x00\x00\n", ":1:6: character #x0000 is not allowed in YAML"),
        (b"", "the file is empty"),
        (b"# only a comment\n\n", "the file is empty"),
        (b"just text\n", "the top level must be a mapping (data:, model:, loss: ...), not the single value 'just text'"),
        (b"x: " + b"[" * 5000 + b"]" * 5000 + b"\n", "the YAML is nested too deeply"),
        (GOOD_YAML.encode() + b"seed: 1" + b"0" * 5000 + b"\n", ":7:7: an integer of more than 1,000 digits"),
        (GOOD_YAML.encode() + b"name: \"\\e[31mred\"\n", "got '\\x1b[31mred'"),
        (GOOD_YAML.encode() + b"---\n" + GOOD_YAML.encode(), ":7:1: invalid YAML: but found another document"),
    ],
    ids=[
        "alias bomb", "recursive alias", "python object apply", "python object", "python name", "10 MB",
        "random bytes", "invalid utf-8", "NUL bytes", "empty", "comment only", "scalar", "deep nesting",
        "huge integer", "terminal escape", "two documents",
    ],
)
def test_yaml_edge_cases_are_clear_errors(tmp_path: Path, content: bytes, expected: str) -> None:
    (tmp_path / "config.yaml").write_bytes(content)
    assert_error(invoke("validate", tmp_path / "config.yaml"), f"{tmp_path / 'config.yaml'}", expected)
    assert not (tmp_path / "pwned").exists()


def test_config_paths_that_are_not_files(tmp_path: Path) -> None:
    assert_error(invoke("validate", tmp_path), f"error: {tmp_path}: not a file")
    assert_error(invoke("validate", tmp_path / "nope.yaml"), f"{tmp_path / 'nope.yaml'}: config file not found")
    assert_error(invoke("validate", tmp_path / ("x" * 300)), "cannot read the file: File name too long")


def test_an_unreadable_config_file(unprivileged_folder: Path) -> None:
    config = unprivileged_folder / "config.yaml"
    config.write_text(GOOD_YAML)
    give_to_unprivileged(config, 0)
    result = as_unprivileged("validate", config, cwd=unprivileged_folder)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr == f"error: {config}: cannot read the file: Permission denied\n"


# --- CSV -----------------------------------------------------------------------------------------------------------


def csv_config(folder: Path, content: str | bytes, loss: str = "cross_entropy", **data: Any) -> Path:
    (folder / "d.csv").write_bytes(content.encode() if isinstance(content, str) else content)
    config = {"data": {"source": "csv", "path": "d.csv", **data}, "model": {"hidden": [3]}, "loss": loss,
              "training": {"epochs": 2, "batch_size": 4}}  # fmt: skip
    return write_config(folder, config)


ROWS = "1,2,x\n3,4,y\n5,6,x\n7,8,y\n"


@pytest.mark.parametrize(
    ("content", "loss", "expected"),
    [
        ("", "mse", "d.csv: the file is empty — expected a header row"),
        ("a,b,y\n", "mse", "d.csv: only a header row — no examples"),
        ("a,b,y\n1,2,3\n4,5\n", "mse", "d.csv:3: 2 values, but the header has 3 columns"),
        ('a,b,y\n1,"2,3\n4,5,6\n', "mse", "d.csv:3: 2 values, but the header has 3 columns"),
        ("a,b,y\n1,nan,3\n4,5,6\n", "mse", "d.csv:2: column 'b': 'nan' is not a finite number"),
        ("a,b,y\n1,2,3\n4,-inf,6\n", "mse", "d.csv:3: column 'b': '-inf' is not a finite number"),
        ("a,b,y\n1,2,3\n4,,6\n", "mse", "d.csv:3: column 'b': missing value"),
        ("a,b,y\n1,2,x\n3,4,x\n5,6,x\n", "cross_entropy", "every example has the class 'x' — classification needs 2"),
        ("a,b,y\n1,2,x\n3,4,y\n5,6,y\n", "cross_entropy", "class 'x' has only 1 example"),
        ("a;b;y\n1;2;x\n3;4;y\n", "cross_entropy",
         "one column 'a;b;y'; autobp reads comma-separated files, and this one seems to be separated by ';'"),
        ("a,a,y\n" + ROWS, "cross_entropy", "d.csv:1: the header needs a distinct, non-empty name for every column"),
        ("a,,y\n" + ROWS, "cross_entropy", "d.csv:1: the header needs a distinct, non-empty name for every column"),
        (b"a,b,y\n1,2,\xff\n", "cross_entropy", "d.csv: not a UTF-8 text file"),
        ("a,b,y\n1,\x00,3\n", "mse", "d.csv:2: column 'b': '\\x00' is not a number"),
        ("a,b,y\n1," + "9" * 500 + ",3\n", "mse", "d.csv:2: column 'b': '99999999999999999999999999999999999999"),
        ("a,b,y\n1," + "9" * 200_000 + ",3\n", "mse", "d.csv: not a readable CSV file (field larger than field limit"),
        ("a,b,y\n1,2,1e300\n3,4,0.5\n", "cross_entropy", "has non-integer values such as 0.5 — use mse, mae or huber"),
        ("a,b,y\n1,2,x\n3,4,y\n", "mse", "d.csv:2: column 'y': 'x' is not a number — loss 'mse' needs numeric"),
        ("a,b,y\n" + "".join(f"{i}e200,{i},{i % 2}\n" for i in range(1, 11)), "cross_entropy",
         "column a has values too large to standardize (beyond about 1e154); rescale the data, or set "
         "data.standardize: false"),
    ],
    ids=[
        "empty", "header only", "ragged", "unclosed quote", "nan", "inf", "missing value", "one class",
        "class of one", "semicolons", "duplicate columns", "unnamed column", "invalid utf-8", "NUL", "long number",
        "huge field", "fractional labels", "text target", "values too large to standardize",
    ],
)
def test_csv_edge_cases_are_clear_errors(tmp_path: Path, content: str | bytes, loss: str, expected: str) -> None:
    assert_error(invoke("validate", csv_config(tmp_path, content, loss)), expected)


@pytest.mark.parametrize(
    ("content", "loss", "data"),
    [
        ("\ufeffa,b,y\n" + ROWS, "cross_entropy", {"features": ["a", "b"]}),
        ('"a","b,c",y\n1,"2",x\n3,4,"y"\n5,6,x\n"7",8,y\n', "cross_entropy", {"features": ["a", "b,c"]}),
        ("a,b,y\r\n1,2,3\r\n3,4,3\r\n5,6,3\r\n7,8,3\r\n", "mse", {}),
        ("a,b,y\n1,2,1e300\n3,4,2\n5,6,1e300\n7,8,2\n", "cross_entropy", {}),
    ],
    ids=["byte order mark", "quoted fields", "constant regression target", "huge integer labels"],
)
def test_csv_edge_cases_that_work(tmp_path: Path, content: str, loss: str, data: dict) -> None:
    result = invoke("train", csv_config(tmp_path, content, loss, **data), "--output-dir", tmp_path / "runs", "--quiet")
    assert_clean(result, (0,))
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert np.isfinite(summary["final"]["train_loss"])


def test_a_header_with_a_million_columns(tmp_path: Path) -> None:
    header = ",".join(f"c{i}" for i in range(1_000_000))
    assert_error(invoke("validate", csv_config(tmp_path, header + "\n", "mse")), "only a header row")
    row = ",".join("1" for _ in range(1_000_000))
    missing = csv_config(tmp_path, f"{header}\n{row}\n", "mse", target="nope")
    assert_error(invoke("validate", missing), "data.target: no column 'nope' in", "(columns: c0, c1, c2, c3, c4, c5, "
                                                                               "c6, c7, c8, c9, … (999,990 more))")
    result = invoke("validate", csv_config(tmp_path, f"{header}\n{row}\n{row}\n", "mse"))
    assert_clean(result, (0,))
    assert yaml.safe_load(result.output)["model"]["layers"][-1]["units"] == 1


def test_many_distinct_labels_split_without_a_pass_per_class(tmp_path: Path) -> None:
    content = "a,y\n" + "".join(f"{i},label{i // 2}\n" for i in range(40_000))
    result = invoke("validate", csv_config(tmp_path, content, target="y"))
    assert_clean(result, (0,))
    assert yaml.safe_load(result.output)["model"]["layers"][-1]["units"] == 20_000


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"X": np.array([{"x": 1}] * 4, dtype=object), "y": np.zeros(4)},
         "cannot read array 'X' (Object arrays cannot be loaded when allow_pickle=False)"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(4)}, "no array 'X' (found: x, y)"),
        ({"X": np.zeros((0, 2)), "y": np.zeros(0)},
         "X must be a finite numeric array of shape (n, d) with n, d ≥ 1, got float64 (0, 2)"),
        ({"X": np.zeros((4, 0)), "y": np.zeros(4)}, "got float64 (4, 0)"),
        ({"X": np.zeros((4, 2)), "y": np.array(1.0)}, "y must have shape (4,) or (4, k), got ()"),
        ({"X": np.zeros((4, 2)), "y": np.array([0.0, np.nan, 1.0, 2.0])}, "y must hold finite numbers or text labels"),
        ({"X": np.zeros((4, 2)), "y": np.zeros(4) + 1j}, "y must hold finite numbers or text labels, got complex128"),
    ],
    ids=["pickled", "no X", "no rows", "no features", "scalar y", "nan y", "complex y"],
)
def test_npz_data_edge_cases_are_clear_errors(tmp_path: Path, arrays: dict, expected: str) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    config = write_config(tmp_path, {"data": {"source": "npz", "path": "d.npz"}, "model": {"hidden": [2]}, "loss": "mse"})
    assert_error(invoke("validate", config), f"{tmp_path / 'd.npz'}: ", expected)


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", "not a zip archive of arrays"), (b"PK\x03\x04" + bytes(100), "it may be truncated or corrupted")],
    ids=["empty", "truncated"],
)
def test_a_damaged_npz_data_file_is_a_clear_error(tmp_path: Path, content: bytes, expected: str) -> None:
    (tmp_path / "d.npz").write_bytes(content)
    config = write_config(tmp_path, {"data": {"source": "npz", "path": "d.npz"}, "model": {"hidden": [2]}, "loss": "mse"})
    assert_error(invoke("validate", config), f"{tmp_path / 'd.npz'}: not a readable .npz file", expected)


# --- paths ---------------------------------------------------------------------------------------------------------


def test_a_run_name_cannot_leave_the_output_directory(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("name: ../../x\n" + GOOD_YAML)
    assert_error(invoke("train", config, "--output-dir", tmp_path / "runs"), ":1:7: name: use 1-64 letters")
    config.write_text(GOOD_YAML)
    assert_error(invoke("train", config, "--name", "../x", "--output-dir", tmp_path / "runs"), "--name '../x': use 1-64 letters")
    assert sorted(os.listdir(tmp_path)) == ["config.yaml"]


def test_data_paths_resolve_against_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "project" / "configs"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "d.csv").write_text("a,b,y\n" + ROWS)
    config = write_config(folder, {"data": {"source": "csv", "path": "data/d.csv"}, "model": {"hidden": [2]},
                                   "loss": "cross_entropy"})  # fmt: skip
    monkeypatch.chdir(tmp_path)
    result = invoke("validate", config)
    assert_clean(result, (0,))
    assert yaml.safe_load(result.output)["data"]["path"] == str(folder / "data" / "d.csv")
    (folder / "data" / "d.csv").unlink()
    assert_error(invoke("validate", config), f"data.path: file not found: {folder / 'data' / 'd.csv'}")
    (folder / "data" / "d.csv").mkdir()
    assert_error(invoke("validate", config), f"data.path: not a file: {folder / 'data' / 'd.csv'}")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("", "data.path: must not be empty"),
        ("a\x00b", "data.path: a NUL character is not allowed in a path, got 'a\\x00b'"),
        ("x" * 5000, "data.path: at most 4,096 characters are allowed, got 5,000"),
        ("x" * 300, "data.path: cannot read it (File name too long)"),
    ],
    ids=["empty", "NUL", "too long", "name too long"],
)
def test_impossible_data_paths(tmp_path: Path, path: str, expected: str) -> None:
    config = write_config(tmp_path, {"data": {"source": "csv", "path": path}, "model": {"hidden": [2]}, "loss": "mse"})
    assert_error(invoke("validate", config), expected)


def saved_model(folder: Path) -> Path:
    """A model.npz that fits GOOD_YAML's network."""
    config = folder / "good.yaml"
    config.write_text(GOOD_YAML)
    assert_clean(invoke("train", config, "--set", "training.epochs=1", "--output-dir", folder / "runs"), (0,))
    (run_dir,) = (folder / "runs").iterdir()
    return run_dir / "model.npz"


def damage(model: Path, how: str) -> None:
    arrays = dict(np.load(model))
    if how == "truncated":
        model.write_bytes(model.read_bytes()[:300])
    elif how == "flipped byte":
        data = bytearray(model.read_bytes())
        data[data.find(max(arrays.values(), key=np.size).tobytes()) + 3] ^= 0xFF  # in data the zip's CRC-32 covers
        model.write_bytes(bytes(data))
    elif how == "pickled object":
        np.savez(model, **{**arrays, "layer0.weight": np.array([{"evil": 1}], dtype=object)})
    elif how == "a .npy":
        np.save(model.with_suffix(".npy"), arrays["layer0.weight"])
        model.with_suffix(".npy").rename(model)
    elif how == "text weights":
        np.savez(model, **{**arrays, "layer0.weight": arrays["layer0.weight"].astype(str)})
    elif how == "wrong shape":
        np.savez(model, **{**arrays, "layer1.bias": np.zeros(7)})


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("truncated", "not a readable .npz file (File is not a zip file); it may be truncated or corrupted"),
        ("flipped byte", "not a readable .npz file (Bad CRC-32 for file '"),
        ("pickled object", "cannot read array 'layer0.weight' (Object arrays cannot be loaded when allow_pickle=False)"),
        ("a .npy", "not a readable .npz file (not a zip archive of arrays)"),
        ("text weights", "do not fit this network: layer0.weight holds <U32 values, not real numbers"),
        ("wrong shape", "layer1.weight and layer1.bias have shapes (3, 2) and (7,), not (in, out) and (out,)"),
    ],
)
def test_a_damaged_init_from_model_is_a_clear_error(tmp_path: Path, how: str, expected: str) -> None:
    model = saved_model(tmp_path)
    damage(model, how)
    config = tmp_path / "config.yaml"
    config.write_text(GOOD_YAML.replace("[3]", f"[3]\n  init_from: {model}"))
    assert_error(invoke("train", config, "--output-dir", tmp_path / "again"), str(model), expected)


def test_a_damaged_init_from_model_leaves_no_run_directory(tmp_path: Path) -> None:
    model = saved_model(tmp_path)
    damage(model, "wrong shape")
    config = tmp_path / "config.yaml"
    config.write_text(GOOD_YAML.replace("[3]", f"[3]\n  init_from: {model}"))
    assert_error(invoke("train", config, "--output-dir", tmp_path / "again"), "layer1.bias have shapes (3, 2) and (7,)")
    assert not (tmp_path / "again").exists()


@pytest.mark.parametrize("how", ["truncated", "flipped byte", "pickled object"])
def test_resuming_from_a_damaged_checkpoint_is_a_clear_error(tmp_path: Path, how: str) -> None:
    checkpoint = saved_model(tmp_path).with_name("checkpoint.npz")
    damage(checkpoint, how)
    result = invoke("train", "--resume", checkpoint.parent, "--set", "training.epochs=3")
    assert_error(result, f"{checkpoint}: ")


# --- output --------------------------------------------------------------------------------------------------------


def test_an_output_directory_under_a_file_fails_before_training(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(GOOD_YAML)
    (tmp_path / "some_file").write_text("not a folder")
    result = invoke("train", config, "--output-dir", tmp_path / "some_file" / "sub")
    assert_error(result, f"output directory {tmp_path / 'some_file' / 'sub'}: cannot create it (Not a directory)")
    assert sorted(os.listdir(tmp_path)) == ["config.yaml", "some_file"]
    config.write_text(GOOD_YAML + "output: {dir: ''}\n")
    assert_error(invoke("train", config), ":7:15: output.dir: must not be empty")


def test_an_unwritable_output_directory_fails_before_training(unprivileged_folder: Path) -> None:
    config = unprivileged_folder / "config.yaml"
    config.write_text(GOOD_YAML)
    locked = unprivileged_folder / "locked"
    locked.mkdir()
    give_to_unprivileged(locked, 0o500)
    result = as_unprivileged("train", config, "--output-dir", locked, cwd=unprivileged_folder)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: output directory {locked}: not writable")
    assert not any(locked.iterdir())
