"""The statistics behind a benchmark's claims: the interval of a mean over seeds, the paired
test between two models over the same users, and which model leads each metric.

In top-N runs a seed moves a model's initialisation and sampling, not the split (leave-one-out
and temporal splits draw nothing), so every seed of every model is evaluated on the same
users; a paired test over users then compares two models on each user's value averaged over
that model's seeds. A rating run's random split is drawn per seed: no users to pair.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

ALPHA = 0.05  # two-sided significance level of the paired test
CONFIDENCE = 0.95  # of the interval over seeds
# The metrics a model wins by having more of (per-user accuracy) or less of (rating error).
# Coverage, novelty and diversity describe a list rather than rank models, so no one leads them.
HIGHER_IS_BETTER = ("hr", "ndcg", "recall", "mrr", "precision", "f1")
LOWER_IS_BETTER = ("rmse", "mae")


def ranks_models(metric: str) -> bool:
    """Whether the table names a best model for `metric` ('ndcg@10', 'rmse', ...)."""
    base = metric.split("@")[0]
    return base in HIGHER_IS_BETTER or base in LOWER_IS_BETTER


def mean_interval(values: list[float] | np.ndarray, confidence: float = CONFIDENCE) -> dict:
    """Mean of `values` (one per seed) and the half-width of its Student-t interval,
    t(1 − α/2, n − 1) · s / √n; with one value there is no interval (half_width None)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("an interval needs at least one value")
    out: dict[str, Any] = {"mean": float(v.mean()), "n": int(v.size), "half_width": None}
    if v.size > 1:
        sem = v.std(ddof=1) / np.sqrt(v.size)
        half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1) * sem)
        out.update(half_width=half, low=out["mean"] - half, high=out["mean"] + half)
    return out


def paired_test(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Two-sided paired t-test of per-user values `a` against `b` (same users, same order).
    Identical vectors differ in nothing: p = 1 (scipy would answer NaN)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"a paired test needs two vectors over the same users: {a.shape}, {b.shape}"
        )
    d = a - b
    out: dict[str, Any] = {"test": "paired t-test", "users": int(d.size)}
    out["difference"] = float(d.mean()) if d.size else 0.0
    if d.size < 2 or not np.any(d != d[0]):
        # no spread in the differences: all zero is no evidence; a constant non-zero shift
        # on every user is as strong as evidence gets
        same = d.size == 0 or d[0] == 0
        out.update(statistic=0.0 if same else float(np.sign(d[0]) * np.inf))
        out.update(p_value=1.0 if same or d.size < 2 else 0.0)
        return out
    res = stats.ttest_rel(a, b)
    out.update(statistic=float(res.statistic), p_value=float(res.pvalue))
    return out


def ranked(results: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The results that report `metric`, best first."""
    have = [r for r in results if "error" not in r and metric in r.get("metrics", {})]
    sign = 1.0 if metric.split("@")[0] in LOWER_IS_BETTER else -1.0
    return sorted(have, key=lambda r: sign * r["metrics"][metric])


def user_means(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-user values averaged over a model's seeds; each run is {'users': ids,
    metric: values}. Seeds share the split, so they must share the users."""
    users = np.asarray(runs[0]["users"])
    for r in runs[1:]:
        if not np.array_equal(np.asarray(r["users"]), users):
            raise ValueError("seeds evaluated different users; a paired test needs the same")
    keys = [k for k in runs[0] if k != "users" and all(k in r for r in runs)]
    return {"users": users, **{k: np.mean([r[k] for r in runs], axis=0) for k in keys}}


def compare_leaders(
    results: list[dict[str, Any]],
    per_user: dict[str, dict[str, Any]],
    metrics: list[str],
) -> list[dict[str, Any]]:
    """For each metric that ranks models: the best model, the runner-up, and whether the
    lead is significant by a paired test over the users both were evaluated on
    (`per_user`: model → user_means(...)). Without per-user values, no test is made."""
    out = []
    for metric in metrics:
        order = ranked(results, metric)
        if not ranks_models(metric) or len(order) < 2:
            continue
        best, second = order[0], order[1]
        row: dict[str, Any] = {
            "metric": metric,
            "best": best["model"],
            "runner_up": second["model"],
            "best_value": best["metrics"][metric],
            "runner_up_value": second["metrics"][metric],
        }
        a, b = per_user.get(best["model"], {}), per_user.get(second["model"], {})
        if metric in a and metric in b:
            _, ia, ib = np.intersect1d(a["users"], b["users"], return_indices=True)
            test = paired_test(a[metric][ia], b[metric][ib])
            tied = best["metrics"][metric] == second["metrics"][metric]
            row.update(test)
            row["significant"] = bool(not tied and test["p_value"] < ALPHA)
        out.append(row)
    return out
