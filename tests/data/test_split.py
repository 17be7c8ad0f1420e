"""Splits cut where the docs say, with deterministic tie-breaks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from directrec.data.dataset import Dataset
from directrec.data.split import leave_one_out, temporal


def frame(rows):
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    df["timestamp"] = df["timestamp"].astype("Int64")
    df["rating"] = pd.array([None] * len(df), dtype="Float64")
    df["event"] = None
    df["line"] = np.arange(1, len(df) + 1)
    return df


def test_leave_one_out_with_ties_broken_by_file_order():
    # u1's last two events share a timestamp: file order decides (d before e).
    ds = Dataset.from_frames(
        frame(
            [
                ("u1", "a", 1),
                ("u1", "d", 9),
                ("u1", "e", 9),
                ("u1", "b", 2),
                ("u2", "a", 1),
                ("u2", "b", 2),  # too short: all training
            ]
        )
    )
    s = leave_one_out(ds.interactions)
    ids = ds.items.ids
    assert ids[s.test.item].tolist() == ["e"] and ids[s.valid.item].tolist() == ["d"]
    assert sorted(ids[s.train.item].tolist()) == ["a", "a", "b", "b"]
    fit, _seen, targets = s.stage("test")
    assert len(fit) == 5 and targets.users.tolist() == [ds.users.index("u1")]
    fit_v, _, targets_v = s.stage("valid")
    assert len(fit_v) == 4 and ids[targets_v.items].tolist() == ["d"]


def test_history_cap_limits_the_context_not_the_training_data():
    ds = Dataset.from_frames(frame([("u", c, t) for t, c in enumerate("abcdefg")]))
    s = leave_one_out(ds.interactions)
    fit, seen, _ = s.stage("test", max_history=2)
    assert ds.items.ids[fit.item].tolist() == list("abcdef")  # training keeps everything
    assert ds.items.ids[s.inputs("test", 2).item].tolist() == ["e", "f"]  # the context is capped
    assert len(seen) == 6  # exclusion uses the full history
    old, _, _ = s.stage("test", max_history=2, cap_training=True)  # the old rule, on request
    assert ds.items.ids[old.item].tolist() == ["e", "f"]


def test_temporal_split():
    rows = [(f"u{u}", f"i{t}", t * 10 + u) for u in range(3) for t in range(10)]
    ds = Dataset.from_frames(frame(rows))
    s = temporal(ds.interactions, valid=0.1, test=0.1)
    assert s.train.timestamp.max() < s.valid.timestamp.min() <= s.valid.timestamp.max()
    assert s.valid.timestamp.max() < s.test.timestamp.min()
    assert len(s.train) + len(s.valid) + len(s.test) == 30
    assert len(s.test_targets) == 3


def test_temporal_needs_timestamps(tmp_path):
    df = frame([("u", "a", 1)])
    df["timestamp"] = pd.array([None], dtype="Int64")
    with pytest.raises(ValueError, match="timestamps"):
        temporal(Dataset.from_frames(df).interactions)


def test_natural_id_order_and_reversible_maps():
    ds = Dataset.from_frames(frame([("10", "2", 1), ("9", "10", 2)]))
    assert ds.users.ids.tolist() == ["9", "10"] and ds.items.ids.tolist() == ["2", "10"]
    assert ds.items.index("10") == 1 and ds.items.index("nope") == -1
