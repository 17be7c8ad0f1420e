"""The raw tables every loader produces, and the error every loader raises.

Loaders return raw ids (strings) in file order; indexing into contiguous integers happens
later (`directrec.data.dataset`), so the mapping stays reversible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

# Interaction frames (see make_interactions): user_id, item_id (str), timestamp (Int64, may
# be null), rating (Float64, may be null), event (str, may be null), line (source line/row).
# Columns of the item frame: item_id, title, text (str), categories (list[str]).
ITEM_COLUMNS = ["item_id", "title", "text", "categories", "image"]


class DataError(ValueError):
    """Bad input: names the file, the line (or row) and the field that is wrong."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message, self.file, self.line, self.field = message, file, line, field
        where = file or "<input>"
        if line is not None:
            where += f":{line}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")


@dataclass
class RawData:
    """Interactions (and optionally an item catalogue) as read from files, raw ids."""

    interactions: pd.DataFrame
    items: pd.DataFrame | None = None
    source: str = ""
    # The file's own column behind each canonical field (user_id → 'uid', item_id → 'sku'),
    # so that errors raised after loading name what the user wrote.
    fields: dict[str, str] = field(default_factory=dict)
    item_fields: dict[str, str] = field(default_factory=dict)
    time_unit: str | None = None  # s | ms | us | ns | iso; None: the events carry no times
    time_unit_detected: bool = False  # read from the values' magnitude, not given
    subsecond: int = 0  # times whose fraction of a second the store's whole seconds drop
    notes: list[str] = field(default_factory=list)  # choices the reader made, for a warning

    def field_name(self, name: str) -> str:
        """The interactions file's column for canonical field `name`."""
        return self.fields.get(name, name)

    def item_field_name(self, name: str) -> str:
        """The catalogue's column for canonical field `name`."""
        return self.item_fields.get(name, name)


def empty_items() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in ITEM_COLUMNS})


def make_interactions(
    user: pd.Series,
    item: pd.Series,
    *,
    timestamp: pd.Series | None = None,
    rating: pd.Series | None = None,
    event: pd.Series | None = None,
    line: pd.Series | None = None,
) -> pd.DataFrame:
    """Build a frame with the canonical columns and dtypes."""
    n = len(user)
    return pd.DataFrame(
        {
            "user_id": user.astype(str).to_numpy(),
            "item_id": item.astype(str).to_numpy(),
            "timestamp": (
                pd.array(timestamp.to_numpy(), dtype="Int64")
                if timestamp is not None
                else pd.array([None] * n, dtype="Int64")
            ),
            "rating": (
                pd.array(rating.to_numpy(), dtype="Float64")
                if rating is not None
                else pd.array([None] * n, dtype="Float64")
            ),
            "event": (event.astype(object).to_numpy() if event is not None else [None] * n),
            "line": line.to_numpy() if line is not None else range(1, n + 1),
        }
    )
