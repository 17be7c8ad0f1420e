"""Explanations are computed from the model: for a linear model they equal the weights a
hand computation gives; for the generator, removing the cited item lowers the rank."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from directrec.data.histories import Histories
from directrec.data.split import leave_one_out
from directrec.generate.explain import category_shares, explain, sentence, specific
from directrec.generate.pipeline import ItemInfo, ListOptions, recommend
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
    checked = groups = 0
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
            if not ok.any():  # no single item: the group of its category, or nothing
                if r.group:  # removing the group together costs exactly the places claimed
                    s = full - w[np.unique(r.evidence)].sum(0)
                    lost = (s[unseen] > s[r.item]).sum() - (full[unseen] > full[r.item]).sum()
                    assert r.influence == [lost] and lost > 0
                    assert set(r.evidence) == {h for h in hist if r.group in cats[h]}
                    groups += 1
                else:
                    assert r.evidence == [] and r.text.startswith("Fits your history")
                continue
            j = list(hist).index(r.evidence[0])
            assert loss[j, n] > 0 and r.influence[0] == loss[j, n]
            assert specific[j, n] >= specific[ok, n].max() - 1e-4
            assert all(x > 0 for x in r.influence)  # never evidence without influence
            assert r.text.startswith("Because you liked " + planted.catalog.titles[r.evidence[0]])
            common = set(cats[r.item]).intersection(*(set(cats[e]) for e in r.evidence))
            first = set(cats[r.item]) & set(cats[r.evidence[0]])
            assert r.shared == (sorted(common)[:1] or sorted(first)[:1])
            checked += 1
    assert checked >= 10 and groups >= 1


def test_removing_cited_item_lowers_the_generators_rank(fit_data, planted):
    """Recomputed independently: whenever a reason says its evidence costs places, removing
    it (a group reason: its whole group) does lower the rank; and the item's probability falls in most cases (an item far
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
            removed = r.evidence if r.group else r.evidence[:1]  # a group goes together
            r1, p1 = rank_and_logp(hist[~np.isin(hist, removed)])
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
    titles = ["Alien", "Aliens", "Heat", "Alien", "Solaris"]
    assert sentence(2, [0], ["Sci-Fi"], titles) == "Because you liked Alien; both are Sci-Fi."
    assert sentence(2, [0, 1], [], titles) == "Because you liked Alien and Aliens."
    assert "no single item" in sentence(2, [], [], titles)
    # two items with one title are named once
    assert sentence(2, [0, 3], ["Sci-Fi"], titles) == "Because you liked Alien; both are Sci-Fi."
    # only the first evidence shares the category
    assert (
        sentence(2, [0, 1], ["Sci-Fi"], titles, everyone=False)
        == "Because you liked Alien and Aliens; like the first, it is Sci-Fi."
    )
    # items a sentence brought up are matches to it, not things the user liked
    q = "slow space films"
    assert (
        sentence(2, [4], ["Sci-Fi"], titles, query=q, matched={4})
        == 'Matches "slow space films", as Solaris does; both are Sci-Fi.'
    )
    assert (
        sentence(2, [0, 4], [], titles, query=q, matched={4})
        == 'Because you liked Alien, and matches "slow space films" as Solaris does.'
    )
    assert sentence(2, [], [], titles, query=q).startswith('Matches "slow space films" as a whole')
    # a group of history items removed together
    assert (
        sentence(2, [0, 1, 4], ["Sci-Fi"], titles, group="Sci-Fi")
        == "Because you liked 3 Sci-Fi items, among them Alien and Aliens."
    )
    assert (
        sentence(2, [0, 1, 4], ["Sci-Fi"], titles, group="Sci-Fi", query=q, matched={0, 1, 4})
        == 'Matches "slow space films" like the 3 Sci-Fi items it brings up, among them Alien '
        "and Aliens."
    )


def test_specific_categories_leave_out_the_broad_ones():
    cats = [["Root", "Half", "A"], ["Root", "Half", "A"], ["Root", "B"], ["Root", "B", "Half"]]
    shares = category_shares(cats)
    assert shares == {"Root": 1.0, "Half": 0.75, "A": 0.5, "B": 0.5}
    assert specific({"Root", "Half", "A"}, shares) == ["A"]  # at most half the catalogue
    assert specific({"Root"}, shares) == []


@pytest.fixture(scope="module")
def like_a_shop(planted):
    """The planted catalogue dressed like a real shop: a root category on every item, a
    department per half of the clusters, a specific category per cluster, and one title
    per cluster (brand and category, as anonymised catalogues name items)."""
    clusters = [i // 20 for i in range(planted.interactions.n_items)]
    cats = [["Beauty", f"Dept {c // 3}", f"Line {c}"] for c in clusters]
    titles = [f"Brand {c} Category 2" for c in clusters]
    return titles, cats


def test_reasons_cite_the_most_specific_category_and_each_title_once(fit_data, like_a_shop):
    titles, cats = like_a_shop
    shares = category_shares(cats)
    model = create("ease", TEST_SETTINGS["ease"]).fit(fit_data)
    cited = 0
    for user in range(0, 60, 3):
        hist = fit_data.item[fit_data.user == user]
        one = Histories.from_lists([hist], model.n_items)
        recs = recommend(model, one, ListOptions(k=5))[0].items
        for r in explain(model, one, recs, titles, cats, window=len(hist)):
            assert "Beauty" not in r.text  # carried by the whole catalogue: never cited
            named = [titles[e] for e in r.evidence]
            assert all(r.text.count(t) <= 1 for t in set(named)), r.text  # named once
            if r.shared:
                common = set(cats[r.item]).intersection(*(set(cats[e]) for e in r.evidence))
                first = set(cats[r.item]) & set(cats[r.evidence[0]])
                assert r.shared == (specific(common, shares) or specific(first, shares))[:1]
                cited += r.shared[0].startswith("Line")
            if r.evidence and not r.group:  # every cited item named, no two with one title
                assert len(set(named)) == len(r.evidence)
                assert all(t in r.text for t in named)
            if r.group and len(set(named)) > 1:  # a group names two of its titles
                assert sum(t in r.text for t in set(named)) == 2
    assert cited >= 20  # the cluster's own line, not its department


def test_a_sentence_request_reads_as_matches_to_the_sentence(fit_data, planted):
    """A new user's sentence became five of its nearest items (never seen by the user):
    reasons cite them as matches to the sentence; items the user named read as liked."""
    model = create("ease", TEST_SETTINGS["ease"]).fit(fit_data)
    titles, cats = planted.catalog.titles, planted.catalog.categories
    pseudo = np.array([80, 83, 86, 89, 92])  # cluster 4
    q = "haunted houses, ghosts and zombies"
    opts = ListOptions(k=5, exclude_seen=False, explain=True, query=q, query_items=len(pseudo))
    one = Histories.from_lists([pseudo], model.n_items)
    (rec,) = recommend(model, one, opts, info=ItemInfo(titles, cats))
    assert rec.reasons is not None and len(rec.reasons) == 5
    assert all(r.text.startswith(f'Matches "{q}"') for r in rec.reasons), rec.reasons
    assert not any("you liked" in r.text for r in rec.reasons)
    assert any(r.evidence for r in rec.reasons)
    # a pseudo item may itself be listed (the user never saw it): its rank is measured
    liked = np.array([0, 1, 2])  # cluster 0, named by the user
    one = Histories.from_lists([np.concatenate([pseudo, liked])], model.n_items)
    opts = ListOptions(k=10, exclude_seen=False, explain=True, query=q, query_items=len(pseudo))
    (rec,) = recommend(model, one, opts, info=ItemInfo(titles, cats))
    for r in rec.reasons or []:
        mine = [e for e in r.evidence if e in liked]
        assert r.text.startswith("Because you liked") == bool(mine), r.text
        if any(e in pseudo for e in r.evidence) or not r.evidence:
            assert f'"{q}"' in r.text, r.text
