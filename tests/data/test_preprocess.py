from __future__ import annotations

import numpy as np
import pandas as pd

from directrec.data.preprocess import dedup, kcore, prepare, to_implicit


def frame(rows):
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    df["timestamp"] = df["timestamp"].astype("Int64")
    df["rating"] = df["rating"].astype("Float64")
    df["line"] = np.arange(1, len(df) + 1)
    return df


def test_implicit_threshold_keeps_unrated():
    df = frame([("u", "a", 1, 5.0), ("u", "b", 2, 2.0), ("u", "c", 3, None)])
    assert to_implicit(df, 4)["item_id"].tolist() == ["a", "c"]
    assert len(to_implicit(df, None)) == 3


def test_dedup_first_and_last():
    df = frame([("u", "a", 3, 1.0), ("u", "a", 1, 2.0), ("u", "b", 2, 3.0)])
    assert dedup(df, "first")["timestamp"].tolist() == [1, 2]
    assert dedup(df, "last")["timestamp"].tolist() == [3, 2]
    assert len(dedup(df, "none")) == 3


def test_kcore_is_iterative():
    # Removing item c (1 user) drops u3 below 2, which then drops item d.
    df = frame(
        [
            ("u1", "a", 1, 1),
            ("u1", "b", 1, 1),
            ("u2", "a", 1, 1),
            ("u2", "b", 1, 1),
            ("u3", "c", 1, 1),
            ("u3", "d", 1, 1),
            ("u4", "d", 1, 1),
            ("u4", "a", 1, 1),
        ]
    )
    out = kcore(df, 2)
    assert set(out["user_id"]) == {"u1", "u2"} and set(out["item_id"]) == {"a", "b"}


def test_prepare_counts_the_rows_each_step_drops():
    rows = [("u1", "a", 1, 5.0), ("u1", "a", 2, 5.0), ("u1", "b", 3, 4.0), ("u1", "c", 4, 1.0)]
    df = frame([*rows, ("u2", "a", 5, 4.0), ("u2", "b", 6, 4.0), ("u3", "d", 7, 5.0)])
    kept, dropped = prepare(df, 4, "last", 2)
    assert dropped == {
        "rating below --min-rating 4": 1,
        "repeated (user, item), --dedup last": 1,
        "outside the 2-core, --kcore 2": 1,
    }
    assert kept["timestamp"].tolist() == [2, 3, 5, 6]
    assert prepare(df, None, "none", 0)[1] == {}
