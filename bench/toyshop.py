"""A toy shop no one prepared, for trying the first hour as a new user would:

    python bench/toyshop.py OUT_DIR

writes OUT_DIR/events.csv (semicolon-delimited: customer_id;sku;event_time, times in Unix
milliseconds, 50 events on SKUs the catalogue lacks), OUT_DIR/events_comma.csv (the same,
comma-delimited) and OUT_DIR/catalogue.csv (sku,name,description,tags; every item's tags
start with a root category, "All Products"). Users mostly buy within one category.
docs/results/first-hour/ holds what ingest, benchmark and recommend --explain printed on it
before and after the first-hour changes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

KINDS = ["Serum", "Cream", "Lotion", "Mask", "Oil", "Gel"]


def make(out: Path, n_users: int = 3000, n_items: int = 1200, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    cat = rng.integers(0, 12, n_items)
    brand = rng.integers(0, 40, n_items)
    items = pd.DataFrame(
        {
            "sku": [f"SKU{i:05d}" for i in range(n_items)],
            "name": [f"Brand {b} {KINDS[i % 6]} {i}" for i, b in enumerate(brand)],
            "description": [
                f"A {['gentle', 'rich', 'light', 'fresh'][i % 4]} product for "
                f"{['dry', 'oily', 'mixed'][c % 3]} skin"
                for i, c in enumerate(cat)
            ],
            "tags": [
                f"All Products|Category {c}|Category {c} / Line {i % 3}" for i, c in enumerate(cat)
            ],
        }
    )
    rows = []
    t0 = 1_700_000_000_000  # milliseconds
    for u in range(n_users):
        pool = np.flatnonzero(cat == rng.integers(0, 12))
        n = rng.integers(4, 25)
        picks = np.where(rng.random(n) < 0.8, rng.choice(pool, n), rng.integers(0, n_items, n))
        rows += [
            (f"C{u:05d}", f"SKU{i:05d}", t0 + u * 1000 + j * 86_400_000)
            for j, i in enumerate(picks)
        ]
    events = pd.DataFrame(rows, columns=["customer_id", "sku", "event_time"])
    unknown = pd.DataFrame(
        [(f"C{u:05d}", f"NEW{u % 7}", t0 + 999) for u in range(50)], columns=events.columns
    )
    events = pd.concat([events, unknown])
    out.mkdir(parents=True, exist_ok=True)
    events.to_csv(out / "events.csv", sep=";", index=False)
    events.to_csv(out / "events_comma.csv", index=False)
    items.to_csv(out / "catalogue.csv", index=False)
    print(f"{len(events):,} events, {n_items:,} items in {out}")


if __name__ == "__main__":
    make(Path(sys.argv[1] if len(sys.argv) > 1 else "out/toyshop"))
