"""The contract every model keeps (after LensKit's): save/load gives identical lists,
unknown users and empty histories fall back to popularity, k larger than the catalogue is
fine, seen and excluded items never appear, the model holds no user state (ad-hoc
histories score like stored ones), concurrent calls equal sequential ones, and `update`
gives a working model of the same kind over the grown index."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from directrec.data.dataset import Dataset, Interactions
from directrec.data.histories import Histories
from directrec.data.split import leave_one_out
from directrec.generate.pipeline import ListOptions, ranked, recommend
from directrec.models import MODELS, create, load_model
from directrec.models.candidates import mask_rows
from tests.models.settings import TEST_SETTINGS


@pytest.fixture(scope="module")
def fit_data(planted_embedded):
    fit, _, _ = leave_one_out(planted_embedded.interactions).stage("test")
    return fit.select(fit.user != 0)  # user 0 keeps its index but has an empty history


@pytest.fixture(scope="module")
def fitted(planted_embedded, fit_data):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = create(name, TEST_SETTINGS[name]).fit(fit_data, planted_embedded.catalog)
        return cache[name]

    return get


def lists(model, histories, k=10, **kw):
    recs = recommend(model, histories, ListOptions(k=k, **kw.pop("opts", {})), **kw)
    return np.array([r.items for r in recs]), np.array([r.scores for r in recs])


def test_every_model_is_covered():
    assert set(TEST_SETTINGS) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_bad_setting_is_refused_when_the_config_is_built(name):
    """Every numeric setting whose default is positive (sizes, rates, counts) refuses -1
    when the model is created, naming itself, not later in a fit."""
    numeric = [
        f.name
        for f in dataclasses.fields(MODELS[name].Config)
        if f.name != "seed" and type(f.default) in (int, float) and f.default > 0
    ]
    for field in numeric:
        with pytest.raises(ValueError, match=f"^{field} must be"):
            create(name, {field: -1})


@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_load_round_trip(name, fitted, fit_data, tmp_path):
    model = fitted(name)
    # what the fit wrote into meta stays (a key that changed scoring would have to survive
    # the trip too); an id map and a note are added for the trip
    learned = model.meta
    model.meta = learned | {"user_ids": ["x"], "note": "kept"}
    h = Histories.from_interactions(fit_data, np.arange(1, 30))
    items, scores = lists(model, h)
    try:
        path = model.save(tmp_path / name)
    finally:
        model.meta = learned
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "ids.json",
        "weights.safetensors",
    ]
    loaded = load_model(path)
    assert type(loaded) is type(model) and loaded.meta["note"] == "kept"
    assert set(learned) <= set(loaded.meta)
    items2, scores2 = lists(loaded, h)
    assert np.array_equal(items, items2)
    np.testing.assert_allclose(scores, scores2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_holds_no_user_history(name, fitted, tmp_path):
    """Nothing the size of the interaction log is saved: only learned parameters."""
    from safetensors.numpy import load_file

    model = fitted(name)
    state = load_file(str(model.save(tmp_path / name) / "weights.safetensors"))
    assert not [k for k in state if "hist" in k or "seen" in k or k.endswith("weights.indptr")]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_unknown_and_empty_histories_get_popularity(name, fitted, fit_data):
    model = fitted(name)
    per_user = model.capabilities.personalises == "user"
    h = Histories.from_interactions(fit_data, [-1, 0, 10**9, 5])
    items, _ = lists(model, h, k=5, opts={"exclude_seen": False})
    pop_order = set(np.argsort(-model.popularity, kind="stable")[:5])
    for row in items[:3]:
        assert set(row) == pop_order
    assert model.fallback(h).tolist() == [True, True, True, False]
    anonymous = Histories.from_lists([h[3]], model.n_items)  # a session: no user index
    assert model.fallback(anonymous).tolist() == [per_user]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_k_larger_than_catalogue_and_seen_excluded(name, fitted, fit_data):
    model = fitted(name)
    n = model.n_items
    h = Histories.from_interactions(fit_data, [5])
    items, scores = lists(model, h, k=n + 10)
    seen = set(h[0].tolist())
    real = items[0][items[0] >= 0]
    assert len(real) == n - len(seen) and not seen & set(real)
    assert len(set(real)) == len(real)
    assert np.all(np.diff(scores[0][: len(real)]) <= 1e-6)  # best first
    with pytest.raises(ValueError):
        lists(model, h, k=0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_load_is_strict_about_every_tensor(name, fitted, tmp_path):
    """A tensor of another shape or dtype than the config implies, or one the model does
    not save, fails the load with a ValueError naming it (torch would cast an int8 tensor
    silently; a plain array would load and fail on every request)."""
    from safetensors.numpy import load_file, save_file

    path = fitted(name).save(tmp_path / name)
    state = load_file(str(path / "weights.safetensors"))
    own = [k for k in state if k.startswith("model.")] or ["popularity"]
    key = max(own, key=lambda k: (state[k].size, k))  # the largest: the weights themselves
    a = state[key]
    other = np.float32 if a.dtype.kind in "iub" else np.int8
    tampered = {
        "shape": {**state, key: np.concatenate([a, a[:1]])},
        "dtype": {**state, key: a.astype(other)},
        "extra": {**state, "model.extra": np.zeros(3, np.float32)},
    }
    for how, tensors in tampered.items():
        save_file(tensors, str(path / "weights.safetensors"))
        want = "model.extra" if how == "extra" else key.removeprefix("model.")
        with pytest.raises(ValueError, match=want.replace(".", r"\.")):
            load_model(path)


def test_load_rejects_foreign_or_broken_directories(tmp_path):
    with pytest.raises(ValueError, match="not a directrec model"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text('{"model": "ease", "format_version": 99}')
    with pytest.raises(ValueError, match="format version"):
        load_model(tmp_path)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_ad_hoc_histories_exclusions_and_bad_items(name, fitted, fit_data):
    """A user's history given as an anonymous session gets the user's own list (models
    that personalise by history); exclusions hold; item indices are checked."""
    model = fitted(name)
    stored = dataclasses.replace(Histories.from_interactions(fit_data, [3, 7]), ratings=None)
    before, _ = lists(model, stored)
    # The same items as a fresh object (users keep their index: a user-neighbour model
    # must not count a user as their own neighbour).
    session = Histories.from_lists([stored[0], stored[1]], model.n_items, users=stored.users)
    got, _ = lists(model, session)
    if model.capabilities.personalises == "history":
        assert np.array_equal(got, before)
    banned = before[0][:3]
    ex, _ = lists(model, stored, exclude=[banned, np.zeros(0, dtype=np.int64)])
    assert not set(banned) & set(ex[0]) and not set(stored[0]) & set(ex[0])
    assert (ex >= 0).all()
    with pytest.raises(ValueError):
        Histories.from_lists([[model.n_items]], model.n_items)
    with pytest.raises(ValueError):
        model.score(Histories.from_lists([[0]], model.n_items + 1))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_top_candidates_are_the_best_of_the_scores(name, fitted, fit_data):
    """`top` (what lists are built from) and `score` (what stages and explanations read)
    agree: a row's candidates are its best-scored items less its exclusions, with their
    scores, best first; a generator searches wider for the exclusions it must skip."""
    model = fitted(name)
    h = Histories.from_interactions(fit_data, [0, 3, 7, 11])  # user 0: the fallback
    rng = np.random.default_rng(0)
    banned = [rng.choice(model.n_items, 4, replace=False) for _ in range(len(h))]
    rows = np.repeat(np.arange(len(h)), 4)
    ex = sp.csr_matrix(
        (np.ones(len(rows)), (rows, np.concatenate(banned))), (len(h), model.n_items)
    )
    k = 5
    found = model.top(h, k, exclude=ex)
    dense = model.score(h, k=model.width(h, k, ex))
    mask_rows(dense, ex)
    for r in range(len(h)):
        items = found.items[r][found.items[r] >= 0]
        assert len(items) >= min(k, int(torch.isfinite(dense[r]).sum()))
        assert not set(items.tolist()) & set(banned[r].tolist())
        torch.testing.assert_close(found.scores[r, : len(items)], dense[r, items])
        best = torch.topk(dense[r], k).values
        torch.testing.assert_close(found.scores[r, :k], best)  # the best k, ties aside
    # Items hidden from the lists (a history past the context cap) are never listed, and
    # the popularity rows still fill k slots
    hidden = sp.csr_matrix(
        (np.ones(3), ([0, 0, 1], np.argsort(-model.popularity, kind="stable")[[0, 1, 0]])),
        (len(h), model.n_items),
    )
    lists = ranked(model, h, k, hidden=hidden)
    assert (lists.items[0, :k] >= 0).all()
    for r in range(len(h)):
        assert not set(lists.items[r].tolist()) & set(hidden[r].indices.tolist())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_concurrent_calls_equal_sequential_ones(name, fitted, fit_data):
    """One model object serves several threads: each thread scores its own histories,
    repeatedly, and gets exactly what a sequential call gets."""
    model = fitted(name)
    batches = [
        Histories.from_interactions(fit_data, np.arange(1 + 7 * t, 8 + 7 * t)) for t in range(4)
    ]
    expected = [model.score(b, k=10) for b in batches]
    results: dict[int, list] = {t: [] for t in range(4)}
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for _ in range(3):
                results[t].append(model.score(batches[t], k=10))
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for t in range(4):
        for got in results[t]:
            assert got.shape == expected[t].shape
            assert np.array_equal(np.isfinite(got.numpy()), np.isfinite(expected[t].numpy()))
            fin = np.isfinite(expected[t].numpy())
            np.testing.assert_allclose(
                got.numpy()[fin], expected[t].numpy()[fin], rtol=1e-5, atol=1e-5
            )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_update_grows_the_index_and_serves_new_users(name, fitted, fit_data, planted_embedded):
    """`update` on data with a new user keeps the model's kind and index, and the new
    user (a history model) or every old user (a per-user model) gets a personal list."""
    model = fitted(name)
    new_user = fit_data.n_users
    extra = Interactions(
        np.full(6, new_user),
        np.arange(6, dtype=np.int64),
        n_users=new_user + 1,
        n_items=fit_data.n_items,
        rating=None if fit_data.rating is None else np.full(6, 5.0, dtype=np.float32),
        timestamp=None if fit_data.timestamp is None else np.arange(6) + 10**9,
    )
    grown = Interactions.concat(
        Interactions(
            fit_data.user,
            fit_data.item,
            new_user + 1,
            fit_data.n_items,
            fit_data.rating,
            fit_data.timestamp,
        ),
        extra,
    )
    new = model.update(grown, planted_embedded.catalog, epochs=1)
    assert type(new) is type(model) and new is not model
    assert new.n_items == model.n_items and new.n_users == new_user + 1
    h = Histories.from_interactions(grown, [new_user])
    assert not new.fallback(h)[0]
    items, _ = lists(new, h)
    assert (items >= 0).all() and not set(items[0]) & set(range(6))


EXACT_REFIT = {"pop", "itemknn", "userknn", "ease", "content"}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_update_warm_starts_or_refits_exactly(name, fitted, fit_data, planted_embedded):
    """Zero more epochs on the same data: a warm-starting model is exactly the model it
    started from (it did not start afresh); a closed-form or neighbour model refits to
    exactly the same model (its normal settings, never a truncated fit)."""
    model = fitted(name)
    if not (model.capabilities.warm_start or name in EXACT_REFIT):
        pytest.skip("refits with its own settings and epochs (a stochastic fit)")
    new = model.update(fit_data, planted_embedded.catalog, epochs=0)
    h = Histories.from_interactions(fit_data, np.arange(1, 40))
    a, b = model.score(h, k=10).numpy(), new.score(h, k=10).numpy()
    assert np.array_equal(np.isfinite(a), np.isfinite(b))
    np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory, planted_embedded):
    """The planted data as a DuckDB store (same frames, so the same index)."""
    from directrec.data.schema import RawData, make_interactions
    from directrec.data.store import ingest
    from directrec.text.encoder import item_embeddings
    from tests.conftest import planted_frames

    inter, items = planted_frames()
    db = tmp_path_factory.mktemp("store") / "planted.duckdb"
    frame = make_interactions(
        inter["user_id"], inter["item_id"], timestamp=inter["timestamp"], rating=inter["rating"]
    )
    ingest(db, RawData(frame, items))
    item_embeddings(Dataset.from_store(db), db)  # cache, as `benchmark` would
    return db


@pytest.mark.parametrize("name", sorted(MODELS))
def test_saved_model_evaluates_like_the_one_in_memory(name, fitted, planted_store, tmp_path):
    """`directrec evaluate` (load, map the store onto the model's index, no refit) gives
    exactly the in-memory evaluation on the same split."""
    from directrec.evaluate.protocol import evaluate
    from directrec.evaluate.saved import evaluate_saved

    model = fitted(name)
    ds = Dataset.from_store(planted_store)
    model.meta = {"user_ids": ds.users.ids.tolist(), "item_ids": ds.items.ids.tolist()}
    doc = evaluate_saved(load_model(model.save(tmp_path / name)), planted_store, ks=(10,))
    inputs, seen, targets = leave_one_out(ds.interactions).stage("test")
    direct = evaluate(model, inputs, targets, (10,), seen=seen).metrics
    saved = doc["results"][0]["metrics"]
    assert saved["hr@10"] == pytest.approx(direct["hr@10"], abs=1e-6)
    assert saved["ndcg@10"] == pytest.approx(direct["ndcg@10"], abs=1e-5)
    assert doc["split"]["targets_unknown_item"] == 0
