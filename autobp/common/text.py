"""Text for people and scripts: numbers, aligned tables, one-line snippets of user input, strict JSON."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Sequence


def format_number(value: float | int | None) -> str:
    """Four significant digits; `-` for a missing value; inf and nan spelled out."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value + 0.0:.4g}"  # + 0.0 turns -0.0 into 0.0: a zero has no sign worth printing


def to_json(payload: Any, indent: int | None = 2) -> str:
    """Strict JSON: non-finite floats become null (as JavaScript's JSON.stringify does)."""
    return json.dumps(_strict(payload), indent=indent, ensure_ascii=False, allow_nan=False)


def _strict(value: Any) -> Any:
    if hasattr(value, "model_dump"):  # a pydantic model (from a file format such as summary.json)
        return _strict(value.model_dump(mode="json"))
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(item) for item in value]
    return value


def plural(n: int, singular: str, plural_form: str | None = None) -> str:
    """`1 epoch`, `3 epochs`, `2 classes`: a count with its noun."""
    return f"{n:,} {singular if n == 1 else plural_form or singular + 's'}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool = False) -> list[str]:
    """Lines of a table: aligned columns for a terminal, or a GitHub markdown table."""
    headers, rows = _cells(headers), [_cells(row) for row in rows]
    if markdown:
        escape = lambda cell: cell.replace("|", "\\|")  # noqa: E731
        return [
            "| " + " | ".join(map(escape, headers)) + " |",
            "|" + "---|" * len(headers),
            *("| " + " | ".join(map(escape, row)) + " |" for row in rows),
        ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in (headers, *rows)]


def _cells(row: Sequence[object]) -> list[str]:
    """A table's cells on one line each, whatever a file put in them."""
    return [terminal_safe(str(cell), one_line=True) for cell in row]


def format_wide_table(headers: Sequence[str], rows: Sequence[Sequence[str]], width: int, *, keep: int = 1) -> list[str]:
    """An aligned table at most `width` characters wide: columns past the edge continue in further blocks below,
    each led again by the first `keep` columns (a single column wider than `width` still gets a block of its own)."""
    headers, rows = _cells(headers), [_cells(row) for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    blocks: list[list[int]] = [[]]
    for index in range(keep, len(headers)):
        block = [*range(keep), *blocks[-1], index]
        if blocks[-1] and sum(widths[i] for i in block) + 2 * (len(block) - 1) > width:
            blocks.append([])
        blocks[-1].append(index)
    lines: list[str] = []
    for block in blocks:
        chosen = [*range(keep), *block]
        lines += [""] * bool(lines) + format_table([headers[i] for i in chosen], [[row[i] for i in chosen] for row in rows])
    return lines


# What a terminal obeys instead of showing: C0 controls (ESC starts colour, title, clear-screen and hyperlink
# sequences; BEL; CR overwrites a line), DEL and C1 controls, line and paragraph separators, and the bidi controls
# that reorder what is shown (Trojan Source). Newline and tab are kept where a whole text is shown.
_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
_UNSAFE_TEXT = re.compile(f"[{_UNSAFE}]")
_UNSAFE_LINE = re.compile(f"[\t\n{_UNSAFE}]")


def terminal_safe(text: str, *, one_line: bool = False) -> str:
    """Text as a terminal may show it: every control character and bidi control written as a `\\uXXXX` escape (also a
    valid JSON escape, so JSON stays JSON); newline and tab kept unless `one_line`. Every output passes here."""
    pattern = _UNSAFE_LINE if one_line else _UNSAFE_TEXT
    return pattern.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def shorten(text: str, limit: int = 60) -> str:
    """User-given text fit for a one-line message: control characters escaped, at most `limit` characters."""
    text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config (dicts and lists) as dotted keys, as `--set` names them: {'model.layers.0.units': 32, …}."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in items:
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat
