"""The README, executed: every fenced `python` block and every `$ autobp …` command runs, in document order, in a
scratch folder holding a copy of configs/, so no example can drift from the code.

Shown output is checked. A command whose output is the same on every machine is checked line by line (a line
`…` stands for any number of lines); one marked `# e.g.` (timings, last digits that depend on the BLAS, rankings
that hinge on them) is an example: each of its lines must appear in the real output with its numbers free, so its
wording and columns still cannot drift. A yaml block whose first line is `# NAME.yaml` is written as that file.

Run directories get new names on every run: a README path such as `runs/iris-20261126-054705` stands for the run
the example before it made (its `run directory:` line, or the next run of that name a command made), or, if none
did, for a run of the example config of that name, trained for the purpose."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

README = ROOT / "README.md"
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```$", re.M | re.S)
RUN_PATH = re.compile(r"runs/(?:sweeps/)?([A-Za-z0-9_.-]+?)-\d{8}-\d{6}(?:-\d+)?")
ANNOUNCED = re.compile(r"(?:run|sweep) directory: (\S+)")
NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")
ANY_LINES = ("…", "...")
EXAMPLE_MARK = "# e.g."
TIMEOUT = 120  # seconds; no example takes more than a few


@dataclass
class Example:
    """One thing to execute: a python block, a `$ autobp` command with the output shown under it, or a file."""

    line: int
    kind: str  # python | command | file
    text: str  # the code, the command line, or the file's content
    shown: list[str] = field(default_factory=list)  # a command's output as the README shows it

    @property
    def id(self) -> str:
        first = self.text.strip().splitlines()[0].split(EXAMPLE_MARK)[0].strip()
        return f"README.md:{self.line} {first[:60]}"


def examples(text: str) -> list[Example]:
    """Every example of a README text, in order."""
    found = []
    for match in FENCE.finditer(text):
        language, body = match.group(1), match.group(2)
        line = text.count("\n", 0, match.start()) + 2  # the block's first line
        if language == "python":
            found.append(Example(line, "python", body))
        elif language == "yaml" and re.fullmatch(r"# [\w.-]+\.yaml", body.splitlines()[0]):
            found.append(Example(line, "file", body))
        elif language != "yaml":  # a console block, whatever its fence says
            found += _commands(body, line)
    return found


def _commands(body: str, first_line: int) -> list[Example]:
    commands: list[Example] = []
    current: Example | None = None
    for offset, line in enumerate(body.splitlines()):
        if line.startswith("$ "):
            current = Example(first_line + offset, "command", line[2:]) if line.startswith("$ autobp ") else None
            commands += [current] if current else []
        elif current is not None:
            current.shown.append(line.rstrip())
    return commands


ALL = examples(README.read_text(encoding="utf-8"))


class Scratch:
    """The scratch folder the examples run in, and which real run directory each README path stands for."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        shutil.copytree(ROOT / "configs", folder / "configs")
        self.paths: dict[str, str] = {}  # README path -> the real one, relative to the folder
        self.unclaimed: list[str] = []  # run directories commands made that no README path stands for yet

    def run_dirs(self) -> set[str]:
        runs = self.folder / "runs"
        found = [*runs.glob("*"), *runs.glob("sweeps/*")] if runs.is_dir() else []
        return {str(p.relative_to(self.folder)) for p in found if p.is_dir() and p.name != "sweeps"}

    def resolve(self, text: str, defined_here: set[str] = frozenset()) -> str:
        """The text with every README run path replaced by the real one (made first if nothing made it)."""
        for path in dict.fromkeys(m.group(0) for m in RUN_PATH.finditer(text)):
            if path not in self.paths and path not in defined_here:
                self.paths[path] = self._claim(path)
        return RUN_PATH.sub(lambda m: self.paths.get(m.group(0), m.group(0)), text)

    def _claim(self, path: str) -> str:
        prefix = ("runs/sweeps/" if "/sweeps/" in path else "runs/") + RUN_PATH.fullmatch(path).group(1) + "-"
        for made in self.unclaimed:
            if made.startswith(prefix) and RUN_PATH.fullmatch(made):
                self.unclaimed.remove(made)
                return made
        return self._make(prefix)

    def _make(self, prefix: str) -> str:
        """A run (or sweep) of the example config whose name the README path carries."""
        name = prefix.rsplit("/", 1)[1][:-1]
        sweep = "/sweeps/" in prefix
        for config in sorted((self.folder / "configs").glob("*.yaml")):
            content = yaml.safe_load(config.read_text())
            if content.get("name") == name and ("parameters" in content) == sweep:
                before = self.run_dirs()
                self.autobp(["sweep" if sweep else "train", str(config), "-q"], check=True)
                [made] = self.run_dirs() - before
                return made
        raise AssertionError(f"README path {prefix}…: no example config is named {name!r}")

    def autobp(self, args: list[str], check: bool = False) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "autobp", *args], cwd=self.folder, capture_output=True,
                              text=True, timeout=TIMEOUT)  # fmt: skip
        assert not check or done.returncode == 0, done.stderr
        return done

    def relative(self, output: str) -> str:
        return output.replace(f"{self.folder}/", "")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Scratch:
    return Scratch(tmp_path_factory.mktemp("readme"))


def test_the_readme_has_its_examples() -> None:
    kinds = [example.kind for example in ALL]
    print(f"README examples: {kinds.count('python')} python blocks, {kinds.count('command')} `$ autobp` commands, "
          f"{kinds.count('file')} files")  # fmt: skip
    assert kinds.count("python") >= 6 and kinds.count("command") >= 10


@pytest.mark.parametrize("example", ALL, ids=[example.id for example in ALL])
def test_readme_example(example: Example, scratch: Scratch) -> None:
    if example.kind == "file":
        name = example.text.splitlines()[0][2:]
        (scratch.folder / name).write_text(example.text)
    elif example.kind == "python":
        code = scratch.resolve(example.text)
        done = subprocess.run([sys.executable, "-c", code], cwd=scratch.folder, capture_output=True, text=True,
                              timeout=TIMEOUT)  # fmt: skip
        assert done.returncode == 0, f"{example.id}:\n{code}\n{done.stderr}"
    else:
        run_command(example, scratch)


def run_command(example: Example, scratch: Scratch) -> None:
    shown = "\n".join(example.shown)
    announced = ANNOUNCED.findall(shown)  # README paths that this command's own output defines
    command = scratch.resolve(example.text, set(announced))
    before = scratch.run_dirs()
    done = scratch.autobp(shlex.split(command, comments=True)[1:])
    made = sorted(scratch.run_dirs() - before)
    error = any(line.startswith("error:") for line in example.shown)
    assert (done.returncode != 0) == error, f"{example.id}: exit code {done.returncode}\n{done.stderr}"
    output = scratch.relative(done.stderr if error else done.stdout)
    for readme_path, real in zip(announced, ANNOUNCED.findall(output)):
        scratch.paths[readme_path] = real
    scratch.unclaimed += [path for path in made if path not in scratch.paths.values()]
    expected = scratch.resolve(shown).splitlines()
    actual = output.rstrip("\n").splitlines()
    if EXAMPLE_MARK in example.text:
        assert_like(expected, actual, example.id)
    else:
        assert_same(expected, actual, example.id)


def _line(line: str) -> str:
    """A shown line as a pattern: a `…` within it stands for the text left out there."""
    return ".*?".join(map(re.escape, line.split("…")))


def assert_same(expected: list[str], actual: list[str], where: str) -> None:
    """Every line as shown; a `…` line stands for any number of lines."""
    pattern = "\n".join(".*?" if line in ANY_LINES else _line(line) for line in expected)
    pattern = pattern.replace("\n.*?\n", "(?:\n.*?)?\n")
    assert re.fullmatch(pattern, "\n".join(line.rstrip() for line in actual), re.S), (
        f"{where}: the output differs from the README's\n--- README\n" + "\n".join(expected)
        + "\n--- actual\n" + "\n".join(actual))  # fmt: skip


def assert_like(expected: list[str], actual: list[str], where: str) -> None:
    """An example output: each shown line is a line of the real output once numbers and spacing are set aside."""
    real = [_shape(line) for line in actual]
    missing = [line for line in expected
               if line not in ANY_LINES and not any(re.fullmatch(_line(_shape(line)), r) for r in real)]
    assert not missing, f"{where}: README lines with no like in the output:\n" + "\n".join(
        missing) + "\n--- actual\n" + "\n".join(actual)  # fmt: skip


def _shape(line: str) -> str:
    return " ".join(NUMBER.sub("N", line).split())


def test_the_readme_states_the_size_of_a_tensorboard_export(scratch: Scratch) -> None:
    """The figure in the TensorBoard section, measured on the quickstart run its example exports."""
    text = " ".join(README.read_text(encoding="utf-8").split())
    stated = float(re.search(r"The quickstart run \(100 epochs, [\d,]+ logged steps\) exports in .*? to ([\d.]+) MB",
                             text).group(1))  # fmt: skip
    run = scratch.resolve("runs/quickstart-20261126-054328")
    export = scratch.folder / run / "tensorboard"
    if not export.is_dir():
        scratch.autobp(["export", run, "--format", "tensorboard"], check=True)
    size = sum(path.stat().st_size for path in export.rglob("*") if path.is_file()) / 1e6
    assert round(size, 1) == stated
