"""Constrained decoding of the semantic-ID generator: whatever the weights, tries and
histories, every generated item exists, is unseen by the user and appears once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from directrec.data.dataset import Interactions
from directrec.data.split import leave_one_out
from directrec.evaluate.protocol import evaluate
from directrec.models import create, load_model
from directrec.models.semantic import CodeTrie, SemanticID
from directrec.text.semantic_ids import make_unique
from tests.models.settings import TEST_SETTINGS


def untrained(codes: np.ndarray, history: Interactions, beam: int, seed: int) -> SemanticID:
    m = SemanticID(SemanticID.Config(dim=16, heads=2, enc_layers=1, dec_layers=1, max_len=8,
                                     beam=beam, codebook=int(codes[:, :-1].max()) + 1,
                                     levels=codes.shape[1] - 1, seed=seed))  # fmt: skip
    torch.manual_seed(seed)
    m.n_items = history.n_items
    m.codes = torch.from_numpy(codes)
    m._build_index()
    m.net = m._build().eval()
    m.set_history(history)
    return m


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_items=st.integers(2, 40),
    codebook=st.integers(2, 6),
    levels=st.integers(1, 3),
    n_users=st.integers(1, 6),
    beam=st.integers(1, 12),
    seed=st.integers(0, 10_000),
)
def test_constrained_decoding_emits_only_real_unseen_items(
    n_items, codebook, levels, n_users, beam, seed
):
    rng = np.random.default_rng(seed)
    codes = make_unique(rng.integers(0, codebook, (n_items, levels)))
    user = np.repeat(np.arange(n_users), rng.integers(1, n_items + 1, n_users))
    item = np.concatenate(
        [rng.choice(n_items, (user == u).sum(), replace=False) for u in range(n_users)]
    )
    hist = Interactions(user, item, n_users=n_users, n_items=n_items)
    m = untrained(codes, hist, beam, seed)
    items, scores = m.generate(np.arange(n_users))
    for u in range(n_users):
        got = items[u][items[u] >= 0].numpy()
        seen = set(item[user == u])
        assert len(got) == min(beam, n_items - len(seen))
        assert len(set(got)) == len(got) and not seen & set(got)
        assert ((got >= 0) & (got < n_items)).all()
        assert torch.all(scores[u][: len(got)][:-1] >= scores[u][: len(got)][1:])


def test_trie_maps_every_code_to_its_item():
    codes = make_unique(np.array([[0, 1], [0, 1], [1, 0], [2, 2]]))
    trie = CodeTrie(codes, [3, 3, 2])
    for i, c in enumerate(codes):
        node = 0
        for j, tok in enumerate(c):
            node = int(trie.child[j][node, tok])
        assert node == i
    assert int(trie.child[0][0, 2]) >= 0 and int(trie.child[1][int(trie.child[0][0, 2]), 0]) == -1


def test_cold_items_get_codes_and_can_be_generated(planted_embedded):
    """Hold some items out of training entirely (TIGER's cold-start protocol): they still
    have codes, sit in the trie and can be written by the generator."""
    ds = planted_embedded
    cold = np.arange(0, ds.interactions.n_items, 10)  # every 10th item never seen in training
    fit, _, _ = leave_one_out(ds.interactions).stage("test")
    warm = fit.select(~np.isin(fit.item, cold))
    model = create("semantic-id", TEST_SETTINGS["semantic-id"]).fit(warm, ds.catalog)
    assert model.codes.shape[0] == ds.interactions.n_items
    items, _ = model.generate(np.arange(ds.interactions.n_users))
    assert np.isin(items.numpy(), cold).any()


def test_sampling_gives_other_lists_than_greedy_beam(planted_embedded):
    ds = planted_embedded
    fit, seen, targets = leave_one_out(ds.interactions).stage("test")
    model = create("semantic-id", TEST_SETTINGS["semantic-id"]).fit(fit, ds.catalog)
    greedy, _ = model.generate(np.arange(20))
    model.config = type(model.config)(
        **{**model.config.__dict__, "sample": True, "temperature": 2.0}
    )
    sampled, _ = model.generate(np.arange(20))
    assert not torch.equal(greedy[:, :10], sampled[:, :10])
    r = evaluate(model, seen, targets, (10,))
    assert r.metrics["hr@10"] > 0


@pytest.mark.parametrize("bad", [{"levels": 0}])
def test_invalid_config_rejected(bad, planted_embedded):
    with pytest.raises((ValueError, IndexError, RuntimeError)):
        create("semantic-id", {**TEST_SETTINGS["semantic-id"], **bad}).fit(
            planted_embedded.interactions, planted_embedded.catalog
        )


def test_new_items_become_generable_without_retraining(planted_embedded, tmp_path):
    """Items that arrive after training (text only) get codes from the trained RQ-VAE,
    join the trie and are written by the generator; save/load keeps them."""
    ds = planted_embedded
    n_old = ds.interactions.n_items - 10  # the last ten items arrive later
    data = ds.interactions.select(ds.interactions.item < n_old)
    data = Interactions(data.user, data.item, n_users=data.n_users, n_items=n_old)
    old_catalog = type(ds.catalog)(ds.catalog.titles[:n_old], ds.catalog.texts[:n_old],
                                   ds.catalog.categories[:n_old], ds.catalog.embeddings[:n_old])  # fmt: skip
    model = create("semantic-id", TEST_SETTINGS["semantic-id"]).fit(data, old_catalog)
    new = model.add_items(ds.catalog.embeddings[n_old:])
    assert new.tolist() == list(range(n_old, n_old + 10)) and model.n_items == n_old + 10
    assert len({tuple(c) for c in model.codes.tolist()}) == model.n_items  # still unique
    users = np.arange(ds.interactions.n_users)
    items, _ = model.recommend(users, k=20)
    assert np.isin(items, new).any()
    loaded = load_model(model.save(tmp_path / "m"))
    again, _ = loaded.recommend(users[:30], k=20)
    assert np.array_equal(again, items[:30])
