"""The cold-start protocols of `benchmark --protocol`: on planted data (users love one
topic), held-out items reach their topic's users only through the fitted gate, and new
users' lists improve with the fitted stages; every figure is a real evaluation."""

from __future__ import annotations

import numpy as np

from directrec.data.split import Targets
from directrec.evaluate.coldstart import cold_items, new_users, subset_targets
from directrec.models import create
from tests.models.settings import TEST_SETTINGS


def test_subset_targets_keeps_the_chosen_rows_by_hand():
    t = Targets(np.array([3, 5, 9]), np.array([0, 1, 3, 4]), np.array([10, 11, 12, 13]))
    s = subset_targets(t, np.array([False, True, True]))
    assert s.users.tolist() == [5, 9] and s.indptr.tolist() == [0, 2, 3]
    assert s.items.tolist() == [11, 12, 13]


def test_cold_items_protocol_gates_held_out_items_in(planted_embedded):
    settings = {"semantic-id": TEST_SETTINGS["semantic-id"] | {"epochs": 20}, "content": {}}
    res = cold_items(
        planted_embedded,
        ["semantic-id", "content"],
        lambda name: create(name, settings[name]),
        holdout=0.1,
        valid_users=None,
    )
    assert res["cold_items"] == 12 and res["cold_test_cases"] > 0
    sem, content = res["models"]["semantic-id"], res["models"]["content"]
    for row in (sem, content):
        for part in ("cold_targets", "warm_targets", "all_targets"):
            assert all(0.0 <= v <= 1.0 for v in row[part].values())
    # the gate was fitted on validation cases and lifts the held-out items' recall on test
    assert sem["cold_gate"]["cold_cases"] > 0
    assert "without_gate" in sem
    assert sem["cold_targets"]["recall@10"] > sem["without_gate"]["cold_targets"]["recall@10"]
    assert sem["cold_targets"]["recall@10"] > 10 / 120  # well above a random cold pick
    assert "cold_gate" not in content  # no cold-item path of its own: reported as is
    # how each fit ended: the generator after its 20 epochs or by early stopping; content
    # does not train by epochs
    assert sem["stopped"] in ("epochs exhausted (20)", f"converged at epoch {sem['best_epoch']}")
    assert content["stopped"] == "—"


def test_new_users_protocol_reports_the_curve_and_the_sentence(planted_embedded):
    res = new_users(
        planted_embedded,
        "sasrec-ce",
        lambda name: create(name, TEST_SETTINGS[name]),
        holdout_users=0.2,
        valid_users=None,
    )
    assert res["tune_users"] + res["test_users"] == res["held_out_users"] == 60
    assert set(res["curve"]) == {"0", "1", "2", "5"}
    # with no history the generator falls back to popularity (counted on its own training
    # part), which the prior stage leaves alone
    zero = res["curve"]["0"]
    assert zero["generator_recall@10"] == zero["generator_with_stages_recall@10"]
    assert abs(zero["generator_recall@10"] - zero["popularity_recall@10"]) < 0.02
    # five items of the user's topic are enough for the generator to beat popularity by far
    five = res["curve"]["5"]
    assert five["generator_recall@10"] > 2 * five["popularity_recall@10"]
    s = res["sentence"]
    assert s["generator_with_stages_recall@10"] >= s["popularity_recall@10"]
    assert len(s["examples"]) == 5
    assert res["stopped"].startswith(("epochs exhausted", "converged at epoch"))
