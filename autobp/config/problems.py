"""The problem reporter: every problem in a file at once, each as `file:line:col: key.path: what is wrong`.

Positions come from the composed YAML node tree (or the `--set` that wrote a key), so pydantic's error locations,
read against the root model that was validated (the config, a sweep file), are mapped back to where the user wrote
them.
"""

from __future__ import annotations

import difflib
import json
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from autobp.common.errors import ConfigError
from autobp.common.text import shorten
from autobp.config.models import CROSS_FIELD_ERROR, CatalogName

KeyPath = tuple[Any, ...]
M = TypeVar("M", bound=BaseModel)

# Problems are listed top to bottom through the file, then the `--set` ones in command-line order.
AFTER_FILE = 1 << 30


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a file, with where it stands (for sorting) and the line the user reads."""

    order: tuple[int, int]  # (line, column) in the file, or (AFTER_FILE, index of the --set)
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
                return Problem((AFTER_FILE, index), f"--set {shorten(set_text, 100)}: {text}")
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


def validate(model: type[M], raw: dict, positions: Positions, problems: Sequence[Problem] = ()) -> M:
    """`raw` as an instance of the root `model`, or a ConfigError listing `problems` and every validation error,
    each at the key the user wrote."""
    problems = list(problems)
    try:
        result = model.model_validate(raw)
    except ValidationError as err:
        problems += [problem for error in err.errors() for problem in problems_from(error, raw, positions, model)]
    if problems:
        raise ConfigError(report_problems(positions.source, problems))
    return result


def report_problems(source: str, problems: list[Problem]) -> str:
    """Every problem, each once, in file order (--set problems last): one line, or a counted list."""
    lines = list(dict.fromkeys(problem.text for problem in sorted(problems)))
    if len(lines) == 1:
        return lines[0]
    return f"{source}: {len(lines)} problems\n" + "\n".join(f"  {line}" for line in lines)


def problems_from(error: dict, raw: dict, positions: Positions, model: type[BaseModel]) -> Iterator[Problem]:
    """Turn one pydantic error of validating `raw` as the root `model` into problems placed at the key paths the
    user wrote."""
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
        yield positions.problem(path, "unknown key" + suggest(path[-1], _allowed_keys(model, loc[:-1])), at_key=True)
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        names = _allowed_tags(model, loc)
        given_tag = context.get("tag")
        message = f"{show(given_tag)} is not allowed" if kind == "union_tag_invalid" else "required key is missing"
        yield positions.problem((*path, "name"), message + suggest(given_tag, names, list_all=True))
    elif given is None and kind in ("model_type", "model_attributes_type", "dict_type"):
        yield positions.problem(path, "empty — check the indentation of the lines below it", at_key=True)
    else:
        yield positions.problem(path, _explain(error, model))


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


def _explain(error: dict, model: type[BaseModel]) -> str:
    """One short sentence: what was given and what is allowed."""
    kind, given, context = error["type"], error.get("input"), error.get("ctx", {})
    if kind == "literal_error":
        allowed = _literal_values(_annotation_at(model, error["loc"]))
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


def _annotation_at(model: type[BaseModel], loc: tuple) -> Any:
    """Walk the models from the root `model` along pydantic's `loc` (union member tags included) to the annotation
    there."""
    annotation: Any = model
    for part in loc:
        steps = (_step(option, part) for option in _options(annotation))
        # A part that leads nowhere names a union member (a callable discriminator's tag, a smart union's type).
        annotation = next((found for found in steps if found is not None), annotation)
    return annotation


def _step(option: Any, part: Any) -> Any:
    if get_origin(option) is list and isinstance(part, int):
        return get_args(option)[0]
    if get_origin(option) is dict:
        return get_args(option)[1]
    if not (isinstance(option, type) and issubclass(option, BaseModel)):
        return None
    if part in option.model_fields:
        return option.model_fields[part].rebuild_annotation()
    return option if part in _tags(option) else None


def _allowed_keys(root: type[BaseModel], loc: tuple) -> list[str]:
    return [key for model in _models(_annotation_at(root, loc)) for key in model.model_fields]


def _allowed_tags(root: type[BaseModel], loc: tuple) -> list[str]:
    return [tag for model in _models(_annotation_at(root, loc)) for tag in _tags(model)]
