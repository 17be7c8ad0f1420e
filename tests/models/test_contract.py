"""The contract every model keeps (after LensKit's): save/load gives identical
recommendations, unknown users and empty histories are handled, k larger than the
catalogue is fine, seen items are excluded."""

from __future__ import annotations

import numpy as np
import pytest

from directrec.data.split import leave_one_out
from directrec.models import MODELS, create, load_model
from tests.models.settings import TEST_SETTINGS


@pytest.fixture(scope="module")
def fitted(planted_embedded):
    ds = planted_embedded
    fit, _, _ = leave_one_out(ds.interactions).stage("test")
    # Give one indexed user an empty history: drop all of user 0's rows.
    fit = fit.select(fit.user != 0)
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = create(name, TEST_SETTINGS[name]).fit(fit, ds.catalog)
        return cache[name]

    return get


def test_every_model_is_covered():
    assert set(TEST_SETTINGS) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_load_round_trip(name, fitted, tmp_path):
    model = fitted(name)
    model.meta = {"user_ids": ["x"], "note": "kept"}
    users = np.arange(1, 30)
    items, scores = model.recommend(users, k=10)
    path = model.save(tmp_path / name)
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "ids.json",
        "weights.safetensors",
    ]
    loaded = load_model(path)
    assert type(loaded) is type(model) and loaded.meta["note"] == "kept"
    items2, scores2 = loaded.recommend(users, k=10)
    assert np.array_equal(items, items2)
    np.testing.assert_allclose(scores, scores2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_unknown_and_empty_history_users_get_popularity(name, fitted):
    model = fitted(name)
    items, _ = model.recommend([-1, 0, 10**9], k=5)
    pop_order = np.argsort(-model.popularity, kind="stable")[:5]
    for row in items:
        assert set(row) == set(pop_order)
    assert model.fallback_users(np.array([-1, 0, 5])).tolist() == [True, True, False]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_k_larger_than_catalogue_and_seen_excluded(name, fitted):
    model = fitted(name)
    n = model.n_items
    items, scores = model.recommend([5], k=n + 10)
    seen = set(model.seen[5].indices)
    real = items[0][items[0] >= 0]
    assert len(real) == n - len(seen) and not seen & set(real)
    assert (items[0][len(real) :] == -1).all() and np.isneginf(scores[0][len(real) :]).all()
    assert np.all(np.diff(scores[0][: len(real)]) <= 1e-6)  # best first
    with pytest.raises(ValueError):
        model.recommend([5], k=0)


def test_load_rejects_foreign_or_broken_directories(tmp_path):
    with pytest.raises(ValueError, match="not a directrec model"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text('{"model": "ease", "format_version": 99}')
    with pytest.raises(ValueError, match="format version"):
        load_model(tmp_path)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_ad_hoc_histories_match_stored_ones_and_leave_them_alone(name, fitted):
    """A stored user's own sequence, given as an ad-hoc history, gets the same list; the
    stored histories are unchanged afterwards; exclusions and empty histories work."""
    model = fitted(name)
    if not model.supports_histories:
        with pytest.raises(ValueError, match="cannot score ad-hoc"):
            model.recommend_histories([np.array([1, 2])])
        return
    users = np.array([3, 7])
    before, _ = model.recommend(users, k=10)
    seqs = [model.history_of(u) for u in users]
    assert all(set(h) == set(model.seen[u].indices) for h, u in zip(seqs, users, strict=True))
    got, _ = model.recommend_histories(seqs, k=10)
    if getattr(model.config, "use_ratings", False):  # ad-hoc histories carry no ratings
        assert all(not set(a) & set(h) and (a >= 0).all() for a, h in zip(got, seqs, strict=True))
    else:
        assert np.array_equal(got, before)
    again, _ = model.recommend(users, k=10)
    assert np.array_equal(again, before)
    banned = got[0][:3]
    ex, _ = model.recommend_histories([seqs[0], np.array([], dtype=np.int64)], k=10,
                                      exclude=[banned, np.array([], dtype=np.int64)])  # fmt: skip
    assert not set(banned) & set(ex[0]) and not set(seqs[0]) & set(ex[0])
    pop_order = np.argsort(-model.popularity, kind="stable")[:10]
    assert set(ex[1]) == set(pop_order)
    with pytest.raises(ValueError):
        model.recommend_histories([np.array([model.n_items])])
