"""The evaluation protocol on a hand-checked case, and its invariances."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from directrec.data.dataset import Dataset, Interactions
from directrec.data.histories import Histories
from directrec.data.split import Targets, leave_one_out
from directrec.evaluate.protocol import evaluate, fit_model
from directrec.models import create
from directrec.models.base import Capabilities, Recommender


class FixedScores(Recommender):
    """Scores given up front: lets a test know every rank."""

    name = "fixed"

    def __init__(self, scores: np.ndarray) -> None:
        super().__init__()
        self.table = scores

    def _fit(self, data, catalog, validator):
        pass

    def _score(self, histories: Histories, k: int) -> torch.Tensor:
        return torch.from_numpy(self.table[histories.users])


class Spy(Recommender):
    """Records what the fit protocol hands it (the generator path of the benchmark)."""

    name = "spy"
    capabilities = Capabilities(early_stopping=True)

    def _fit(self, data, catalog, validator):
        self.fit_pairs = set(zip(data.user.tolist(), data.item.tolist(), strict=True))
        self.valid_score = validator(self) if validator is not None else None

    def _score(self, histories: Histories, k: int) -> torch.Tensor:
        return torch.from_numpy(self.popularity).expand(len(histories), -1)


def test_generator_path_fits_on_train_stops_on_valid_and_never_sees_test(planted):
    """Early-stopping models: fit on train only, validate on the validation item, then
    score test with train + validation as input; the test item is never in the fit data."""
    split = leave_one_out(planted.interactions)
    model = Spy()
    inputs = fit_model(model, split, "test")
    test_pairs = set(zip(split.test.user.tolist(), split.test.item.tolist(), strict=True))
    valid_pairs = set(zip(split.valid.user.tolist(), split.valid.item.tolist(), strict=True))
    train_pairs = set(zip(split.train.user.tolist(), split.train.item.tolist(), strict=True))
    assert model.fit_pairs == train_pairs
    assert not model.fit_pairs & (test_pairs - train_pairs)
    assert not model.fit_pairs & (valid_pairs - train_pairs)
    assert model.valid_score is not None and 0 <= model.valid_score <= 1
    assert len(inputs) == len(split.train) + len(split.valid)  # scored with validation added
    plain = FixedScores(np.zeros((1, 1), np.float32))
    assert not plain.capabilities.early_stopping


def test_hand_checked_case_with_seen_exclusion():
    hist = Interactions(np.array([0, 0, 1]), np.array([0, 1, 2]), n_users=2, n_items=5)
    scores = np.array([[9, 8, 1, 2, 3], [1, 2, 9, 8, 7]], dtype=np.float32)
    model = FixedScores(scores).fit(hist)
    # user 0 seen {0,1}: ranking 4,3,2 → target 2 at rank 2; user 1 seen {2}: 3,4,1,0 → target 4 rank 1
    targets = Targets(np.array([0, 1]), np.array([0, 1, 2]), np.array([2, 4]))
    r = evaluate(model, hist, targets, ks=(1, 3))
    assert r.metrics["hr@1"] == 0.0 and r.metrics["hr@3"] == 1.0
    assert r.metrics["ndcg@3"] == pytest.approx((1 / np.log2(4) + 1 / np.log2(3)) / 2)
    assert r.metrics["mrr@3"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert r.metrics["coverage@1"] == pytest.approx(2 / 5)  # items 4 and 3
    # Without exclusion, user 0's target ranks below the two seen items too.
    r2 = evaluate(model, hist, targets, ks=(3,), exclude_seen=False)
    assert r2.metrics["hr@3"] == 0.5


def test_targets_already_seen_are_dropped_and_users_skipped():
    hist = Interactions(np.array([0, 1]), np.array([0, 1]), n_users=2, n_items=3)
    model = FixedScores(np.ones((2, 3), np.float32)).fit(hist)
    targets = Targets(np.array([0, 1]), np.array([0, 1, 2]), np.array([0, 2]))
    r = evaluate(model, hist, targets, ks=(1,))
    assert r.n_users == 1 and r.n_skipped == 1


def test_batch_size_does_not_change_results(planted):
    split = leave_one_out(planted.interactions)
    fit, seen, targets = split.stage("test")
    model = create("itemknn").fit(fit)
    a = evaluate(model, fit, targets, ks=(10,), seen=seen, batch_size=7)
    b = evaluate(model, fit, targets, ks=(10,), seen=seen, batch_size=1000)
    assert a.metrics == pytest.approx(b.metrics)
    assert sum(s["users"] for s in a.segments.values()) == a.n_users


def test_segments_by_history_length():
    rows = [("short", f"i{j}", j) for j in range(4)] + [("long", f"i{j}", j) for j in range(25)]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    df["timestamp"] = df["timestamp"].astype("Int64")
    df["rating"] = pd.array([None] * len(df), dtype="Float64")
    df["event"], df["line"] = None, np.arange(len(df))
    ds = Dataset.from_frames(df)
    fit, seen, targets = leave_one_out(ds.interactions).stage("test")
    r = evaluate(create("pop").fit(fit), fit, targets, ks=(5,), seen=seen)
    assert r.segments["<=5"]["users"] == 1 and r.segments[">20"]["users"] == 1
    assert r.segments["6-20"]["users"] == 0


def test_history_cap_limits_inputs_not_what_models_learn(planted):
    """--max-history: early-stopping and plain models learn from every interaction before
    the targets, and read only the last N as context; --cap-training restores the old rule."""
    split = leave_one_out(planted.interactions)
    train_pairs = set(zip(split.train.user.tolist(), split.train.item.tolist(), strict=True))
    model = Spy()
    inputs = fit_model(model, split, "test", max_history=3)
    assert model.fit_pairs == train_pairs
    assert inputs.history_lengths().max() == 3
    capped = Spy()
    fit_model(capped, split, "test", max_history=3, cap_training=True)
    assert len(capped.fit_pairs) < len(train_pairs)
    assert max(np.bincount([u for u, _ in capped.fit_pairs])) <= 3
