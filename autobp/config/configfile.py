"""Reading config files: safe YAML with YAML 1.2 floats, `--set` overrides, and errors that point at the line.

Every problem in a file is reported at once, each as `file:line:col: key.path: what is wrong`. Positions come
from the composed YAML node tree, so pydantic's error locations can be mapped back to where the user wrote them.
"""

from __future__ import annotations

import ast
import copy
import difflib
import inspect
import json
import os
import re
import textwrap
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from autobp.common.errors import ConfigError
from autobp.common.text import shorten
from autobp.config.models import CROSS_FIELD_ERROR, FILE_PATH_KEYS, CatalogName, Config

MAX_FILE_BYTES = 1_000_000
# A real config has a few hundred values; far more means an alias bomb ("billion laughs").
MAX_NODES = 100_000
MAX_INT_DIGITS = 1_000

KeyPath = tuple[Any, ...]

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
class _Loader(yaml.SafeLoader):
    """Safe loading (plain values only) with YAML 1.2 floats."""


@_use_yaml12_floats
class _Dumper(yaml.SafeDumper):
    """Safe dumping that quotes every string the loader would read as a number."""


# Problems are listed top to bottom through the file, then the `--set` ones in command-line order.
_AFTER_FILE = 1 << 30


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a file, with where it stands (for sorting) and the line the user reads."""

    order: tuple[int, int]  # (line, column) in the file, or (_AFTER_FILE, index of the --set)
    text: str


class Positions:
    """Says where a key path was written: `file:line:col` from the YAML nodes, or the `--set` that set it."""

    def __init__(self, source: str, root: Node | None = None, overrides: Sequence[tuple[int, KeyPath, str]] = ()):
        self.source = source
        self.root = root
        self.overrides = overrides

    def problem(self, path: KeyPath, message: str, *, at_key: bool = False) -> Problem:
        """A problem at `path`, placed on the key itself (`at_key`) or on its value."""
        dotted = ".".join(shorten(str(part)) for part in path)
        text = f"{dotted}: {message}" if dotted else message
        for index, set_path, set_text in reversed(self.overrides):
            # A problem inside what a --set wrote, or at a section it created (such as an unknown key).
            if path[: len(set_path)] == set_path or (set_path[: len(path)] == path and self._not_in_file(path)):
                return Problem((_AFTER_FILE, index), f"--set {shorten(set_text, 100)}: {text}")
        return self.at_node(_node_at(self.root, path, at_key=at_key), text)

    def _not_in_file(self, path: KeyPath) -> bool:
        node = self.root
        for part in path:
            entry = _entry(node, part)
            if entry is None:
                return True
            node = entry[1]
        return False

    def at_node(self, node: Node | None, text: str) -> Problem:
        """A problem at a YAML node's position (or at the source as a whole without one)."""
        if node is None:
            return Problem((0, 0), f"{self.source}: {text}")
        mark = node.start_mark
        return Problem((mark.line, mark.column), f"{self.source}:{mark.line + 1}:{mark.column + 1}: {text}")


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read, override and validate a config file; raise ConfigError listing every problem with its position."""
    path = Path(path)
    source = str(path)
    root, raw, problems = _load_document(read_text(path), source)
    applied, override_problems = _apply_overrides(raw, overrides)
    positions = Positions(source, root, applied)
    return _validate(raw, positions, path.parent, problems + override_problems)


def config_from_dict(
    raw: dict, overrides: Sequence[str] = (), *, source: str = "<dict>", base_dir: Path | None = None
) -> Config:
    """Validate a config given as a dict, after `--set`-style overrides; errors name `source`, relative paths
    resolve against `base_dir`. The dict itself is not changed."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a config must be a mapping, got {show(raw)}")
    raw = copy.deepcopy(raw)
    applied, problems = _apply_overrides(raw, overrides)
    return _validate(raw, Positions(source, None, applied), base_dir, problems)


def dump_config(config: Config) -> str:
    """The config as YAML with every default filled in; `load_config` reads it back to an equal config."""
    return yaml.dump(config.model_dump(mode="json"), Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def config_json_schema() -> dict:
    """JSON Schema of the config file format, for editors that complete and check keys; each key is described by
    the docstring written under its field in autobp.config.models."""
    schema = Config.model_json_schema()
    sections = {cls.__name__: cls for cls in _sections(Config)}
    for name, part in [(Config.__name__, schema), *schema.get("$defs", {}).items()]:
        properties = part.get("properties", {})
        for field, text in attribute_docstrings(sections[name]).items():
            properties[field]["description"] = text
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _sections(model: type[BaseModel]) -> Iterator[type[BaseModel]]:
    """The model and every model its fields hold (at any depth of unions and lists), each once or more."""
    yield model
    for field in model.model_fields.values():
        for kind in _types_in(field.annotation):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                yield from _sections(kind)


def _types_in(annotation: Any) -> Iterator[Any]:
    yield annotation
    for argument in get_args(annotation):
        yield from _types_in(argument)


def attribute_docstrings(cls: type) -> dict[str, str]:
    """Each field's docstring: the string written right under its annotation in the class body."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {
        field.target.id: inspect.cleandoc(text.value.value)
        for field, text in zip(body, body[1:])
        if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
        and isinstance(text, ast.Expr) and isinstance(text.value, ast.Constant) and isinstance(text.value.value, str)
    }  # fmt: skip


# --- reading YAML -----------------------------------------------------------------------------------------------


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
    root, raw, _ = _load_document(text, source)
    return root, raw


def _load_document(text: str, source: str) -> tuple[Node, dict, list[Problem]]:
    """A config file's YAML as its root node, its mapping of plain values and its duplicate keys."""
    try:
        root, raw, duplicates = _load_plain(text, source)
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


def _load_plain(text: str, source: str) -> tuple[Node | None, Any, list[Problem]]:
    """Compose the YAML, refuse anything but plain values, find duplicate keys and construct it (YAML errors
    propagate)."""
    loader = _Loader(text)
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


def _node_at(root: Node | None, path: KeyPath, *, at_key: bool) -> Node | None:
    """The node written for `path` (its key node if `at_key`); for a path that is not in the file, such as a
    missing key, the key of the deepest part that is."""
    node = key = root
    for part in path:
        entry = _entry(node, part)
        if entry is None:
            return key
        key, node = entry
    return key if at_key else node


def _entry(node: Node | None, part: Any) -> tuple[Node, Node] | None:
    """(key node, value node) of `part` in a mapping (the last one, as PyYAML keeps), or an item of a sequence."""
    if isinstance(node, MappingNode):
        matches = [(key, value) for key, value in node.value if isinstance(key, ScalarNode) and key.value == str(part)]
        return matches[-1] if matches else None
    if isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return node.value[part], node.value[part]
    return None


# --- --set overrides --------------------------------------------------------------------------------------------


def _apply_overrides(raw: dict, overrides: Sequence[str]) -> tuple[list[tuple[int, KeyPath, str]], list[Problem]]:
    """Apply `key.path=value` overrides in order; returns (index, key path, text) of each applied one and the
    problems of the others."""
    applied, problems = [], []
    for index, text in enumerate(overrides):
        try:
            applied.append((index, _apply_override(raw, text), text))
        except ConfigError as err:
            problems.append(Problem((_AFTER_FILE, index), f"--set {shorten(text, 100)}: {err}"))
    return applied, problems


def _apply_override(raw: dict, text: str) -> KeyPath:
    key, equals, value_text = text.partition("=")
    parts = key.strip().split(".")
    if not equals or not all(parts):
        raise ConfigError("expected key.path=value, e.g. --set optimizer.lr=1e-3")
    try:
        _, value, duplicates = _load_plain(value_text, "the value")
    except yaml.YAMLError as err:
        raise ConfigError(f"the value is not valid YAML ({getattr(err, 'problem', None) or err})") from None
    except RecursionError:
        raise ConfigError("the value is nested too deeply") from None
    if duplicates:
        raise ConfigError(report_problems("the value", duplicates))
    container: Any = raw
    path: KeyPath = ()
    for part, next_part in zip(parts, parts[1:]):
        step = _override_step(container, part, path)
        path = (*path, step)
        if isinstance(container, dict) and container.get(step) is None:
            if next_part.isdigit():
                raise ConfigError(f"{'.'.join(map(str, path))} is not in the config, so it has no item {next_part}")
            container[step] = {}  # a missing or empty section receives its first key
        container = container[step]
    step = _override_step(container, parts[-1], path)
    if (*path, step) in FILE_PATH_KEYS and isinstance(value, str):
        # A path typed on the command line means what it means in the shell: relative to the current folder
        # (a path written in a config file is relative to that file instead).
        value = os.path.abspath(Path(value).expanduser())
    container[step] = value
    return (*path, step)


def override_arguments(changes: dict[str, Any]) -> list[str]:
    """The `--set` arguments (`key.path=value`) that make `changes`, a mapping of dotted keys to plain values; each
    value is written so that `--set` reads it back equal (a string that would read as a number or a boolean is
    quoted)."""
    return [f"{key}={override_value(value)}" for key, value in changes.items()]


def override_value(value: Any) -> str:
    """A plain value as `--set` reads it back: JSON (which is YAML flow) unless a bare string reads back as itself."""
    if isinstance(value, str) and value and yaml.load(value, Loader=_Loader) == value:
        return value
    return json.dumps(value)


def _override_step(container: Any, part: str, path: KeyPath) -> str | int:
    """The key or list index that `part` names inside `container`."""
    where = ".".join(map(str, path)) or "the top level"
    if isinstance(container, dict):
        return part
    if isinstance(container, list):
        if part.isdigit() and int(part) < len(container):
            return int(part)
        items = f"{len(container)} item" + ("" if len(container) == 1 else "s")
        raise ConfigError(f"{where} has {items}, so '{part}' is not an index of it (0-based)")
    raise ConfigError(f"{where} is a single value, not a section with keys")


# --- validation and error messages ------------------------------------------------------------------------------


def _validate(raw: dict, positions: Positions, base_dir: Path | None, problems: list[Problem]) -> Config:
    try:
        config = Config.model_validate(raw)
    except ValidationError as err:
        problems = problems + [problem for error in err.errors() for problem in problems_from(error, raw, positions)]
    if problems:
        raise ConfigError(report_problems(positions.source, problems))
    return _with_absolute_paths(config, base_dir or Path.cwd())


def report_problems(source: str, problems: list[Problem]) -> str:
    """Every problem, each once, in file order (--set problems last): one line, or a counted list."""
    lines = list(dict.fromkeys(problem.text for problem in sorted(problems)))
    if len(lines) == 1:
        return lines[0]
    return f"{source}: {len(lines)} problems\n" + "\n".join(f"  {line}" for line in lines)


def _with_absolute_paths(config: Config, base_dir: Path) -> Config:
    """The config with every FILE_PATH_KEYS path resolved against `base_dir` (absolute paths stay as they are)."""
    sections: dict[str, Any] = {}
    for section, key in FILE_PATH_KEYS:
        part = sections.get(section) or getattr(config, section)
        sections[section] = part.model_copy(update={key: _absolute(getattr(part, key), base_dir)})
    return config.model_copy(update=sections)


def _absolute(path: str | None, base_dir: Path) -> str | None:
    return None if path is None else os.path.abspath(base_dir / Path(path).expanduser())


def problems_from(error: dict, raw: dict, positions: Positions) -> Iterator[Problem]:
    """Turn one pydantic error into problems placed at the key paths the user wrote."""
    loc, kind, given, context = error["loc"], error["type"], error.get("input"), error.get("ctx", {})
    path = written_path(raw, loc, missing=kind == "missing")
    if kind == CROSS_FIELD_ERROR:
        for sub_path, message in context["problems"]:
            yield positions.problem((*path, *sub_path), message, at_key=True)
    elif kind == "missing":
        yield positions.problem(path, "required key is missing", at_key=True)
    elif kind == "invalid_key":
        yield positions.problem(path, "keys must be text", at_key=True)
    elif kind == "extra_forbidden":
        yield positions.problem(path, "unknown key" + suggest(path[-1], _allowed_keys(loc[:-1])), at_key=True)
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        names = _allowed_tags(loc)
        given_tag = context.get("tag")
        message = f"{show(given_tag)} is not allowed" if kind == "union_tag_invalid" else "required key is missing"
        yield positions.problem((*path, "name"), message + suggest(given_tag, names, list_all=True))
    elif given is None and kind in ("model_type", "model_attributes_type", "dict_type"):
        yield positions.problem(path, "empty — check the indentation of the lines below it", at_key=True)
    else:
        yield positions.problem(path, _explain(error))


def written_path(raw: Any, loc: tuple, *, missing: bool) -> KeyPath:
    """The part of pydantic's `loc` that indexes the user's data; union member tags in it are dropped."""
    path: KeyPath = ()
    node = raw
    for index, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        elif not (missing and index == len(loc) - 1):
            continue
        path = (*path, part)
    return path


_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "model_type": "a mapping of keys",
    "model_attributes_type": "a mapping of keys",
    "dict_type": "a mapping of keys",
}
_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "<=")}


def _explain(error: dict) -> str:
    """One short sentence: what was given and what is allowed."""
    kind, given, context = error["type"], error.get("input"), error.get("ctx", {})
    if kind == "literal_error":
        allowed = _literal_values(_annotation_at(error["loc"]))
        return f"{show(given)} is not allowed" + suggest(given, allowed, list_all=True)
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {show(given)}"
    if kind in _BOUNDS:
        context_key, symbol = _BOUNDS[kind]
        return f"must be {symbol} {_number(context[context_key])}, got {show(given)}"
    if kind == "too_short":
        return f"needs at least {context['min_length']} item(s)"
    if kind == "too_long":
        return f"at most {context['max_length']:,} items are allowed, got {context['actual_length']:,}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"at most {context['max_length']:,} characters are allowed, got {len(given):,}"
    if kind == "value_error":
        return f"{context['error']}, got {show(given)}"
    return f"{error['msg'][0].lower()}{error['msg'][1:]}, got {show(given)}"


def suggest(given: Any, allowed: Sequence[str], *, list_all: bool = False) -> str:
    """`— did you mean 'x'?` for a near miss, else (optionally) the list of allowed values."""
    close = difflib.get_close_matches(str(given), allowed, n=1, cutoff=0.6) if given is not None else []
    listing = f" (allowed: {', '.join(allowed)})" if list_all or not close else ""
    return listing + (f" — did you mean '{close[0]}'?" if close else "")


def _number(bound: float) -> str:
    return f"{bound:,}" if isinstance(bound, int) else f"{bound:g}"


def show(value: Any) -> str:
    """A given value as the user would write it in YAML, shortened."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return shorten(f"'{value}'")
    if isinstance(value, (list, dict)):
        return shorten(json.dumps(value, default=str))
    return shorten(str(value))


# --- what the schema allows at a location ------------------------------------------------------------------------


def _options(annotation: Any) -> list[Any]:
    """The plain types an annotation admits (Annotated, Optional and unions unpacked)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        names = [marker for marker in annotation.__metadata__ if isinstance(marker, CatalogName)]
        return names or _options(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [option for arg in get_args(annotation) for option in _options(arg)]
    return [annotation]


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [option for option in _options(annotation) if isinstance(option, type) and issubclass(option, BaseModel)]


def _literal_values(annotation: Any) -> list[str]:
    options = _options(annotation)
    names = [name for option in options if isinstance(option, CatalogName) for name in option.table]
    return names + [str(value) for option in options if get_origin(option) is Literal for value in get_args(option)]


def _tags(model: type[BaseModel]) -> list[str]:
    """The `name` values that select `model` in a discriminated union (the schedules)."""
    field = model.model_fields.get("name")
    return _literal_values(field.annotation) if field else []


def _annotation_at(loc: tuple) -> Any:
    """Walk the config models along pydantic's `loc` (union member tags included) to the annotation there."""
    annotation: Any = Config
    for part in loc:
        steps = (_step(option, part) for option in _options(annotation))
        annotation = next((found for found in steps if found is not None), None)
    return annotation


def _step(option: Any, part: Any) -> Any:
    if get_origin(option) is list and isinstance(part, int):
        return get_args(option)[0]
    if not (isinstance(option, type) and issubclass(option, BaseModel)):
        return None
    if part in option.model_fields:
        return option.model_fields[part].rebuild_annotation()
    return option if part in _tags(option) else None


def _allowed_keys(loc: tuple) -> list[str]:
    return [key for model in _models(_annotation_at(loc)) for key in model.model_fields]


def _allowed_tags(loc: tuple) -> list[str]:
    return [tag for model in _models(_annotation_at(loc)) for tag in _tags(model)]
