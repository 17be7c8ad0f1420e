"""The diversify stage: MMR with a weight chosen on validation cases, applied by every
caller through the pipeline (lists, evaluation) unless a request names its own weight."""

from __future__ import annotations

import numpy as np
import pytest

from directrec.data.histories import Histories
from directrec.data.split import leave_one_out
from directrec.evaluate.protocol import evaluate
from directrec.generate.fitting import StagePlan, fit_diversify
from directrec.generate.pipeline import ItemInfo, ListOptions, ranked, recommend
from directrec.generate.rerank import mmr, normalised
from directrec.generate.stages import Diversify, Stages
from directrec.models import create


@pytest.fixture(scope="module")
def ease(planted_embedded):
    ds = planted_embedded
    fit, _, _ = leave_one_out(ds.interactions).stage("test")
    return create("ease", {"l2": 50.0}).fit(fit, ds.catalog), ds


def cases(ds):
    before, _, targets = leave_one_out(ds.interactions).stage("valid")
    has = np.diff(targets.indptr) > 0
    return Histories.from_interactions(before, targets.users[has]), targets.items[
        targets.indptr[:-1]
    ][has]


@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_the_fit_keeps_the_share_of_ndcg_it_promises_with_the_largest_weight(ease, keep):
    model, ds = ease
    hist, target = cases(ds)
    stage, table = fit_diversify(model, hist, target, ds.catalog.embeddings, keep=keep)
    base = table["ndcg_model_order"]
    assert base > 0.1  # the planted clusters are learnable
    assert table["ndcg_chosen"] >= keep * base - 1e-12
    assert stage.weight == table["weight"]
    larger = [p for p in table["sweep"] if p["diversity"] > stage.weight]
    assert all(p["ndcg@10"] < keep * base for p in larger)  # nothing larger kept enough
    if keep == 0.5:  # a loose promise buys diversity: the weight and the ILD rise
        assert stage.weight > 0 and table["ild_chosen"] > table["ild_model_order"]
    with pytest.raises(ValueError, match="keep must be in"):
        fit_diversify(model, hist, target, ds.catalog.embeddings, keep=0.0)


def test_lists_take_the_fitted_weight_unless_the_request_names_one(ease):
    model, ds = ease
    hist, _ = cases(ds)
    h = hist.take(np.arange(20))
    info = ItemInfo([""] * model.n_items, [[]] * model.n_items, normalised(ds.catalog.embeddings))
    stages = Stages(diversify=Diversify(weight=0.7, pool_factor=4))
    fitted = recommend(model, h, ListOptions(k=10), info=info, stages=stages)
    asked = recommend(
        model, h, ListOptions(k=10, diversity=0.7, pool_factor=4), info=info, stages=stages
    )
    plain = recommend(model, h, ListOptions(k=10, diversity=0.0), info=info, stages=stages)
    unstaged = recommend(model, h, ListOptions(k=10), info=info)
    assert [r.items.tolist() for r in fitted] == [r.items.tolist() for r in asked]
    assert [r.items.tolist() for r in plain] == [r.items.tolist() for r in unstaged]
    assert [r.items.tolist() for r in fitted] != [r.items.tolist() for r in plain]
    with pytest.raises(ValueError, match="text embeddings"):
        recommend(model, h, ListOptions(k=10), stages=stages)


def test_evaluation_ranks_the_lists_the_pipeline_builds(ease):
    model, ds = ease
    split = leave_one_out(ds.interactions)
    inputs, _, targets = split.stage("test")
    vectors = ds.catalog.embeddings
    stages = Stages(diversify=Diversify(weight=0.8, pool_factor=5))
    plain = evaluate(model, inputs, targets, (10,), item_features=vectors)
    diverse = evaluate(
        model, inputs, targets, (10,), item_features=vectors, stages=stages, item_vectors=vectors
    )
    assert diverse.metrics["diversity@10"] > plain.metrics["diversity@10"]
    # the evaluated top-10 is exactly the MMR list recommend() builds
    users = targets.users[:5]
    h = Histories.from_interactions(inputs, users)
    top = ranked(model, h, 50)
    info = ItemInfo([""] * model.n_items, [[]] * model.n_items, normalised(vectors))
    lists = recommend(model, h, ListOptions(k=10), info=info, stages=stages)
    reranked = stages.rerank(ranked(model, h, 50), vectors, 10)  # what evaluate() ranks in
    for r in range(len(users)):
        want, _ = mmr(top.items[r].numpy(), top.scores[r].numpy(), normalised(vectors), 10, 0.8)
        assert lists[r].items.tolist() == want.tolist()
        assert reranked.items[r, :10].tolist() == want.tolist()
        rest = [i for i in top.items[r].tolist() if i not in want]
        assert reranked.items[r, 10:].tolist() == rest  # the rest keep the model's order
    with pytest.raises(ValueError, match="text embeddings"):
        evaluate(model, inputs, targets, (10,), stages=stages)


def test_the_plan_fits_it_on_validation_cases_and_records_the_sweep(ease):
    model, ds = ease
    plan = StagePlan.from_spec({"diversify": {"users": 100, "keep": 0.6}})
    logged = []
    stages = plan.fit(model, ds.interactions, ds.catalog, "loo", log=logged.append)
    assert stages.diversify is not None and stages.fitted() == ["diversify"]
    fit = stages.fits["diversify"]
    assert fit["cases"] == 100 and len(fit["sweep"]) == 10
    assert any("diversify: MMR weight" in line for line in logged)
    with pytest.raises(ValueError, match="no parameter 'kept'"):
        StagePlan.from_spec({"diversify": {"kept": 0.9}})
