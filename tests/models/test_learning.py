"""Every model learns: on planted-signal data it beats popularity by a clear margin.

Top-N models are compared with MostPopular on leave-one-out HR@10; rating models are
compared with the global-mean predictor on RMSE (their task)."""

from __future__ import annotations

import numpy as np
import pytest

from directrec.data.split import leave_one_out
from directrec.evaluate.benchmark import rating_split
from directrec.evaluate.protocol import evaluate
from directrec.models import MODELS, RATING_MODELS, create
from tests.models.settings import TEST_SETTINGS

TOPN = sorted(set(MODELS) - set(RATING_MODELS) - {"pop"})


@pytest.fixture(scope="module")
def stage(planted_embedded):
    return leave_one_out(planted_embedded.interactions).stage("test")


@pytest.fixture(scope="module")
def pop_hr(stage):
    fit, seen, targets = stage
    return evaluate(create("pop").fit(fit), fit, targets, (10,), seen=seen).metrics["hr@10"]


@pytest.mark.parametrize("name", TOPN)
def test_topn_model_beats_popularity(name, stage, pop_hr, planted_embedded):
    fit, seen, targets = stage
    model = create(name, TEST_SETTINGS[name]).fit(fit, planted_embedded.catalog)
    hr = evaluate(model, fit, targets, (10,), seen=seen).metrics["hr@10"]
    assert hr >= max(2 * pop_hr, pop_hr + 0.2), f"{name}: HR@10 {hr:.3f} vs popularity {pop_hr:.3f}"


@pytest.mark.parametrize(
    "variant",
    [
        {"arch": "causal"},
        {"arch": "causal", "item_embedding": True},
        {"arch": "causal", "item_embedding": True, "id_loss": 1.0},
        {"codes_from": "interactions", "svd_dim": 16},
    ],
    ids=str,
)
def test_semantic_variants_also_learn(variant, stage, pop_hr, planted_embedded):
    """The decoder-only (causal) variant of the semantic-ID head (the default is encdec),
    alone, with the ID + semantic item embedding on its input, and with the ID head on its
    output (the beam rescored by it); and codes quantised from
    collaborative vectors (truncated SVD of the training interactions) instead of text."""
    fit, seen, targets = stage
    settings = {**TEST_SETTINGS["semantic-id"], **variant}
    model = create("semantic-id", settings).fit(fit, planted_embedded.catalog)
    hr = evaluate(model, fit, targets, (10,), seen=seen).metrics["hr@10"]
    assert hr >= max(2 * pop_hr, pop_hr + 0.2), f"{variant}: HR@10 {hr:.3f} vs pop {pop_hr:.3f}"


@pytest.mark.parametrize("name", sorted(RATING_MODELS))
def test_rating_model_beats_global_mean(name, planted):
    train_mask, test_mask = rating_split(planted.interactions, "random", seed=0, test=0.2)
    train = planted.interactions.select(train_mask)
    test = planted.interactions.select(test_mask)
    model = create(name, TEST_SETTINGS[name]).fit(train)
    rmse = np.sqrt(((model.predict(test.user, test.item) - test.rating) ** 2).mean())
    base = np.sqrt(((train.rating.mean() - test.rating) ** 2).mean())
    assert rmse < 0.8 * base, f"{name}: RMSE {rmse:.3f} vs global mean {base:.3f}"
