"""A recipe written back as TOML: the standard library reads TOML (`tomllib`) but writes
none, and a recipe needs only tables, scalars, lists and inline tables."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # what a TOML multi-line string cannot hold


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k, ensure_ascii=False)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v in (float("inf"), float("-inf")):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        if "\n" in v and not _CONTROL.search(v):  # a readable multi-line string
            return '"""\n' + v.replace("\\", "\\\\").replace('"""', '""\\"') + '"""'
        return json.dumps(v, ensure_ascii=False)  # JSON's escapes are valid TOML
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} as TOML")


def dumps(doc: Mapping[str, Any]) -> str:
    """A document of tables, scalars and lists as TOML (what `tomllib.loads` reads back)."""
    lines: list[str] = []

    def table(path: list[str], t: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in t.items() if not isinstance(v, dict)}
        subs = {k: v for k, v in t.items() if isinstance(v, dict)}
        if path and (scalars or not subs):
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_key(p) for p in path) + "]")
        lines.extend(f"{_key(k)} = {_value(v)}" for k, v in scalars.items())
        for k, v in subs.items():
            table([*path, k], v)

    table([], doc)
    return "\n".join(lines) + "\n"
