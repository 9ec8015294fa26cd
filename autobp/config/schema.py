"""The config file format as JSON Schema, for editors that complete and check keys."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterator
from typing import Any, get_args

from pydantic import BaseModel

from autobp.config.models import Config


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
