"""Readers for the interaction and catalogue formats users bring.

Every reader returns a `RawData` with raw string ids in file order and raises `DataError`
naming the file, line and field on bad input. Parsing is vectorised with pandas; only
formats that are line-structured JSON are read line by line.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from directrec.data.parsing import line_numbers, read_delimited, read_text, require, to_number
from directrec.data.schema import DataError, RawData, empty_items, make_interactions
from directrec.data.tables import Catalogue, parse_delimiter, read_catalogue, read_events
from directrec.data.times import check_unit, note_times, parse_times, to_timestamp

__all__ = [
    "FORMATS",
    "load",
    "load_item_table",
    "load_table",
    "read_text",
    "to_number",
    "to_timestamp",
]

FORMATS = ("movielens", "recbole", "amazon", "sequence", "csv", "parquet")


# --------------------------------------------------------------------------- MovieLens
def load_movielens(
    interactions: str | Path, items: str | Path | None = None, *, time_unit: str | None = None
) -> RawData:
    """MovieLens 100K (`u.data`, `u.item`), 1M/10M (`ratings.dat`, `movies.dat`) or the CSV
    releases (`ratings.csv`, `movies.csv`). A directory holding them is accepted too."""
    p = Path(interactions)
    if p.is_dir():
        for name, item_name in (
            ("u.data", "u.item"),
            ("ratings.dat", "movies.dat"),
            ("ratings.csv", "movies.csv"),
        ):
            if (p / name).exists():
                items = items or ((p / item_name) if (p / item_name).exists() else None)
                p = p / name
                break
        else:
            raise DataError("no u.data, ratings.dat or ratings.csv in directory", file=str(p))
    path, text = str(p), read_text(p)
    cols = {"user": "userId", "item": "movieId", "rating": "rating", "time": "timestamp"}
    if p.suffix == ".csv":
        df = read_delimited(text, path, ",", None, header=True)
    else:
        sep = "\t" if p.name.startswith("u.") or "\t" in text[:200] else "::"
        df = read_delimited(text, path, sep, list(cols.values()), header=False)
    for c in cols.values():
        if c not in df.columns:
            raise DataError(f"column {c!r} is missing", file=path, field=c)
    times = parse_times(require(df, cols["time"], path), path, cols["time"], time_unit)
    inter = make_interactions(
        require(df, cols["user"], path),
        require(df, cols["item"], path),
        timestamp=times.seconds,
        rating=to_number(require(df, cols["rating"], path), path, "rating"),
        line=line_numbers(df[cols["user"]]),
    )
    raw = RawData(inter, _movielens_items(Path(items)) if items else None, source="movielens")
    raw.fields = {"user_id": "userId", "item_id": "movieId", "timestamp": "timestamp"}
    raw.item_fields = {"item_id": "movieId"}
    return note_times(raw, times)


def _movielens_items(p: Path) -> pd.DataFrame:
    path = str(p)
    if p.suffix == ".csv":
        df = read_delimited(read_text(p), path, ",", None, header=True)
        titles = require(df, "title", path)
        genres = require(df, "genres", path).str.split("|")
    elif p.name.startswith("u."):
        # u.item: id|title|release|video release|url|19 genre flags (latin-1)
        genre_names = [
            "unknown",
            "Action",
            "Adventure",
            "Animation",
            "Children's",
            "Comedy",
            "Crime",
            "Documentary",
            "Drama",
            "Fantasy",
            "Film-Noir",
            "Horror",
            "Musical",
            "Mystery",
            "Romance",
            "Sci-Fi",
            "Thriller",
            "War",
            "Western",
        ]
        names = ["movieId", "title", "release", "video", "url", *genre_names]
        df = read_delimited(read_text(p, "latin-1"), path, "|", names, header=False)
        flags = df[genre_names].to_numpy() == "1"
        titles = df["title"]
        genres = pd.Series(
            [[g for g, f in zip(genre_names, row, strict=False) if f] for row in flags]
        )
    else:  # movies.dat: id::title::genres (latin-1)
        df = read_delimited(
            read_text(p, "latin-1"), path, "::", ["movieId", "title", "genres"], header=False
        )
        titles, genres = df["title"], df["genres"].str.split("|")
    return pd.DataFrame(
        {
            "item_id": require(df, "movieId", path).to_numpy(),
            "title": titles.fillna("").to_numpy(),
            "text": "",
            "categories": [list(g) if isinstance(g, list) else [] for g in genres],
        }
    )


def bundled_ml100k() -> tuple[Path, Path]:
    """The MovieLens-100K atomic files shipped in the `recbole==1.2.1` wheel (data only;
    the package itself is never imported)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "MovieLens-100K is read from the recbole==1.2.1 wheel: "
            "run `pip install --no-deps recbole==1.2.1` (make setup does)"
        )
    base = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
    return base / "ml-100k.inter", base / "ml-100k.item"


# --------------------------------------------------------------------------- RecBole atomic
def load_recbole(
    interactions: str | Path, items: str | Path | None = None, *, time_unit: str | None = None
) -> RawData:
    """RecBole atomic files: tab-separated with `name:type` headers (`.inter`, `.item`)."""
    path = str(interactions)
    df = read_delimited(read_text(interactions), path, "\t", None, header=True)
    df.columns = [c.split(":")[0] for c in df.columns]
    for c in ("user_id", "item_id"):
        if c not in df.columns:
            raise DataError(f"header has no {c!r} column", file=path, line=1, field=c)
    ts = next((c for c in ("timestamp", "time") if c in df.columns), None)
    rating = next((c for c in ("rating", "label") if c in df.columns), None)
    times = parse_times(require(df, ts, path), path, ts, time_unit) if ts else None
    inter = make_interactions(
        require(df, "user_id", path),
        require(df, "item_id", path),
        timestamp=times.seconds if times else None,
        rating=to_number(require(df, rating, path), path, rating) if rating else None,
        line=line_numbers(df["user_id"]),
    )
    raw = RawData(inter, _recbole_items(items) if items else None, source="recbole")
    if ts:
        raw.fields["timestamp"] = ts
    return note_times(raw, times)


def _recbole_items(items: str | Path) -> pd.DataFrame:
    path = str(items)
    df = read_delimited(read_text(items), path, "\t", None, header=True)
    types = {c.split(":")[0]: c.split(":")[1] if ":" in c else "token" for c in df.columns}
    df.columns = list(types)
    if "item_id" not in df.columns:
        raise DataError("header has no 'item_id' column", file=path, line=1, field="item_id")
    title_col = next((c for c in df.columns if "title" in c or c == "name"), None)
    cat_col = next(
        (c for c in df.columns if c in ("class", "categories", "category", "genre", "genres")),
        None,
    )
    text_cols = [
        c for c in df.columns if c not in ("item_id", title_col, cat_col) and types[c] != "float"
    ]
    text = df[text_cols].agg(" ".join, axis=1) if text_cols else pd.Series([""] * len(df))
    return pd.DataFrame(
        {
            "item_id": require(df, "item_id", path).to_numpy(),
            "title": df[title_col].to_numpy() if title_col else "",
            "text": text.to_numpy(),
            "categories": [c.split() for c in df[cat_col]] if cat_col else [[]] * len(df),
        }
    )


# --------------------------------------------------------------------------- sequences
def load_sequence(interactions: str | Path, items: str | Path | None = None) -> RawData:
    """`user item item …` per line, oldest first (SASRec / S3-Rec / P5 files). Order is kept
    as the position within the line; there are no timestamps."""
    path = str(interactions)
    users, itemlist, lines, pos = [], [], [], []
    for n, ln in enumerate(read_text(interactions).splitlines(), start=1):
        parts = ln.split()
        if not parts:
            continue
        if len(parts) == 1:
            raise DataError("line has a user but no items", file=path, line=n, field="item_id")
        k = len(parts) - 1
        users.append(np.full(k, parts[0], dtype=object))
        itemlist.append(np.array(parts[1:], dtype=object))
        lines.append(np.full(k, n))
        pos.append(np.arange(k))
    inter = make_interactions(
        pd.Series(np.concatenate(users)),
        pd.Series(np.concatenate(itemlist)),
        line=pd.Series(np.concatenate(lines)),
    )
    return RawData(inter, load_item_table(items) if items else None, source="sequence")


# --------------------------------------------------------------------------- Amazon
def _json_records(path: Path) -> list[tuple[int, dict]]:
    """JSON lines, a JSON array, or the 2014 metadata's Python-literal lines (parsed with
    `ast.literal_eval`, which evaluates literals only — never code)."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            return list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON ({e.msg})", file=str(path), line=e.lineno) from e
    out = []
    for n, ln in enumerate(text.splitlines(), start=1):
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            try:
                rec = ast.literal_eval(ln)
            except (ValueError, SyntaxError) as e:
                raise DataError("not a JSON object", file=str(path), line=n) from e
        if not isinstance(rec, dict):
            raise DataError("not a JSON object", file=str(path), line=n)
        out.append((n, rec))
    return out


def load_amazon(
    interactions: str | Path, items: str | Path | None = None, *, time_unit: str | None = None
) -> RawData:
    """Amazon review dumps (2014/2018, JSON lines, gz ok): reviewerID, asin, overall,
    unixReviewTime; metadata: asin, title, description, categories/category, brand."""
    path = str(interactions)
    users, its, ts, ratings, lines = [], [], [], [], []
    for n, rec in _json_records(Path(interactions)):
        for field in ("reviewerID", "asin"):
            if not rec.get(field):
                raise DataError("missing value", file=path, line=n, field=field)
        t = rec.get("unixReviewTime")
        if t is None or isinstance(t, bool | list | dict):
            raise DataError(
                f"expected a Unix time, got {t!r}", file=path, line=n, field="unixReviewTime"
            )
        r = rec.get("overall")
        if r is not None and not isinstance(r, int | float):
            raise DataError(f"expected a number, got {r!r}", file=path, line=n, field="overall")
        users.append(str(rec["reviewerID"]))
        its.append(str(rec["asin"]))
        ts.append(str(t))
        ratings.append(r)
        lines.append(n)
    times = parse_times(pd.Series(ts, index=lines), path, "unixReviewTime", time_unit)
    inter = make_interactions(
        pd.Series(users),
        pd.Series(its),
        timestamp=times.seconds,
        rating=pd.Series(ratings, dtype="float64"),
        line=pd.Series(lines),
    )
    raw = RawData(inter, _amazon_items(Path(items)) if items else None, source="amazon")
    raw.fields = {"user_id": "reviewerID", "item_id": "asin", "timestamp": "unixReviewTime"}
    raw.item_fields = {"item_id": "asin"}
    return note_times(raw, times)


def _amazon_items(path: Path) -> pd.DataFrame:
    rows = []
    for n, rec in _json_records(path):
        if not rec.get("asin"):
            raise DataError("missing value", file=str(path), line=n, field="asin")
        cats = rec.get("categories") or rec.get("category") or []
        flat = [c for group in cats for c in (group if isinstance(group, list) else [group])]
        desc = rec.get("description") or ""
        if isinstance(desc, list):
            desc = " ".join(map(str, desc))
        brand = rec.get("brand") or ""
        rows.append(
            (
                str(rec["asin"]),
                str(rec.get("title") or ""),
                f"{brand} {desc}".strip(),
                list(dict.fromkeys(map(str, flat))),
            )
        )
    return pd.DataFrame(rows, columns=["item_id", "title", "text", "categories"])


# --------------------------------------------------------------------------- CSV / Parquet
def catalogue(
    path: str | Path, item_columns: str | None = None, delimiter: str | None = None
) -> Catalogue:
    """An item catalogue as CSV/TSV/Parquet (or RecBole `.item`). MovieLens catalogues
    are recognised by their file names only when no column mapping is given: an explicit
    mapping always wins."""
    if str(path).endswith(".item") and item_columns is None:
        return Catalogue(_recbole_items(path), {"item_id": "item_id"}, [])
    if Path(path).name in ("movies.dat", "u.item", "movies.csv") and item_columns is None:
        return Catalogue(_movielens_items(Path(path)), {"item_id": "movieId"}, [])
    return read_catalogue(path, item_columns, delimiter=delimiter)


def load_item_table(path: str | Path, item_columns: str | None = None) -> pd.DataFrame:
    """`catalogue`'s items alone."""
    return catalogue(path, item_columns).items


def load_table(
    interactions: str | Path,
    items: str | Path | None = None,
    columns: str | None = None,
    item_columns: str | None = None,
    *,
    delimiter: str | None = None,
    time_unit: str | None = None,
) -> RawData:
    """Generic CSV/TSV/Parquet with a column mapping (see `directrec.data.tables`)."""
    raw = read_events(interactions, columns, delimiter=delimiter, time_unit=time_unit)
    return _with_catalogue(raw, items, item_columns, delimiter)


def _with_catalogue(
    raw: RawData, items: str | Path | None, item_columns: str | None, delimiter: str | None
) -> RawData:
    if items:
        cat = catalogue(items, item_columns, delimiter)
        raw.items, raw.item_fields = cat.items, cat.fields
        raw.notes += cat.notes
    return raw


# --------------------------------------------------------------------------- dispatch
def load(
    fmt: str,
    interactions: str | Path,
    items: str | Path | None = None,
    columns: str | None = None,
    item_columns: str | None = None,
    *,
    delimiter: str | None = None,
    time_unit: str | None = None,
) -> RawData:
    """Read `interactions` (and `items`) in format `fmt` (one of FORMATS). `delimiter`
    (both files) and `columns` apply to CSV/Parquet files; `time_unit` (s, ms, us, ns)
    overrides the unit read from the times' magnitude."""
    readers: dict[str, Callable[..., RawData]] = {
        "movielens": load_movielens,
        "recbole": load_recbole,
        "amazon": load_amazon,
    }
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    check_unit(time_unit)
    delimiter = parse_delimiter(delimiter)
    # An option the format does not read would be dropped silently: refuse it instead.
    tables, catalogues = "csv and parquet files", "csv, parquet and sequence catalogues"
    unused = {  # option → (its value where the format ignores it, what it applies to)
        "--columns": (columns if fmt not in ("csv", "parquet") else None, tables),
        "--item-columns": (item_columns if fmt in readers else None, catalogues),
        "--delimiter": (delimiter if fmt in readers else None, f"{tables} and {catalogues}"),
        "--time-unit": (time_unit if fmt == "sequence" else None, "formats with times"),
    }
    for option, (value, where) in unused.items():
        if value is not None:
            raise DataError(f"{option} does not apply to --format {fmt}, only to {where}")
    if fmt == "sequence":
        raw = _with_catalogue(load_sequence(interactions), items, item_columns, delimiter)
    elif fmt in readers:
        raw = readers[fmt](interactions, items, time_unit=time_unit)
    else:
        raw = load_table(
            interactions, items, columns, item_columns, delimiter=delimiter, time_unit=time_unit
        )
    if time_unit is not None and raw.time_unit is None:
        raise DataError(f"--time-unit {time_unit}: the interactions have no time column")
    if raw.items is None:
        raw.items = empty_items()
    return raw
