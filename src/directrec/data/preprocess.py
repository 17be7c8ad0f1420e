"""Preprocessing users expect before modelling: implicit conversion, dedup, k-core.

All functions take and return the canonical interaction frame (see `schema`), keeping file
order, so the chronological tie-break stays deterministic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def to_implicit(df: pd.DataFrame, min_rating: float | None) -> pd.DataFrame:
    """Keep interactions with rating ≥ `min_rating` (None keeps all). Rows without a
    rating are kept: a click has no rating and still is a positive."""
    if min_rating is None:
        return df
    keep = df["rating"].isna() | (df["rating"] >= min_rating)
    return df[keep.to_numpy(dtype=bool)]


def dedup(df: pd.DataFrame, keep: str = "last") -> pd.DataFrame:
    """Drop repeated (user, item) events, keeping the `first` or `last` occurrence in time
    order; `none` keeps repeats (for models of re-consumption)."""
    if keep == "none":
        return df
    if keep not in ("first", "last"):
        raise ValueError(f"dedup keep must be first, last or none, not {keep!r}")
    order = chronological_order(df)
    ordered = df.iloc[order]
    mask = ~ordered.duplicated(["user_id", "item_id"], keep=keep)
    return df.iloc[np.sort(order[mask.to_numpy()])]


def kcore(df: pd.DataFrame, k_user: int, k_item: int | None = None) -> pd.DataFrame:
    """Iteratively drop users with < k_user and items with < k_item interactions until
    every remaining user and item meets its bound."""
    k_item = k_user if k_item is None else k_item
    if k_user <= 1 and k_item <= 1:
        return df
    while True:
        uc = df["user_id"].map(df["user_id"].value_counts())
        ic = df["item_id"].map(df["item_id"].value_counts())
        keep = (uc >= k_user) & (ic >= k_item)
        if keep.all():
            return df
        df = df[keep.to_numpy()]


def prepare(
    df: pd.DataFrame, min_rating: float | None, keep: str, k: int
) -> tuple[pd.DataFrame, dict[str, int]]:
    """`to_implicit`, `dedup` and `kcore` in that order, with the rows each step dropped
    (only steps that dropped any), keyed by the reason as a user reads it."""
    dropped: dict[str, int] = {}
    for reason, step in (
        (f"rating below --min-rating {min_rating}", lambda d: to_implicit(d, min_rating)),
        (f"repeated (user, item), --dedup {keep}", lambda d: dedup(d, keep)),
        (f"outside the {k}-core, --kcore {k}", lambda d: kcore(d, k)),
    ):
        n = len(df)
        df = step(df)
        if len(df) < n:
            dropped[reason] = n - len(df)
    return df, dropped


def chronological_order(df: pd.DataFrame) -> np.ndarray:
    """Row order by (timestamp, file order). Rows without a timestamp sort by file order
    alone; this is the documented, deterministic tie-break used by every split."""
    ts = df["timestamp"].to_numpy(dtype="float64", na_value=np.nan)
    ts = np.where(np.isnan(ts), -np.inf, ts)
    return np.lexsort((np.arange(len(df)), ts))
