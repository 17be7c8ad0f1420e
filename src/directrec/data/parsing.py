"""Text-table parsing shared by the readers: files to string frames whose index is each
row's line number, and checks that name the file, line and field of a bad cell."""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from directrec.data.schema import DataError


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


def read_delimited(
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
    lines = _record_lines(text, sep, quoted=sep not in ("\t", "\x1f"), skip=int(header))
    first = 2 if header else 1  # if the two parsers ever disagree: rows counted from the top
    df.index = lines if len(lines) == len(df) else np.arange(len(df)) + first
    return df


def _record_lines(text: str, sep: str, quoted: bool, skip: int) -> np.ndarray:
    """The line each record starts on, as the parser above splits them: blank lines are
    skipped and a quoted field may span lines (so counting newlines would drift)."""
    import csv

    rows = csv.reader(
        io.StringIO(text), delimiter=sep, quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
    )
    starts, last = [], 0
    for record in rows:
        if len(record) > 1 or (record and record[0].strip()):  # as pandas skips blanks
            starts.append(last + 1)
        last = rows.line_num
    return np.array(starts[skip:], dtype=np.int64)


def require(df: pd.DataFrame, col: str, path: str) -> pd.Series:
    if col not in df.columns:
        raise DataError(
            f"column {col!r} not found (have {list(df.columns)})", file=path, line=1, field=col
        )
    s = df[col]
    bad = s.isna() | (s.str.strip() == "")
    if bad.any():
        raise DataError("missing value", file=path, line=int(s.index[bad.argmax()]), field=col)
    return s.str.strip()


def reject_first(bad: pd.Series, s: pd.Series, path: str, field: str, expected: str) -> None:
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
    reject_first(bad, s, path, field, "an integer" if integer else "a number")
    return num.astype("int64" if integer else "float64")


def line_numbers(s: pd.Series) -> pd.Series:
    """Each row's line number (the frame's index) as a column."""
    return pd.Series(s.index.to_numpy(), index=s.index)


# A scheme followed by "//" (http://, s3://, file://...) or a data: URI: not a local path.
_URL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|data:)")


def image_paths(s: pd.Series, path: str, field: str, base: Path | None = None) -> pd.Series:
    """Image cells as absolute paths ("" where a cell is empty: the item has no image).
    A relative path is taken from the folder of the file `path` that names it. A URL is
    refused (nothing is downloaded), and so is a cell whose file is missing or is not an
    image Pillow can read (only the header is read here), naming the line and field.
    `base` overrides the folder relative paths start from."""
    from PIL import Image, UnidentifiedImageError

    base = base or Path(path).resolve().parent
    out = []
    for line, cell in s.items():
        cell = str(cell).strip() if cell is not None else ""
        if not cell:
            out.append("")
            continue
        if _URL.match(cell):
            raise DataError(
                f"image {cell!r} is a URL: directrec works offline and downloads nothing; "
                "fetch the images first and give local file paths",
                file=path,
                line=int(line),
                field=field,
            )
        f = (base / cell).resolve()
        if not f.is_file():
            raise DataError(
                f"image file {str(f)!r} not found", file=path, line=int(line), field=field
            )
        try:
            with Image.open(f) as im:
                im.size  # noqa: B018 (the header parses: a readable image format)
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            raise DataError(
                f"image file {str(f)!r} is not a readable image ({e})",
                file=path,
                line=int(line),
                field=field,
            ) from e
        out.append(str(f))
    return pd.Series(out, index=s.index, dtype=object)
