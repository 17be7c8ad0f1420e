"""Generic CSV/TSV/Parquet interactions and catalogues, read through a column mapping.

Every column the user maps must exist; the defaults (`user_id`, `item_id`, `timestamp`;
`item_id`, `title`, `text`, `categories`) are looked for and, apart from the ids, may be
absent, which is recorded as a note the ingest summary shows. A header that holds none of
the delimiter but another one stops with the `--delimiter` to pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from directrec.data.parsing import (
    image_paths,
    line_numbers,
    read_delimited,
    read_text,
    require,
    to_number,
)
from directrec.data.schema import DataError, RawData, make_interactions
from directrec.data.times import note_times, parse_times

EVENT_KEYS = ("user", "item", "time", "rating", "event")
ITEM_KEYS = ("id", "title", "text", "categories", "image")
DEFAULT_COLUMNS = {"user": "user_id", "item": "item_id", "time": "timestamp"}
DEFAULT_ITEM_COLUMNS = {
    "id": "item_id",
    "title": "title",
    "text": "text",
    "categories": "categories",
    "image": "image",
}
# What each mapping key becomes in the canonical frames (schema.make_interactions).
CANONICAL = {"user": "user_id", "item": "item_id", "time": "timestamp", "rating": "rating"}
CANONICAL |= {"event": "event", "id": "item_id"}
# Delimiters recognised in a header that the chosen one does not split, with the option
# value that selects each.
DELIMITERS = ((";", "semicolon", "';'"), ("\t", "tab", "tab"), ("|", "pipe", "'|'"))
DELIMITERS += ((",", "comma", "','"),)
DELIMITER_NAMES = {"tab": "\t", "\\t": "\t"}


class Catalogue(NamedTuple):
    items: pd.DataFrame  # schema.ITEM_COLUMNS
    fields: dict[str, str]  # canonical field → the file's column
    notes: list[str]


def parse_delimiter(value: str | None) -> str | None:
    """`--delimiter`: one or more characters; `tab` (or a typed backslash-t) is a tab."""
    if value is None:
        return None
    if value == "":
        raise DataError("--delimiter is empty: give the character that separates columns")
    return DELIMITER_NAMES.get(value, value)


def parse_mapping(
    spec: str | None,
    defaults: dict[str, str],
    keys: tuple[str, ...] | None = None,
    option: str = "--columns",
) -> dict[str, str]:
    """`user=uid,item=iid,time=ts` → {'user': 'uid', …}, on top of the defaults. A key
    outside `keys` is refused: a misspelt key would otherwise map nothing, silently."""
    out = dict(defaults)
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise DataError(f"{option}: column mapping {part!r} is not key=column")
        k, v = (x.strip() for x in part.split("=", 1))
        if keys is not None and k not in keys:
            raise DataError(f"{option}: unknown key {k!r} in {part!r} (keys: {', '.join(keys)})")
        if not v:
            raise DataError(f"{option}: {part!r} names no column")
        out[k] = v
    return out


def missing_column(path: str, key: str, column: str, have: list, option: str) -> DataError:
    return DataError(
        f"column {column!r} (mapped as {key}) not found; the file has "
        f"{[str(c) for c in have]}: fix the name, or map another with {option} {key}=NAME",
        file=path,
        line=1,
        field=column,
    )


def _check_header(text: str, sep: str, path: str) -> None:
    """A header the delimiter does not split but another one would: say which to pass."""
    for n, header in enumerate(text.splitlines(), start=1):
        if not header.strip():
            continue
        if sep in header:
            return
        for char, name, option in DELIMITERS:
            if char != sep and char in header:
                raise DataError(
                    f"the header {header.strip()!r} is one column: looks {name}-delimited: "
                    f"pass --delimiter {option}",
                    file=path,
                    line=n,
                )
        return


def _parquet_cell(v: Any) -> Any:
    """A Parquet cell as the delimited reader gives it: a string, a list as it is, and
    None for a null (so a missing id is refused by `require`, never kept as "nan"); an
    integral float (an integer column with nulls) is written as the integer it holds."""
    if isinstance(v, list | np.ndarray):
        return v
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def read_table(path: str | Path, delimiter: str | None = None) -> tuple[pd.DataFrame, str]:
    """A Parquet file or a delimited text file with a header (`delimiter`, else tab for
    .tsv/.tab, else comma) as string cells; the index is each row's line (Parquet: row)."""
    p = Path(path)
    if not p.exists():
        raise DataError("file not found", file=str(p))
    if p.suffix == ".parquet":
        try:
            df = pd.read_parquet(p).astype(object)
        except Exception as e:  # pyarrow raises many types for corrupt files
            raise DataError(f"cannot read Parquet ({e})", file=str(p)) from e
        if df.empty:
            raise DataError("table has no rows", file=str(p))
        df = df.map(_parquet_cell)
        df.index = np.arange(1, len(df) + 1)  # rows are 1-based in messages
        return df, str(p)
    sep = delimiter or ("\t" if p.suffix in (".tsv", ".tab") else ",")
    text = read_text(p)
    _check_header(text, sep, str(p))
    return read_delimited(text, str(p), sep, None, header=True), str(p)


def read_events(
    interactions: str | Path,
    columns: str | None = None,
    *,
    delimiter: str | None = None,
    time_unit: str | None = None,
) -> RawData:
    """Interactions through the `columns` mapping: user, item, time (Unix times in any unit
    or ISO-8601), optional rating and event. The catalogue is attached by the caller."""
    cols = parse_mapping(columns, DEFAULT_COLUMNS, EVENT_KEYS, "--columns")
    given = parse_mapping(columns, {}, EVENT_KEYS, "--columns")
    df, path = read_table(interactions, delimiter)
    for key in EVENT_KEYS:  # the ids always; anything else once the user maps it
        if (key in ("user", "item") or key in given) and cols[key] not in df.columns:
            raise missing_column(path, key, cols[key], list(df.columns), "--columns")
    notes, times = [], None
    if cols["time"] in df.columns:
        times = parse_times(require(df, cols["time"], path), path, cols["time"], time_unit)
    else:
        notes.append(
            f"{path} has no {cols['time']!r} column: the events have no times and keep file "
            "order (map a time column with --columns time=NAME)"
        )
    inter = make_interactions(
        require(df, cols["user"], path),
        require(df, cols["item"], path),
        timestamp=times.seconds if times else None,
        rating=to_number(require(df, cols["rating"], path), path, cols["rating"])
        if "rating" in cols
        else None,
        event=df[cols["event"]] if "event" in cols else None,
        line=line_numbers(df[cols["user"]]),
    )
    raw = RawData(inter, None, source="table", notes=notes)
    raw.fields = {CANONICAL[k]: v for k, v in cols.items()}
    return note_times(raw, times)


def read_catalogue(
    path: str | Path,
    item_columns: str | None = None,
    *,
    delimiter: str | None = None,
    sep_categories: str = "|",
) -> Catalogue:
    """An item catalogue through the `item_columns` mapping: id, title, text, categories
    (a list, or one string split on `sep_categories`), image (a local file, absolute or
    relative to the catalogue's folder; checked here, stored as an absolute path)."""
    cols = parse_mapping(item_columns, DEFAULT_ITEM_COLUMNS, ITEM_KEYS, "--item-columns")
    given = parse_mapping(item_columns, {}, ITEM_KEYS, "--item-columns")
    df, p = read_table(path, delimiter)
    for key in ITEM_KEYS:
        if cols[key] not in df.columns and (key == "id" or key in given):
            raise missing_column(p, key, cols[key], list(df.columns), "--item-columns")
    absent = [cols[k] for k in ("title", "text", "categories") if cols[k] not in df.columns]
    notes = []
    if absent:
        notes.append(
            f"catalogue {p} has no {', '.join(map(repr, absent))} column: left empty (it has "
            f"{[str(c) for c in df.columns]}; map columns with --item-columns KEY=NAME)"
        )

    def col(key: str) -> pd.Series:
        c = cols[key]
        return df[c].fillna("") if c in df.columns else pd.Series([""] * len(df), index=df.index)

    cats = col("categories").map(
        lambda v: (
            [str(x) for x in v]
            if isinstance(v, list | np.ndarray)
            else [c for c in str(v).split(sep_categories) if c]
        )
    )
    items = pd.DataFrame(
        {
            "item_id": require(df.astype({cols["id"]: str}), cols["id"], p).to_numpy(),
            "title": col("title").astype(str).to_numpy(),
            "text": col("text").astype(str).to_numpy(),
            "categories": cats.to_numpy(),
            "image": image_paths(col("image"), p, cols["image"]).to_numpy(),
        }
    )
    return Catalogue(items, {"item_id": cols["id"]}, notes)
