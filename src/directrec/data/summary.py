"""What an ingest did, in a few lines: rows read, kept and dropped (per reason), users,
items, the time range and how times were read, and warnings for anything the data lost or
gained on the way (items missing from the catalogue, fractions of a second, absent columns).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from directrec.data.schema import RawData
from directrec.data.times import UNIT_NAMES


@dataclass
class IngestSummary:
    store: str  # where the data went, as `describe` names it
    read: int
    kept: int
    dropped: dict[str, int]  # reason → rows
    users: int  # in the kept rows
    items: int
    first: int | None  # Unix seconds of the kept rows' earliest and latest events
    last: int | None
    time_unit: str | None
    time_unit_detected: bool = False
    subsecond: int = 0
    catalogue: str | None = None  # the catalogue file, when one was read
    uncatalogued: int = 0  # items of the kept rows the catalogue lacks
    totals: dict[str, int] = field(default_factory=dict)  # the store's counts after ingest
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        t = self.totals
        out = [
            f"ingested into {self.store}: the store holds "
            f"{_count(t.get('interactions', 0), 'interaction')}, "
            f"{_count(t.get('users', 0), 'user')}, {_count(t.get('items', 0), 'item')}"
        ]
        n_dropped = self.read - self.kept
        rows = f"rows: {self.read:,} read, {self.kept:,} kept, {n_dropped:,} dropped"
        if self.dropped:
            rows += " (" + "; ".join(f"{n:,} {why}" for why, n in self.dropped.items()) + ")"
        out.append(rows)
        out.append(f"kept: {_count(self.users, 'user')}, {_count(self.items, 'item')}")
        out.append(f"times: {self._times()}")
        if self.catalogue:
            out.append(
                f"catalogue {self.catalogue}: {_count(self.uncatalogued, 'item')} of the "
                "interactions not in it"
            )
        return [out[0]] + [f"  {line}" for line in out[1:]]

    def warnings(self) -> list[str]:
        out = []
        if self.uncatalogued:
            out.append(
                f"{_count(self.uncatalogued, 'item')} of the interactions not in the catalogue "
                f"{self.catalogue}: added with no title, text or categories (--strict refuses "
                "them)"
            )
        if self.subsecond:
            out.append(
                f"{_count(self.subsecond, 'time')} with a fraction of a second: the store keeps "
                "whole seconds, and events within one second keep their file order"
            )
        return out + self.notes

    def _times(self) -> str:
        if self.first is None or self.last is None:
            return "none: events keep their file order"
        span = f"{_utc(self.first)} to {_utc(self.last)} UTC"
        if self.time_unit == "iso":
            return f"{span} (ISO-8601)"
        how = "read from their magnitude" if self.time_unit_detected else "--time-unit"
        return f"{span} (Unix {UNIT_NAMES.get(self.time_unit or 's')}, {how})"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _utc(seconds: int) -> str:
    return pd.Timestamp(seconds, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M:%S")


def summarize(
    raw: RawData,
    kept: pd.DataFrame,
    *,
    read: int,
    dropped: dict[str, int],
    store: str,
    totals: dict[str, int],
    catalogue: str | None = None,
) -> IngestSummary:
    """The summary of ingesting `kept` (what remained of `read` rows of `raw`)."""
    ts = kept["timestamp"].dropna()
    uncatalogued = 0
    if catalogue and raw.items is not None:
        uncatalogued = int(
            kept.loc[~kept["item_id"].isin(raw.items["item_id"]), "item_id"].nunique()
        )
    return IngestSummary(
        store=store,
        read=read,
        kept=len(kept),
        dropped=dropped,
        users=int(kept["user_id"].nunique()),
        items=int(kept["item_id"].nunique()),
        first=int(ts.min()) if len(ts) else None,
        last=int(ts.max()) if len(ts) else None,
        time_unit=raw.time_unit,
        time_unit_detected=raw.time_unit_detected,
        subsecond=raw.subsecond,
        catalogue=catalogue,
        uncatalogued=uncatalogued,
        totals=totals,
        notes=list(raw.notes),
    )
