"""Reading config-like YAML files safely: plain values only, YAML 1.2 floats, size and alias limits, duplicate
keys, and YAML errors that point at the line."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from autobp.common.errors import ConfigError
from autobp.common.text import shorten
from autobp.config.problems import KeyPath, Positions, Problem, report_problems, show

MAX_FILE_BYTES = 1_000_000
# A real config has a few hundred values; far more means an alias bomb ("billion laughs").
MAX_NODES = 100_000
MAX_INT_DIGITS = 1_000

_FLOAT_TAG = "tag:yaml.org,2002:float"
_INT_TAG = "tag:yaml.org,2002:int"
# YAML 1.2 core schema floats: unlike YAML 1.1, `1e-3`, `1E5` and `.5` are numbers.
_YAML12_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_PLAIN_TAGS = {
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp", "merge")
}


def _use_yaml12_floats(cls: type) -> type:
    """Replace the class's YAML 1.1 float resolver by the YAML 1.2 one (the dumper needs it too, to quote `1e3`)."""
    cls.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    cls.add_implicit_resolver(_FLOAT_TAG, _YAML12_FLOAT, list("-+.0123456789"))
    return cls


@_use_yaml12_floats
class Loader(yaml.SafeLoader):
    """Safe loading (plain values only) with YAML 1.2 floats."""


@_use_yaml12_floats
class Dumper(yaml.SafeDumper):
    """Safe dumping that quotes every string the loader would read as a number."""


def read_text(path: Path, limit: int = MAX_FILE_BYTES) -> str:
    """A config-like file's text, with clear errors for a missing, oversized, unreadable or non-UTF-8 file."""
    try:
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found" if not path.exists() else f"{path}: not a file")
        size = path.stat().st_size
        if size > limit:
            raise ConfigError(f"{path}: {size:,} bytes is too large for a config file (limit {limit:,})")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the file: {err.strerror}") from None


def parse_yaml(text: str, source: str) -> tuple[Node, dict]:
    """A config file's YAML as its root node and its mapping of plain values."""
    root, raw, _ = load_document(text, source)
    return root, raw


def load_document(text: str, source: str) -> tuple[Node, dict, list[Problem]]:
    """A config file's YAML as its root node, its mapping of plain values and its duplicate keys."""
    try:
        root, raw, duplicates = load_plain(text, source)
    except yaml.MarkedYAMLError as err:
        raise ConfigError(_yaml_error_message(err, source)) from None
    except yaml.reader.ReaderError as err:
        raise ConfigError(_reader_error_message(err, text, source)) from None
    except RecursionError:
        raise ConfigError(f"{source}: the YAML is nested too deeply") from None
    if root is None or raw is None:
        raise ConfigError(f"{source}: the file is empty — a config needs at least data, model and loss")
    if not isinstance(root, MappingNode):
        kind = "a list" if isinstance(root, SequenceNode) else f"the single value {show(raw)}"
        raise ConfigError(f"{source}:1:1: the top level must be a mapping (data:, model:, loss: ...), not {kind}")
    return root, raw, duplicates


def load_plain(text: str, source: str) -> tuple[Node | None, Any, list[Problem]]:
    """Compose the YAML, refuse anything but plain values, find duplicate keys and construct it (YAML errors
    propagate)."""
    loader = Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None, []
        positions = Positions(source, root)
        _check_plain(root, positions)
        # Before constructing, which copies `<<: *anchor` keys into the mapping, where they would look repeated.
        duplicates = list(duplicate_key_problems(root, positions))
        return root, loader.construct_document(root), duplicates
    finally:
        loader.dispose()


def _check_plain(root: Node, positions: Positions) -> None:
    """Refuse tags beyond plain values, integers too long to convert, recursive aliases and alias bombs."""
    nodes = list(_unique_nodes(root))
    problems = [positions.at_node(node, problem) for node in nodes if (problem := _node_problem(node))]
    if problems:
        raise ConfigError(report_problems(positions.source, problems))
    size = _expanded_size(root)
    if size is None:
        raise ConfigError(f"{positions.source}: an alias refers to its own anchor — recursive documents are not "
                          "allowed")
    if size > MAX_NODES:
        # A long list passes the limit without any alias: blame aliases only when they add values.
        what = "aliases expand the document to" if size > len(nodes) else "the document has"
        raise ConfigError(f"{positions.source}: {what} {size:,} values (limit {MAX_NODES:,})")


def _node_problem(node: Node) -> str | None:
    if node.tag not in _PLAIN_TAGS:
        return f"tag '{shorten(node.tag.replace('tag:yaml.org,2002:', '!!'))}' is not allowed — write plain values"
    # Python refuses to convert longer digit strings (sys.get_int_max_str_digits), and no config key needs them.
    if node.tag == _INT_TAG and len(node.value) > MAX_INT_DIGITS:
        return f"an integer of more than {MAX_INT_DIGITS:,} digits is not allowed"
    return None


_YAML_HINTS = {
    "mapping values are not allowed here": " — check the indentation, and quote values that contain ': '",
}


def _reader_error_message(err: yaml.reader.ReaderError, text: str, source: str) -> str:
    """A character YAML does not allow in text (a NUL, a control character): where it is, and what it is."""
    line = text.count("\n", 0, err.position) + 1
    column = err.position - text.rfind("\n", 0, err.position)
    code = ord(err.character) if isinstance(err.character, str) else err.character
    return f"{source}:{line}:{column}: character #x{code:04x} is not allowed in YAML — is this a text file?"


def _yaml_error_message(err: yaml.MarkedYAMLError, source: str) -> str:
    mark = err.problem_mark or err.context_mark
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    if "'\\t'" in (err.problem or ""):
        return f"{where}: tabs are not allowed for indentation in YAML — use spaces"
    hint = _YAML_HINTS.get(err.problem or "", f" ({err.context})" if err.context else "")
    opened = err.context_mark
    if opened is not None and mark is not None and opened.line != mark.line and err.context:
        # An unclosed bracket is noticed only where the next construct begins: name where it was opened.
        construct = re.sub(r"^while (parsing|scanning) (an? )?", "", err.context)
        hint = f" — the {construct} opened at line {opened.line + 1}, column {opened.column + 1} is never closed"
    return f"{where}: invalid YAML: {err.problem}{hint}"


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [child for pair in node.value for child in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _unique_nodes(root: Node) -> Iterator[Node]:
    """Every node once, even when aliases share it (or refer back to an ancestor)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        stack.extend(_children(node))


def _expanded_size(root: Node) -> int | None:
    """Number of nodes with every alias expanded (computed without expanding), or None for a recursive alias."""
    sizes: dict[int, int] = {}
    ancestors: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            ancestors.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in _children(node))
        elif id(node) in ancestors:
            return None
        elif id(node) not in sizes:
            ancestors.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))
    return sizes[id(root)]


def duplicate_key_problems(root: Node, positions: Positions) -> Iterator[Problem]:
    """PyYAML silently keeps the last of two equal keys; report both lines instead."""
    stack: list[tuple[Node, KeyPath]] = [(root, ())]
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            stack.extend((item, (*path, index)) for index, item in enumerate(node.value))
        if not isinstance(node, MappingNode):
            continue
        first_line: dict[str, int] = {}
        for key, value in node.value:
            stack.append((value, (*path, key.value)))
            if not isinstance(key, ScalarNode) or key.value == "<<":
                continue
            if key.value in first_line:
                message = f"duplicate key (also on line {first_line[key.value]}) — keep only one"
                yield positions.problem((*path, key.value), message, at_key=True)
            first_line.setdefault(key.value, key.start_mark.line + 1)
