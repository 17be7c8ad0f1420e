"""Explanations are computed from the model: for a linear model they equal the weights a
hand computation gives; for the generator, removing the cited item lowers the rank."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from directrec.data.histories import Histories
from directrec.data.split import leave_one_out
from directrec.generate.explain import explain, sentence
from directrec.generate.pipeline import ListOptions, recommend
from directrec.models import create
from tests.models.settings import TEST_SETTINGS


@pytest.fixture(scope="module")
def fit_data(planted):
    return leave_one_out(planted.interactions).stage("test")[0]


def test_ease_influence_matches_a_hand_computation(fit_data, planted):
    """EASE scores are history @ B, so removing item j subtracts row j of B: the rank an
    item loses, and how specifically its log-probability drops (beyond the list's mean
    drop), can be computed directly from the weights."""
    model = create("ease", TEST_SETTINGS["ease"]).fit(fit_data)
    cats = planted.catalog.categories
    w = model.weights.numpy().astype(np.float64)
    checked = 0
    for user in range(0, 40, 4):
        hist = fit_data.item[fit_data.user == user]
        one = Histories.from_lists([hist], model.n_items)
        recs = recommend(model, one, ListOptions(k=5))[0].items
        reasons = explain(model, one, recs, planted.catalog.titles, cats, cite=2, window=len(hist))
        unseen = np.setdiff1d(np.arange(w.shape[0]), hist)
        full = w[np.unique(hist)].sum(0)

        def logp(s: np.ndarray, unseen=unseen) -> np.ndarray:
            x = s[unseen]
            return s - (x.max() + np.log(np.exp(x - x.max()).sum()))

        lp0 = logp(full)
        loss = np.array(
            [
                [int((s[unseen] > s[i]).sum() - (full[unseen] > full[i]).sum()) for i in recs]
                for s in (full - w[j] for j in hist)
            ]
        )
        drop = np.array([lp0[recs] - logp(full - w[j])[recs] for j in hist])
        specific = drop - drop.mean(axis=1, keepdims=True)
        for n, r in enumerate(reasons):
            ok = loss[:, n] > 0
            if not ok.any():  # nothing measurably supports it: nothing is cited
                assert r.evidence == [] and r.text.startswith("Fits your history")
                continue
            j = list(hist).index(r.evidence[0])
            assert loss[j, n] > 0 and r.influence[0] == loss[j, n]
            assert specific[j, n] >= specific[ok, n].max() - 1e-4
            assert all(x > 0 for x in r.influence)  # never evidence without influence
            assert r.text.startswith("Because you liked " + planted.catalog.titles[r.evidence[0]])
            shared = set(cats[r.item]).intersection(*(set(cats[e]) for e in r.evidence))
            assert r.shared == sorted(shared)
            checked += 1
    assert checked >= 10


def test_removing_cited_item_lowers_the_generators_rank(fit_data, planted):
    """Recomputed independently: whenever a reason says its evidence costs places, removing
    it does lower the rank; and the item's probability falls in most cases (an item far
    ahead keeps its place without any single history item, so rank alone cannot show it)."""
    model = create("sasrec-ce", TEST_SETTINGS["sasrec-ce"]).fit(fit_data)
    cases = lowered = prob_lowered = claimed = claimed_ok = 0
    for u in range(0, 60, 3):
        hist = fit_data.item[fit_data.user == u]
        unseen = np.setdiff1d(np.arange(model.n_items), hist)
        one = Histories.from_lists([hist], model.n_items)
        recs = recommend(model, one, ListOptions(k=5))[0].items
        for r in explain(model, one, recs, planted.catalog.titles, planted.catalog.categories):
            if not r.evidence:
                continue
            at = int(np.searchsorted(unseen, r.item))

            def rank_and_logp(h, r=r, at=at, unseen=unseen):
                s = model.score(Histories.from_lists([h], model.n_items))[0]
                logp = float(torch.log_softmax(s[unseen], 0)[at])
                s = s[unseen]
                return int((s > s[at]).sum()), logp

            r0, p0 = rank_and_logp(hist)
            r1, p1 = rank_and_logp(hist[hist != r.evidence[0]])
            cases += 1
            lowered += r1 > r0
            prob_lowered += p1 < p0
            if r.influence[0] > 0:
                claimed += 1
                claimed_ok += r1 - r0 == r.influence[0]
    assert cases >= 50 and claimed >= 20
    assert claimed_ok == claimed  # the rank loss a reason reports is the real one
    assert lowered == claimed  # rank lowers exactly where the reason says it does
    assert prob_lowered / cases >= 0.8, (prob_lowered, cases)


def test_sentences():
    titles = ["Alien", "Aliens", "Heat"]
    assert sentence(2, [0], ["Sci-Fi"], titles) == "Because you liked Alien; both are Sci-Fi."
    assert sentence(2, [0, 1], [], titles) == "Because you liked Alien and Aliens."
    assert "no single item" in sentence(2, [], [], titles)
