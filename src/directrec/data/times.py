"""Event times as the store keeps them: whole Unix seconds.

Files bring Unix times in seconds, milliseconds, microseconds or nanoseconds (whole or
fractional) or ISO-8601 strings. A numeric column's unit is read from the magnitude of its
median value unless the user names it; then every value (ISO dates too) must fall between
1970 and 2100 in that unit, so a column mixing units, or a unit guessed wrong, stops with the line of
the first value that does not fit instead of landing decades off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from directrec.data.schema import DataError, RawData

# Divisor from each unit to seconds, coarsest first: detection picks the first that fits.
UNITS = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
ISO_START = r"^\s*\d{4}-\d{2}"  # what an ISO-8601 date begins with
LATEST = 4_102_444_800  # 2100-01-01T00:00:00Z: later values are taken for a wrong unit


@dataclass
class Times:
    """Parsed times: whole Unix seconds (int64, the input's index) and how they were read."""

    seconds: pd.Series
    unit: str  # a key of UNITS, or "iso"
    detected: bool  # the unit was read from the magnitude, not given
    subsecond: int  # values whose fraction of a second the store drops


def check_unit(unit: str | None) -> str | None:
    if unit is not None and unit not in UNITS:
        raise DataError(f"--time-unit must be one of {', '.join(UNITS)}, not {unit!r}")
    return unit


def detect_unit(values: np.ndarray) -> str:
    """The coarsest unit in which the median value is a time before 2100."""
    mid = float(np.median(values))
    return next((u for u, scale in UNITS.items() if mid <= LATEST * scale), "ns")


def parse_times(s: pd.Series, path: str, field: str, unit: str | None = None) -> Times:
    """Unix times (unit given or detected) or ISO-8601 date/times, as whole Unix seconds.
    A column is numeric when half or more of its cells are numbers; a cell of the other
    kind, or a number outside 1970–2100 in the unit, raises DataError naming its line."""
    check_unit(unit)
    num = pd.to_numeric(s, errors="coerce")
    if len(s) and num.notna().sum() * 2 >= len(s):  # half or more: a numeric column
        return _unix(s, num, path, field, unit)
    parsed = pd.to_datetime(s, errors="coerce", utc=True, format="ISO8601")
    # pandas also reads words such as "now" and "today" as times: a date starts YYYY-MM
    dated = s.astype(str).str.match(ISO_START)
    _reject(parsed.isna() | ~dated, s, path, field, "expected a Unix time or an ISO-8601 date")
    since = parsed - pd.Timestamp("1970-01-01", tz="UTC")
    seconds = (since // pd.Timedelta(seconds=1)).astype("int64")
    _reject(
        (seconds < 0) | (seconds > LATEST),
        s,
        path,
        field,
        "expected a date between 1970 and 2100 (the store keeps Unix seconds)",
    )
    subsecond = int((since % pd.Timedelta(seconds=1) != pd.Timedelta(0)).sum())
    return Times(seconds, "iso", False, subsecond)


def note_times(raw: RawData, times: Times | None) -> RawData:
    """Record on `raw` how its times were read, for the ingest summary."""
    if times is not None:
        raw.time_unit, raw.time_unit_detected = times.unit, times.detected
        raw.subsecond = times.subsecond
    return raw


def to_timestamp(s: pd.Series, path: str, field: str, unit: str | None = None) -> pd.Series:
    """`parse_times`' whole Unix seconds alone."""
    return parse_times(s, path, field, unit).seconds


def _unix(s: pd.Series, num: pd.Series, path: str, field: str, unit: str | None) -> Times:
    bad = num.isna() | ~np.isfinite(num.fillna(0))
    _reject(bad, s, path, field, "expected a Unix time or an ISO-8601 date")
    detected = unit is None
    unit = unit or detect_unit(num.to_numpy())
    scale = UNITS[unit]
    out = (num < 0) | (num > LATEST * scale)
    if out.any():
        i = int(out.to_numpy().argmax())
        when = "before 1970" if num.iloc[i] < 0 else "after 2100"
        how = (
            "the unit read from the column's magnitude; pass --time-unit s|ms|us|ns if it is "
            "another"
            if detected
            else f"--time-unit {unit}"
        )
        raise DataError(
            f"{s.iloc[i]!r} is not a plausible Unix time in {UNIT_NAMES[unit]} ({how}): "
            f"it falls {when}",
            file=path,
            line=int(s.index[i]),
            field=field,
        )
    if pd.api.types.is_integer_dtype(num):
        # Integer division keeps nanosecond values exact; float would round them.
        seconds = num // scale
        subsecond = int((num % scale != 0).sum())
    else:
        exact = num / scale
        seconds = np.floor(exact)
        subsecond = int((exact != seconds).sum())
    return Times(seconds.astype("int64"), unit, detected, subsecond)


def _reject(bad: pd.Series, s: pd.Series, path: str, field: str, what: str) -> None:
    """Raise for the first cell marked `bad`, naming its line and field."""
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise DataError(f"{what}, got {s.iloc[i]!r}", file=path, line=int(s.index[i]), field=field)
