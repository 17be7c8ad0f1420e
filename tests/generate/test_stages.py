"""The contract every fitted stage keeps: it is typed, refuses bad values, round-trips
through the model directory with the model (stages.json, inside the atomic save), and
the lists built through the reloaded pipeline equal the ones built before saving."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from directrec.data.histories import Histories
from directrec.generate.pipeline import ItemInfo, ListOptions, ranked, recommend
from directrec.generate.rerank import normalised
from directrec.generate.stages import (
    STAGES_FILE,
    ColdGate,
    Diversify,
    PriorBlend,
    QueryBlend,
    Stages,
    load_pipeline,
)
from directrec.models import create
from tests.models.settings import TEST_SETTINGS

EXAMPLES = {
    "prior_blend": Stages(prior_blend=PriorBlend((1, 2, 5), (0.6, 0.3, 0.1))),
    "query_blend": Stages(query_blend=QueryBlend(alpha=0.5, t=10.0, w=0.5)),
    "cold_gate": Stages(
        cold_gate=ColdGate(mode="score", view="latent", mix=0.5, slots=2, scale=5.0, bias=-3.0)
    ),
    "diversify": Stages(diversify=Diversify(weight=0.6, pool_factor=3)),
    "all": Stages(
        prior_blend=PriorBlend((1, 3), (0.5, 0.2)),
        query_blend=QueryBlend(alpha=1.0, t=0.0),
        cold_gate=ColdGate(mode="place", view="text", mix=0.0, slots=1, threshold=0.2, rank=3),
        diversify=Diversify(weight=0.3),
    ),
}


def info_of(ds) -> ItemInfo:
    n = ds.interactions.n_items
    return ItemInfo(
        [""] * n, [[] for _ in range(n)], normalised(ds.catalog.embeddings).astype(np.float32)
    )


@pytest.fixture(scope="module")
def semantic(planted_embedded):
    """A small semantic-ID model with cold items (two per topic never trained on)."""
    ds = planted_embedded
    cold = np.flatnonzero(np.array([int(i[1:]) % 20 < 2 for i in ds.items.ids]))
    data = ds.interactions.select(~np.isin(ds.interactions.item, cold))
    settings = TEST_SETTINGS["semantic-id"] | {"epochs": 5}
    return create("semantic-id", settings).fit(data, ds.catalog), data


@pytest.fixture(scope="module")
def sequential(planted_embedded):
    """The ID head: every stage but the cold gate (it has no cold items) applies to it."""
    data = planted_embedded.interactions
    settings = TEST_SETTINGS["sasrec-ce"] | {"epochs": 3}
    return create("sasrec-ce", settings).fit(data, planted_embedded.catalog), data


ROUND_TRIPS = [("semantic", name) for name in EXAMPLES] + [
    ("sequential", name) for name in EXAMPLES if name != "cold_gate"
]


@pytest.mark.parametrize(("fitted", "name"), ROUND_TRIPS)
def test_every_stage_round_trips_with_the_model(fitted, name, planted_embedded, tmp_path, request):
    model, data = request.getfixturevalue(fitted)
    stages = EXAMPLES[name]
    path = model.save(tmp_path / "m", extra=stages.files())
    loaded, again = load_pipeline(path)
    assert again == stages and again.fitted() == stages.fitted()
    h = Histories.from_lists(
        [np.array(s[:n]) for s, n in zip(data.sequences()[:6], (1, 2, 3, 5, 8, 0), strict=True)],
        model.n_items,
    )
    sims = planted_embedded.catalog.embeddings @ planted_embedded.catalog.embeddings[7]
    opts = [ListOptions(k=10)] * 5 + [ListOptions(k=10, query_sims=sims.astype(np.float32))]
    info = info_of(planted_embedded)
    before = recommend(model, h, opts, stages=stages, info=info)
    after = recommend(loaded, h, opts, stages=again, info=info)
    for a, b in zip(before, after, strict=True):
        assert a.items.tolist() == b.items.tolist()
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    if stages.diversify is not None:  # the re-ranking changes some list of these rows
        plain = recommend(model, h, opts, info=info)
        assert any(a.items.tolist() != b.items.tolist() for a, b in zip(plain, before, strict=True))
    elif stages.fitted():  # a fitted stage changes some scores of these rows
        plain = ranked(model, h, 10, query_sims=[o.query_sims for o in opts])
        piped = ranked(model, h, 10, query_sims=[o.query_sims for o in opts], stages=stages)
        assert not torch.equal(plain.scores, piped.scores)


def test_a_model_without_stages_writes_no_file_and_loads_none(semantic, tmp_path):
    model, _ = semantic
    path = model.save(tmp_path / "m", extra=Stages().files())
    assert not (path / STAGES_FILE).exists()
    assert load_pipeline(path)[1] == Stages()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"stages": {"id_blend": {"w": 1}}}, "unknown stage 'id_blend'"),
        ({"stages": {"prior_blend": {"lengths": [1], "alpha": [0.5], "x": 1}}}, "takes fields"),
        ({"stages": {"prior_blend": {"lengths": [2, 1], "alpha": [0.1, 0.2]}}}, "increasing"),
        ({"stages": {"query_blend": {"alpha": 2.0, "t": 1.0}}}, "alpha and w in"),
        ({"stages": {"cold_gate": {"mode": "x", "view": "text", "mix": 0, "slots": 1}}}, "mode"),
        ({"stages": {"diversify": {"weight": 1.5}}}, "weight must lie in"),
        ([1, 2], "expected an object"),
    ],
)
def test_a_bad_stages_file_is_refused_naming_it(doc, message, semantic, tmp_path):
    model, _ = semantic
    path = model.save(tmp_path / "m")
    (path / STAGES_FILE).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=message) as e:
        load_pipeline(path)
    assert STAGES_FILE in str(e.value)


def test_a_model_saved_before_stages_json_keeps_its_learned_stages(semantic, tmp_path):
    """Older artefacts kept the stages (and the ID weight) in their meta: they load into
    the same types, so a model builds the lists it built before."""
    model, _ = semantic
    path = model.save(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["meta"] |= {
        "prior_blend": {"lengths": [1, 2], "alpha": [0.5, 0.25]},
        "query_blend": {"alpha": 0.5, "t": 10.0},
        "cold_gate": {
            "mode": "score",
            "view": "text",
            "mix": 0.0,
            "head": 0.0,
            "scale": 2.0,
            "bias": -4.0,
            "slots": 2,
        },
        "id_blend": 4.0,
    }
    (path / "config.json").write_text(json.dumps(config))
    loaded, stages = load_pipeline(path)
    assert stages.prior_blend == PriorBlend((1, 2), (0.5, 0.25))
    assert stages.query_blend == QueryBlend(alpha=0.5, t=10.0, w=0.0)
    assert stages.cold_gate == ColdGate("score", "text", 0.0, 2, scale=2.0, bias=-4.0)
    assert loaded.config.id_weight == 4.0


def test_a_generators_lists_build_no_row_over_the_catalogue(semantic, monkeypatch):
    """Without a stage that changes scores, a generator's lists come from what its beam
    wrote: no dense score row is built (the cold gate, which needs one, is not fitted)."""
    from directrec.models.candidates import Candidates

    model, data = semantic
    h = Histories.from_interactions(data, np.arange(6))
    want = recommend(model, h, ListOptions(k=5), exclude=[np.array([0, 1])] * 6)

    def dense(*args, **kwargs):
        raise AssertionError("a row over the whole catalogue was built")

    monkeypatch.setattr(Candidates, "dense", dense)
    monkeypatch.setattr(type(model), "score", dense)
    got = recommend(model, h, ListOptions(k=5), exclude=[np.array([0, 1])] * 6)
    for a, b in zip(want, got, strict=True):
        assert len(b.items) == 5 and not {0, 1} & set(b.items.tolist())
        assert a.items.tolist() == b.items.tolist()
