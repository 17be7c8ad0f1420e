"""The interval over seeds and the paired test over users, against values worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from directrec.evaluate.stats import (
    compare_leaders,
    mean_interval,
    paired_test,
    ranks_models,
    user_means,
)


def test_interval_over_seeds_is_student_t():
    # mean 0.2, s = 0.1, s/√3 = 0.057735; t(0.975, 2) = 4.3027 (tables): 0.2484
    iv = mean_interval([0.1, 0.2, 0.3])
    assert iv["n"] == 3 and iv["mean"] == pytest.approx(0.2)
    assert iv["half_width"] == pytest.approx(4.3027 * 0.1 / math.sqrt(3), abs=1e-4)
    assert (iv["low"], iv["high"]) == pytest.approx((0.2 - 0.24841, 0.2 + 0.24841), abs=1e-4)
    # two seeds: s = √2, s/√2 = 1; t(0.975, 1) = 12.706
    assert mean_interval([1.0, 3.0])["half_width"] == pytest.approx(12.706, abs=1e-3)
    # one seed: a mean, no interval
    assert mean_interval([0.5]) == {"mean": 0.5, "n": 1, "half_width": None}
    with pytest.raises(ValueError):
        mean_interval([])


def test_paired_t_test_by_hand():
    # differences 1, 3: mean 2, s = √2, s/√2 = 1, t = 2 on 1 df; p = 1 − (2/π)·atan(2)
    res = paired_test(np.array([1.0, 3.0]), np.array([0.0, 0.0]))
    assert res["statistic"] == pytest.approx(2.0)
    assert res["p_value"] == pytest.approx(1 - 2 / math.pi * math.atan(2))  # 0.2952
    assert res["difference"] == pytest.approx(2.0) and res["users"] == 2
    # differences 1..4: mean 2.5, s = √(5/3), t = 2.5 / (s/2) = √15 = 3.873 on 3 df;
    # p = 1 − (2/π)·(atan(t/√3) + (t/√3)/(1 + t²/3)) with t/√3 = √5
    res = paired_test(np.array([1.0, 2.0, 3.0, 4.0]), np.zeros(4))
    assert res["statistic"] == pytest.approx(math.sqrt(15))
    p = 1 - 2 / math.pi * (math.atan(math.sqrt(5)) + math.sqrt(5) / 6)
    assert res["p_value"] == pytest.approx(p)  # 0.0305: significant at 0.05
    # the order of the pair only flips the sign
    flip = paired_test(np.zeros(4), np.array([1.0, 2.0, 3.0, 4.0]))
    assert flip["statistic"] == pytest.approx(-math.sqrt(15)) and flip["p_value"] == res["p_value"]


def test_paired_test_edge_cases():
    same = paired_test(np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0, 1.0]))
    assert same["p_value"] == 1.0 and same["difference"] == 0.0
    shift = paired_test(np.array([0.5, 1.5, 2.5]), np.array([0.0, 1.0, 2.0]))
    assert shift["p_value"] == 0.0 and shift["statistic"] == math.inf
    with pytest.raises(ValueError, match="same users"):
        paired_test(np.zeros(3), np.zeros(4))


def test_user_means_average_seeds_and_refuse_other_users():
    runs = [
        {"users": np.array([3, 5]), "ndcg@10": np.array([1.0, 0.0])},
        {"users": np.array([3, 5]), "ndcg@10": np.array([0.0, 0.0])},
    ]
    got = user_means(runs)
    assert got["ndcg@10"].tolist() == [0.5, 0.0] and got["users"].tolist() == [3, 5]
    runs[1]["users"] = np.array([3, 6])
    with pytest.raises(ValueError, match="different users"):
        user_means(runs)


def row(model: str, **metrics: float) -> dict:
    return {"model": model, "metrics": metrics}


def test_the_leader_is_tested_against_the_runner_up_only():
    users = np.arange(4)
    results = [row("pop", **{"ndcg@10": 0.0}), row("a", **{"ndcg@10": 2.5, "coverage@10": 0.1})]
    results += [row("b", **{"ndcg@10": 0.5, "coverage@10": 0.9}), {"model": "c", "error": "x"}]
    per_user = {
        "a": {"users": users, "ndcg@10": np.array([1.0, 2.0, 3.0, 4.0])},
        "b": {"users": users, "ndcg@10": np.array([0.0, 0.0, 0.0, 2.0])},
        "pop": {"users": users, "ndcg@10": np.zeros(4)},
    }
    (lead,) = compare_leaders(results, per_user, ["ndcg@10", "coverage@10"])
    # a − b = 1, 2, 3, 2: mean 2, s = √(2/3), t = 2 / (s/2) = 4.899 on 3 df
    assert (lead["best"], lead["runner_up"]) == ("a", "b")
    assert lead["statistic"] == pytest.approx(2 / (math.sqrt(2 / 3) / 2))
    assert lead["p_value"] < 0.05 and lead["significant"]
    # users are paired by id, not by position
    per_user["b"] = {"users": users[::-1], "ndcg@10": np.array([2.0, 0.0, 0.0, 0.0])}
    assert compare_leaders(results, per_user, ["ndcg@10"])[0]["statistic"] == lead["statistic"]
    # no per-user values (a rating run): the leader is named, nothing is tested
    (rmse,) = compare_leaders([row("x", rmse=0.9), row("y", rmse=0.8)], {}, ["rmse"])
    assert rmse["best"] == "y" and "p_value" not in rmse and "significant" not in rmse
    assert ranks_models("mrr@5") and not ranks_models("novelty@10")
