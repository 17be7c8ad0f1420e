"""Readers for the interaction and catalogue formats users bring.

Every reader returns a `RawData` with raw string ids in file order and raises `DataError`
naming the file, line and field on bad input. Parsing is vectorised with pandas; only
formats that are line-structured JSON are read line by line.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from directrec.data.schema import DataError, RawData, empty_items, make_interactions

FORMATS = ("movielens", "recbole", "amazon", "sequence", "csv", "parquet")


# --------------------------------------------------------------------------- helpers
def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """Read a (possibly gzipped) text file; a decoding error names its line."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", file=str(path))
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"corrupt gzip data ({e})", file=str(path)) from e
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"not valid {encoding} text (byte {raw[e.start]:#x}); pass the right --encoding",
            file=str(path),
            line=line,
        ) from e
    if not text.strip():
        raise DataError("file is empty", file=str(path))
    return text.lstrip("\ufeff")


def _read_delimited(
    text: str, path: str, sep: str, names: list[str] | None, header: bool
) -> pd.DataFrame:
    """Parse delimited text as strings; the index holds each row's line number."""
    if len(sep) > 1:  # pandas' C parser takes one-character separators only
        text = text.replace(sep, "\x1f")
        sep = "\x1f"
    try:
        df = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            header=0 if header else None,
            names=None if header else names,
            dtype=str,
            keep_default_na=False,
            na_values=[],
            quoting=3 if sep in ("\t", "\x1f") else 0,
            engine="c",
            skip_blank_lines=True,
        )
    except pd.errors.ParserError as e:
        msg = str(e)
        line = None
        if "line" in msg:
            digits = [int(t.strip(",.")) for t in msg.split() if t.strip(",.").isdigit()]
            line = digits[-1] if digits else None
        raise DataError(f"malformed row ({msg.strip()})", file=path, line=line) from e
    except pd.errors.EmptyDataError as e:
        raise DataError("file is empty", file=path) from e
    if df.empty:
        raise DataError("file has a header but no rows", file=path)
    first_line = 2 if header else 1
    # Blank lines are skipped by the parser; map rows back to true line numbers.
    lines = np.array([i + 1 for i, ln in enumerate(text.splitlines()) if ln.strip()])
    offset = lines[first_line - 1 :] if len(lines) >= len(df) + first_line - 1 else None
    df.index = offset[: len(df)] if offset is not None else np.arange(len(df)) + first_line
    return df


def _require(df: pd.DataFrame, col: str, path: str) -> pd.Series:
    if col not in df.columns:
        raise DataError(
            f"column {col!r} not found (have {list(df.columns)})", file=path, line=1, field=col
        )
    s = df[col]
    bad = s.isna() | (s.str.strip() == "")
    if bad.any():
        raise DataError("missing value", file=path, line=int(s.index[bad.argmax()]), field=col)
    return s.str.strip()


def _reject_first(bad: pd.Series, s: pd.Series, path: str, field: str, expected: str) -> None:
    """Raise for the first cell marked `bad`, naming its line and field."""
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise DataError(
            f"expected {expected}, got {s.iloc[i]!r}", file=path, line=int(s.index[i]), field=field
        )


def to_number(s: pd.Series, path: str, field: str, integer: bool = False) -> pd.Series:
    """Finite numbers; with `integer`, integers (integral floats such as '881250949.0' pass)."""
    num = pd.to_numeric(s, errors="coerce")
    bad = num.isna() | ~np.isfinite(num.fillna(0))
    if integer:
        bad |= num.fillna(0) % 1 != 0
    _reject_first(bad, s, path, field, "an integer" if integer else "a number")
    return num.astype("int64" if integer else "float64")


def to_timestamp(s: pd.Series, path: str, field: str) -> pd.Series:
    """Unix seconds, or ISO-8601 date/times converted to Unix seconds."""
    num = pd.to_numeric(s, errors="coerce")
    if num.notna().any():  # a numeric column: every cell must be an integer
        return to_number(s, path, field, integer=True)
    parsed = pd.to_datetime(s, errors="coerce", utc=True, format="ISO8601")
    _reject_first(parsed.isna(), s, path, field, "an integer Unix time or an ISO-8601 date")
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    return ((parsed - epoch) // pd.Timedelta(seconds=1)).astype("int64")


def _lines(s: pd.Series) -> pd.Series:
    return pd.Series(s.index.to_numpy(), index=s.index)


# --------------------------------------------------------------------------- MovieLens
def load_movielens(interactions: str | Path, items: str | Path | None = None) -> RawData:
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
        df = _read_delimited(text, path, ",", None, header=True)
    else:
        sep = "\t" if p.name.startswith("u.") or "\t" in text[:200] else "::"
        df = _read_delimited(text, path, sep, list(cols.values()), header=False)
    for c in cols.values():
        if c not in df.columns:
            raise DataError(f"column {c!r} is missing", file=path, field=c)
    inter = make_interactions(
        _require(df, cols["user"], path),
        _require(df, cols["item"], path),
        timestamp=to_timestamp(_require(df, cols["time"], path), path, "timestamp"),
        rating=to_number(_require(df, cols["rating"], path), path, "rating"),
        line=_lines(df[cols["user"]]),
    )
    return RawData(inter, _movielens_items(Path(items)) if items else None, source="movielens")


def _movielens_items(p: Path) -> pd.DataFrame:
    path = str(p)
    if p.suffix == ".csv":
        df = _read_delimited(read_text(p), path, ",", None, header=True)
        titles = _require(df, "title", path)
        genres = _require(df, "genres", path).str.split("|")
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
        df = _read_delimited(read_text(p, "latin-1"), path, "|", names, header=False)
        flags = df[genre_names].to_numpy() == "1"
        titles = df["title"]
        genres = pd.Series(
            [[g for g, f in zip(genre_names, row, strict=False) if f] for row in flags]
        )
    else:  # movies.dat: id::title::genres (latin-1)
        df = _read_delimited(
            read_text(p, "latin-1"), path, "::", ["movieId", "title", "genres"], header=False
        )
        titles, genres = df["title"], df["genres"].str.split("|")
    return pd.DataFrame(
        {
            "item_id": _require(df, "movieId", path).to_numpy(),
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
def load_recbole(interactions: str | Path, items: str | Path | None = None) -> RawData:
    """RecBole atomic files: tab-separated with `name:type` headers (`.inter`, `.item`)."""
    path = str(interactions)
    df = _read_delimited(read_text(interactions), path, "\t", None, header=True)
    df.columns = [c.split(":")[0] for c in df.columns]
    for c in ("user_id", "item_id"):
        if c not in df.columns:
            raise DataError(f"header has no {c!r} column", file=path, line=1, field=c)
    ts = next((c for c in ("timestamp", "time") if c in df.columns), None)
    rating = next((c for c in ("rating", "label") if c in df.columns), None)
    inter = make_interactions(
        _require(df, "user_id", path),
        _require(df, "item_id", path),
        timestamp=to_timestamp(_require(df, ts, path), path, ts) if ts else None,
        rating=to_number(_require(df, rating, path), path, rating) if rating else None,
        line=_lines(df["user_id"]),
    )
    return RawData(inter, _recbole_items(items) if items else None, source="recbole")


def _recbole_items(items: str | Path) -> pd.DataFrame:
    path = str(items)
    df = _read_delimited(read_text(items), path, "\t", None, header=True)
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
            "item_id": _require(df, "item_id", path).to_numpy(),
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


def load_amazon(interactions: str | Path, items: str | Path | None = None) -> RawData:
    """Amazon review dumps (2014/2018, JSON lines, gz ok): reviewerID, asin, overall,
    unixReviewTime; metadata: asin, title, description, categories/category, brand."""
    path = str(interactions)
    users, its, ts, ratings, lines = [], [], [], [], []
    for n, rec in _json_records(Path(interactions)):
        for field in ("reviewerID", "asin"):
            if not rec.get(field):
                raise DataError("missing value", file=path, line=n, field=field)
        t = rec.get("unixReviewTime")
        if t is None or isinstance(t, bool) or not str(t).lstrip("-").isdigit():
            raise DataError(
                f"expected an integer, got {t!r}", file=path, line=n, field="unixReviewTime"
            )
        r = rec.get("overall")
        if r is not None and not isinstance(r, int | float):
            raise DataError(f"expected a number, got {r!r}", file=path, line=n, field="overall")
        users.append(str(rec["reviewerID"]))
        its.append(str(rec["asin"]))
        ts.append(int(t))
        ratings.append(r)
        lines.append(n)
    inter = make_interactions(
        pd.Series(users),
        pd.Series(its),
        timestamp=pd.Series(ts),
        rating=pd.Series(ratings, dtype="float64"),
        line=pd.Series(lines),
    )
    return RawData(inter, _amazon_items(Path(items)) if items else None, source="amazon")


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
DEFAULT_COLUMNS = {"user": "user_id", "item": "item_id", "time": "timestamp"}
DEFAULT_ITEM_COLUMNS = {
    "id": "item_id",
    "title": "title",
    "text": "text",
    "categories": "categories",
}


def parse_mapping(spec: str | None, defaults: dict[str, str]) -> dict[str, str]:
    """`user=uid,item=iid,time=ts` → {'user': 'uid', …}, on top of the defaults."""
    out = dict(defaults)
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise DataError(f"column mapping {part!r} is not key=column")
        k, v = (x.strip() for x in part.split("=", 1))
        out[k] = v
    return out


def _read_table(path: str | Path) -> tuple[pd.DataFrame, str]:
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
        df = df.map(lambda v: v if isinstance(v, list | np.ndarray) or v is None else str(v))
        df.index = np.arange(1, len(df) + 1)  # rows are 1-based in messages
        return df, str(p)
    sep = "\t" if p.suffix in (".tsv", ".tab") else ","
    df = _read_delimited(read_text(p), str(p), sep, None, header=True)
    return df, str(p)


def load_table(
    interactions: str | Path,
    items: str | Path | None = None,
    columns: str | None = None,
    item_columns: str | None = None,
) -> RawData:
    """Generic CSV/TSV/Parquet with a column mapping: user, item, time (Unix seconds or
    ISO-8601), optional rating and event; items: id, title, text, categories."""
    cols = parse_mapping(columns, DEFAULT_COLUMNS)
    df, path = _read_table(interactions)
    for key in ("user", "item"):
        if cols[key] not in df.columns:
            raise DataError(
                f"column {cols[key]!r} not found (have {list(df.columns)}); map it with "
                f"--columns {key}=NAME",
                file=path,
                line=1,
                field=cols[key],
            )
    has = {k: cols.get(k) in df.columns for k in ("time", "rating", "event")}
    for k in ("rating", "event"):
        if k in cols and not has[k]:
            raise DataError(f"column {cols[k]!r} not found", file=path, line=1, field=cols[k])
    inter = make_interactions(
        _require(df, cols["user"], path),
        _require(df, cols["item"], path),
        timestamp=to_timestamp(_require(df, cols["time"], path), path, cols["time"])
        if has["time"]
        else None,
        rating=to_number(_require(df, cols["rating"], path), path, cols["rating"])
        if has["rating"]
        else None,
        event=df[cols["event"]] if has["event"] else None,
        line=_lines(df[cols["user"]]),
    )
    return RawData(inter, load_item_table(items, item_columns) if items else None, source="table")


def load_item_table(
    path: str | Path, item_columns: str | None = None, sep_categories: str = "|"
) -> pd.DataFrame:
    """An item catalogue as CSV/TSV/Parquet (or RecBole `.item`). MovieLens catalogues
    are recognised by their file names only when no column mapping is given: an explicit
    mapping always wins."""
    if str(path).endswith(".item") and item_columns is None:
        return _recbole_items(path)
    if Path(path).name in ("movies.dat", "u.item", "movies.csv") and item_columns is None:
        return _movielens_items(Path(path))
    cols = parse_mapping(item_columns, DEFAULT_ITEM_COLUMNS)
    df, p = _read_table(path)
    if cols["id"] not in df.columns:
        raise DataError(
            f"column {cols['id']!r} not found (have {list(df.columns)})",
            file=p,
            line=1,
            field=cols["id"],
        )

    def col(key: str) -> pd.Series:
        c = cols.get(key)
        return df[c].fillna("") if c in df.columns else pd.Series([""] * len(df), index=df.index)

    cats = col("categories").map(
        lambda v: (
            [str(x) for x in v]
            if isinstance(v, list | np.ndarray)
            else [c for c in str(v).split(sep_categories) if c]
        )
    )
    return pd.DataFrame(
        {
            "item_id": _require(df.astype({cols["id"]: str}), cols["id"], p).to_numpy(),
            "title": col("title").astype(str).to_numpy(),
            "text": col("text").astype(str).to_numpy(),
            "categories": cats.to_numpy(),
        }
    )


# --------------------------------------------------------------------------- dispatch
def load(
    fmt: str,
    interactions: str | Path,
    items: str | Path | None = None,
    columns: str | None = None,
    item_columns: str | None = None,
) -> RawData:
    """Read `interactions` (and `items`) in format `fmt` (one of FORMATS)."""
    readers: dict[str, Callable[..., RawData]] = {
        "movielens": load_movielens,
        "recbole": load_recbole,
        "amazon": load_amazon,
    }
    if fmt == "sequence":
        raw = load_sequence(interactions)
        raw.items = load_item_table(items, item_columns) if items else None
    elif fmt in readers:
        raw = readers[fmt](interactions, items)
    elif fmt in ("csv", "parquet"):
        raw = load_table(interactions, items, columns, item_columns)
    else:
        raise DataError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if raw.items is None:
        raw.items = empty_items()
    return raw
