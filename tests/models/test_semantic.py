"""Constrained decoding of the semantic-ID generator: whatever the weights, tries and
histories, every generated item exists, is unseen by the user and appears once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from directrec.data.dataset import Interactions
from directrec.data.histories import Histories
from directrec.data.split import leave_one_out
from directrec.evaluate.protocol import evaluate
from directrec.generate.pipeline import ListOptions, recommend
from directrec.generate.stages import ColdGate
from directrec.models import create, load_model
from directrec.models.semantic import ID_WEIGHTS, CodeTrie, SemanticID
from directrec.text.semantic_ids import make_unique
from tests.models.settings import TEST_SETTINGS, cosine_rates, record_rates


def untrained(codes: np.ndarray, history: Interactions, beam: int, seed: int) -> SemanticID:
    m = SemanticID(
        SemanticID.Config(
            dim=16,
            heads=2,
            enc_layers=1,
            dec_layers=1,
            max_len=8,
            beam=beam,
            id_candidates=0,  # the beam's items alone: what this checks is the trie
            codebook=max(2, int(codes[:, :-1].max()) + 1),
            levels=codes.shape[1] - 1,
            seed=seed,
        )
    )
    torch.manual_seed(seed)
    m.n_items = history.n_items
    m.codes = torch.from_numpy(codes)
    m._build_index()
    m.net = m._build().eval()
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
    items, scores = m.generate(Histories.from_interactions(hist))
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


def test_trie_closes_exactly_the_nodes_whose_items_are_all_seen():
    """`open_nodes` against a brute force over every (user, node): a node is closed for a
    user iff every item below it is in that user's history."""
    rng = np.random.default_rng(3)
    codes = make_unique(rng.integers(0, 3, size=(40, 2)))
    trie = CodeTrie(codes, [3, 3, int(codes[:, 2].max()) + 1])
    seen = rng.random((4, 40)) < 0.6
    seen[1] = True  # one user has seen everything: every node is closed
    seen[2] = False  # one has seen nothing: none is
    rows, items = (torch.from_numpy(a) for a in np.nonzero(seen))
    open_nodes = trie.open_nodes(rows, items, 4)
    for j, nodes in enumerate(trie.item_node):
        for u in range(4):
            got = open_nodes[j][u]
            want = [not seen[u][nodes.numpy() == v].all() for v in range(len(trie.below[j]))]
            assert got.tolist() == want


def test_cold_items_get_codes_and_can_be_generated(planted_embedded):
    """Hold some items out of training entirely (TIGER's cold-start protocol): they still
    have codes, sit in the trie and can be written by the generator."""
    ds = planted_embedded
    cold = np.arange(0, ds.interactions.n_items, 10)  # every 10th item never seen in training
    fit, _, _ = leave_one_out(ds.interactions).stage("test")
    warm = fit.select(~np.isin(fit.item, cold))
    model = create("semantic-id", TEST_SETTINGS["semantic-id"]).fit(warm, ds.catalog)
    n = ds.interactions.n_items
    assert model.codes.shape[0] == n
    assert len(np.unique(model.codes.cpu().numpy(), axis=0)) == n  # every code names one item
    assert set(model.cold_items().tolist()) == set(cold.tolist())
    # An exhaustive beam reaches every unseen item through the trie, cold ones included,
    # each once and with a finite score.
    h = Histories.from_interactions(warm, np.arange(12))
    items, logp = model.generate(h, n)
    for r in range(len(h)):
        written = items[r][items[r] >= 0].tolist()
        assert len(written) == len(set(written)) and torch.isfinite(logp[r][: len(written)]).all()
        assert set(written) == set(range(n)) - set(h[r].tolist())
    # What their codes say is what they are: a cold item ranks higher (among the cold
    # items) in the lists of users of its own topic than in other users' lists.
    item_topic = np.array([int(i[1:]) // 20 for i in ds.items.ids])
    user_topic = np.array([int(u[1:]) % 6 for u in ds.users.ids])
    users = np.arange(ds.interactions.n_users)
    items, _ = model.generate(Histories.from_interactions(warm, users), n)
    in_cold = np.isin(items.numpy(), cold)
    own = [], []
    for r in users:
        ranked = items[r].numpy()[in_cold[r]]  # the cold items, best first
        for place, i in enumerate(ranked):
            own[int(item_topic[i] == user_topic[r])].append(place)
    assert np.mean(own[1]) < 0.5 * np.mean(own[0]), (np.mean(own[1]), np.mean(own[0]))


def test_sampling_gives_other_lists_than_greedy_beam(planted_embedded):
    ds = planted_embedded
    fit, seen, targets = leave_one_out(ds.interactions).stage("test")
    model = create("semantic-id", TEST_SETTINGS["semantic-id"]).fit(fit, ds.catalog)
    h = Histories.from_interactions(fit, np.arange(1, 101))
    greedy, _ = model.generate(h)
    model.config = type(model.config)(
        **{**model.config.__dict__, "sample": True, "temperature": 2.0}
    )
    sampled, _ = model.generate(h)
    # Sampling changes most users' top-10, and every list stays unseen items only.
    changed = sum(
        set(g[:10].tolist()) != set(s[:10].tolist()) for g, s in zip(greedy, sampled, strict=True)
    )
    assert changed >= len(h) // 2
    for r in range(len(h)):
        assert not set(h[r].tolist()) & set(sampled[r].tolist())
    # ...and still ranks far better than chance.
    hr = evaluate(model, fit, targets, (10,), seen=seen).metrics["hr@10"]
    assert hr > 3 * 10 / ds.interactions.n_items


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"levels": 0}, "levels"),
        ({"codebook": 1}, "codebook"),
        ({"arch": "rnn"}, "arch"),
        ({"beam": 0}, "beam"),
        ({"temperature": 0.0}, "temperature"),
        ({"id_loss": -1.0}, "id_loss"),
        ({"id_candidates": -1, "id_loss": 1.0}, "id_candidates"),
        ({"id_candidates": 10, "id_loss": 0.0}, "id_candidates"),  # proposals need the ID head
        ({"heads": 3}, "heads"),
        ({"lr_decay": "step"}, "lr_decay"),
        ({"lr_decay": "cooldown", "cooldown": 0.0}, "cooldown"),
        ({"windows": "some"}, "windows"),
    ],
)
def test_invalid_config_rejected(bad, field, planted_embedded):
    with pytest.raises(ValueError, match=field):
        create("semantic-id", {**TEST_SETTINGS["semantic-id"], **bad}).fit(
            planted_embedded.interactions, planted_embedded.catalog
        )


def test_cosine_decay_sets_each_epochs_rate_and_still_learns(planted_embedded, monkeypatch):
    """`lr_decay=cosine` (causal head): epoch e trains at lr · (1 + cos(π e / epochs)) / 2,
    and the decayed run still ranks far above popularity."""
    ds = planted_embedded
    fit, seen, targets = leave_one_out(ds.interactions).stage("valid")
    cfg = {**TEST_SETTINGS["semantic-id"], "arch": "causal", "lr_decay": "cosine"}
    model = create("semantic-id", cfg)
    rates = record_rates(monkeypatch, model, "_epoch_causal")
    model.fit(fit, ds.catalog)
    assert rates == pytest.approx(cosine_rates(cfg["lr"], cfg["epochs"]))
    hr = evaluate(model, fit, targets, (10,), seen=seen).metrics["hr@10"]
    pop = evaluate(create("pop").fit(fit), fit, targets, (10,), seen=seen).metrics["hr@10"]
    assert hr >= max(2 * pop, pop + 0.2), f"HR@10 {hr:.3f} vs popularity {pop:.3f}"


def test_all_windows_train_the_causal_head_on_every_interaction(planted_embedded, monkeypatch):
    """`windows=all` (causal head): each whole history tiled, so every interaction but a
    user's first is a target once even with a context of 5, where `last` trains on each
    user's last 6 items; it still ranks far above popularity."""
    ds = planted_embedded
    fit, seen, targets = leave_one_out(ds.interactions).stage("valid")
    counted: dict[str, int] = {}
    real_epoch = SemanticID._epoch_causal

    def counting(self, windows, *args):
        counted[self.config.windows] = int(((windows[:, :-1] >= 0) & (windows[:, 1:] >= 0)).sum())
        return real_epoch(self, windows, *args)

    monkeypatch.setattr(SemanticID, "_epoch_causal", counting)
    cfg = {**TEST_SETTINGS["semantic-id"], "arch": "causal", "max_len": 5}
    model = create("semantic-id", {**cfg, "windows": "all"}).fit(fit, ds.catalog)
    create("semantic-id", {**cfg, "epochs": 1, "windows": "last"}).fit(fit, ds.catalog)
    assert counted["all"] == len(fit.item) - len(np.unique(fit.user))
    assert counted["last"] < counted["all"]
    hr = evaluate(model, fit, targets, (10,), seen=seen).metrics["hr@10"]
    pop = evaluate(create("pop").fit(fit), fit, targets, (10,), seen=seen).metrics["hr@10"]
    assert hr >= max(2 * pop, pop + 0.2), f"HR@10 {hr:.3f} vs popularity {pop:.3f}"


def test_length_batches_visit_every_window_once_with_little_padding(planted_embedded, monkeypatch):
    """Causal head: with `length_batches` an epoch still visits every training window
    exactly once, and the batches, trimmed of all-padding columns, compute far fewer
    positions than plain random batches (`length_batches=false`, the default)."""
    import directrec.models.semantic.train as semantic_model

    ds = planted_embedded
    fit = leave_one_out(ds.interactions).stage("valid")[0]
    seen: dict[bool, tuple[torch.Tensor, list[torch.Tensor]]] = {}
    real = semantic_model.batches

    def spy(real_tokens, size, by_length):
        cut = real(real_tokens, size, by_length)
        seen[by_length] = (real_tokens, cut)
        return cut

    monkeypatch.setattr(semantic_model, "batches", spy)
    cfg = {**TEST_SETTINGS["semantic-id"], "arch": "causal", "max_len": 30, "epochs": 1}
    for on in (True, False):
        create("semantic-id", {**cfg, "windows": "all", "length_batches": on}).fit(fit, ds.catalog)
    width = {}
    for on, (real_tokens, cut) in seen.items():
        assert sorted(torch.cat(cut).tolist()) == list(range(len(real_tokens)))
        lengths = real_tokens.sum(1)
        width[on] = sum(int(lengths[b].max()) * len(b) for b in cut)
    assert width[True] < 0.8 * width[False], width


@pytest.mark.parametrize("id_loss", [0.0, 1.0])
@pytest.mark.parametrize("item_embedding", [False, True])
def test_new_items_become_generable_without_retraining(
    item_embedding, id_loss, planted_embedded, tmp_path
):
    """Items that arrive after training (text only) get codes from the trained RQ-VAE,
    join the trie and are written by the generator; save/load keeps them. With the item
    embedding, new items get zero rows: they read as their codes alone (also to the ID
    head, which scores them by their codes)."""
    ds = planted_embedded
    n_old = ds.interactions.n_items - 10  # the last ten items arrive later
    data = ds.interactions.select(ds.interactions.item < n_old)
    data = Interactions(data.user, data.item, n_users=data.n_users, n_items=n_old)
    old_catalog = type(ds.catalog)(
        ds.catalog.titles[:n_old],
        ds.catalog.texts[:n_old],
        ds.catalog.categories[:n_old],
        ds.catalog.embeddings[:n_old],
    )
    settings = TEST_SETTINGS["semantic-id"] | {
        "item_embedding": item_embedding,
        "id_loss": id_loss,
        "id_candidates": 100 if id_loss else 0,  # proposals come from the ID head
    }
    model = create("semantic-id", settings).fit(data, old_catalog)
    new = model.add_items(ds.catalog.embeddings[n_old:])
    if item_embedding:
        rows = model.net.item_emb.weight
        assert rows.shape[0] == model.n_items and not rows[new].any() and rows[:n_old].any()
    assert new.tolist() == list(range(n_old, n_old + 10)) and model.n_items == n_old + 10
    assert len({tuple(c) for c in model.codes.tolist()}) == model.n_items  # still unique
    h = Histories.from_interactions(Interactions(data.user, data.item, data.n_users, model.n_items))
    items = np.array([r.items for r in recommend(model, h, ListOptions(k=20))])
    assert np.isin(items, new).any()
    loaded = load_model(model.save(tmp_path / "m"))
    again = np.array([r.items for r in recommend(loaded, h.take(np.arange(30)), ListOptions(k=20))])
    assert np.array_equal(again, items[:30])


@pytest.fixture(scope="module")
def hybrid(planted_embedded) -> tuple[SemanticID, Interactions]:
    """The causal ID + semantic hybrid fit on the planted data's training part, with its
    ID weight chosen on validation; and that training part."""
    from directrec.evaluate.protocol import validator

    ds = planted_embedded
    fit, seen, targets = leave_one_out(ds.interactions).stage("valid")
    settings = TEST_SETTINGS["semantic-id"] | {
        "arch": "causal",
        "item_embedding": True,
        "id_loss": 1.0,
    }
    model = create("semantic-id", settings).fit(
        fit, ds.catalog, validator=validator(fit, targets, seen=seen)
    )
    return model, fit


def test_id_head_rescores_the_beam_with_a_weight_chosen_on_validation(hybrid, tmp_path):
    """The ID + semantic hybrid's output side: the beam's items (still generated through
    the trie) are re-ranked by beam log-prob + w · the ID head's log-softmax, exactly, and
    w is the validation-best of the grid; the choice travels with the saved model."""
    from torch.nn import functional as F

    model, fit = hybrid
    table = {float(w): v for w, v in model.meta["id_weight_valid"].items()}
    assert set(table) == set(ID_WEIGHTS) and 16.0 in table
    assert table[model.config.id_weight] == max(table.values())
    h = Histories.from_interactions(fit, range(40))
    w = 2.0
    model.config.id_weight = 0.0
    items0, logp0 = model.generate(h, 10)
    model.config.id_weight = w
    items1, logp1 = model.generate(h, 10)
    hist, pad = model._windows(h.indptr[:-1], h.indptr[1:], h.items)
    with torch.no_grad():
        state = model.net.encode(model._inputs(hist), pad)[:, -1]
        id_logp = F.log_softmax(model.net.id_logits(state), -1)
    for r in range(len(h)):
        assert set(items0[r].tolist()) == set(items1[r].tolist())  # the same generated items
        want = logp0[r] + w * id_logp[r, items0[r]]
        got = dict(zip(items1[r].tolist(), logp1[r].tolist(), strict=True))
        torch.testing.assert_close(torch.tensor([got[i] for i in items0[r].tolist()]), want)
        assert (logp1[r][:-1] >= logp1[r][1:]).all()  # best first
    model.config.id_weight = w
    # scoring is inference: no autograd graph through the beam (one kept per batch cost a
    # Beauty evaluation 4× the memory)
    assert not model._score(h, 10).requires_grad
    loaded = load_model(model.save(tmp_path / "m"))
    assert loaded.config.id_weight == w
    torch.testing.assert_close(loaded.generate(h, 10)[1], logp1)


def test_weight_sweep_reuses_each_batchs_candidates_with_the_same_scores(hybrid):
    """`reusing_candidates`: scoring the same histories again at another ID weight re-blends
    the cached beam (one entry per batch and setting) and gives exactly the fresh scores."""
    model, fit = hybrid
    h = Histories.from_interactions(fit, range(40))
    chosen = model.config.id_weight
    try:
        fresh = {}
        for n in (0, 4):
            model.config.id_candidates = n
            for w in (0.5, 2.0, 8.0):
                model.config.id_weight = w
                fresh[n, w] = model._score(h, 10)
        with model.reusing_candidates() as cache:
            for n in (0, 4):
                model.config.id_candidates = n
                for w in (0.5, 2.0, 8.0):
                    model.config.id_weight = w
                    torch.testing.assert_close(model._score(h, 10), fresh[n, w])
            assert len(cache) == 2  # one search per setting, not per weight
        assert model._candidate_cache is None
    finally:
        model.config.id_weight, model.config.id_candidates = chosen, 0


def test_id_head_proposals_join_the_beam_scored_as_the_beam_would(hybrid, tmp_path):
    """`id_candidates`: the ID head's best unseen items that the beam missed join its list,
    each with the code log-prob an exhaustive beam gives it (+ the same w · ID term); the
    beam's own items keep their scores; the setting travels with the saved model."""
    from torch.nn import functional as F

    model, fit = hybrid
    h = Histories.from_interactions(fit, range(40))
    w, n, beam = 2.0, 6, 5
    chosen = model.config.id_weight, model.config.id_candidates
    try:
        model.config.id_weight, model.config.id_candidates = 0.0, 0  # the beam alone
        full_items, full_logp = model.generate(h, model.n_items)  # every unseen item, exact
        model.config.id_weight = w
        beam_items, beam_logp = model.generate(h, beam)
        model.config.id_candidates = n
        items, logp = model.generate(h, beam)
        loaded = load_model(model.save(tmp_path / "m"))
    finally:
        model.config.id_weight, model.config.id_candidates = chosen
    assert loaded.config.id_candidates == n
    torch.testing.assert_close(loaded.generate(h, beam)[1], logp)
    assert items.shape == (len(h), beam + n)
    hist, pad = model._windows(h.indptr[:-1], h.indptr[1:], h.items)
    with torch.no_grad():
        state = model.net.encode(model._inputs(hist), pad)[:, -1]
        id_logp = F.log_softmax(model.net.id_logits(state), -1)
    for r in range(len(h)):
        seen = set(h[r].tolist())
        ranked = [i for i in id_logp[r].argsort(descending=True).tolist() if i not in seen]
        beam_set = set(beam_items[r].tolist())
        got = dict(zip(items[r].tolist(), logp[r].tolist(), strict=True))
        got.pop(-1, None)  # proposals the beam already wrote
        assert set(got) == beam_set | set(ranked[:n]) and not seen & set(got)
        for i, v in zip(beam_items[r].tolist(), beam_logp[r].tolist(), strict=True):
            assert got[i] == pytest.approx(v, abs=1e-4)
        exact = dict(zip(full_items[r].tolist(), full_logp[r].tolist(), strict=True))
        for i in set(ranked[:n]) - beam_set:
            want = exact[i] + w * float(id_logp[r, i])
            assert got[i] == pytest.approx(want, abs=1e-4)
        assert (logp[r][torch.isfinite(logp[r])].diff() <= 0).all()  # best first


def test_an_ivf_search_of_every_list_is_the_exact_hybrid_and_of_few_lists_still_valid(
    hybrid, tmp_path
):
    """`id_search = ivf`: probing every list of the index gives the exact search's lists
    and scores (proposals and normaliser alike); probing one list still writes only real
    unseen items, best first. The index is built once and kept while the weights are."""
    model, fit = hybrid
    h = Histories.from_interactions(fit, range(40))
    chosen = model.config.id_weight, model.config.id_candidates
    try:
        model.config.id_weight, model.config.id_candidates = 2.0, 6
        exact = model.generate(h, 5)
        model.config.id_search, model.config.id_probe = "ivf", 1.0
        every = model.generate(h, 5)
        index = model.net.id_index(model.config.seed)
        assert model.net.id_index(model.config.seed) is index
        model.config.id_probe = 1e-9  # one list
        few_items, few_logp = model.generate(h, 5)
        loaded = load_model(model.save(tmp_path / "m"))
    finally:
        model.config.id_weight, model.config.id_candidates = chosen
        model.config.id_search, model.config.id_probe = "exact", 0.05
    assert (loaded.config.id_search, loaded.config.id_probe) == ("ivf", 1e-9)
    assert loaded.net._ivf_cache is None  # built by the first call that searches
    torch.testing.assert_close(loaded.generate(h, 5)[1], few_logp)
    built = loaded.net.id_index(loaded.config.seed)
    assert len(built.items) == loaded.n_items
    new = loaded.add_items(torch.randn(3, int(loaded.rq.mean.shape[0])).numpy())
    rebuilt = loaded.net.id_index(loaded.config.seed)  # the grown catalogue is indexed
    assert rebuilt is not built and sorted(rebuilt.items.tolist()) == list(range(loaded.n_items))
    assert len(new) == 3
    assert torch.equal(exact[0], every[0])
    torch.testing.assert_close(exact[1], every[1], atol=1e-4, rtol=1e-5)
    for r in range(len(h)):
        got = few_items[r][torch.isfinite(few_logp[r])].tolist()
        assert got and not set(got) & set(h[r].tolist()) and -1 not in got
        assert (few_logp[r][torch.isfinite(few_logp[r])].diff() <= 0).all()
    assert not torch.equal(few_items, exact[0])  # one list misses some of the exact lists


def test_codes_from_interactions_or_both(planted_embedded, tmp_path):
    """Collaborative codes: items that co-occur share code prefixes more than chance; a
    text-only item has no such vector (a clear error), while `both` codes it from its text
    with a zero collaborative part."""
    ds = planted_embedded
    topic = np.array([int(i[1:]) // 20 for i in ds.items.ids])
    settings = TEST_SETTINGS["semantic-id"] | {"epochs": 1, "svd_dim": 8}
    m = create("semantic-id", settings | {"codes_from": "interactions"}).fit(
        ds.interactions, ds.catalog
    )
    first = m.codes[:, 0].numpy()
    same_code = first[:, None] == first[None, :]
    same_topic = topic[:, None] == topic[None, :]
    assert same_code[same_topic].mean() > 2 * same_code[~same_topic].mean()
    with pytest.raises(ValueError, match="codes_from=interactions"):
        m.add_items(ds.catalog.embeddings[:2])
    b = create("semantic-id", settings | {"codes_from": "both"}).fit(ds.interactions, ds.catalog)
    # the reloaded model knows the width of its interaction part from its learned weights
    b = load_model(b.save(tmp_path / "both"))
    new = b.add_items(ds.catalog.embeddings[:2])
    assert len(new) == 2 and b.codes.shape[0] == ds.interactions.n_items + 2
    with pytest.raises(ValueError, match="the codes read"):
        b.add_items(np.ones((1, 1000), dtype=np.float32))


def test_placed_cold_items_take_the_gate_rank_or_follow_a_short_list():
    """The reserved-slot gate: admitted cold items (similarity ≥ threshold, best first)
    go between the warm items at ranks rank − 1 and rank; a row with fewer warm items
    than `rank` gets them after its last warm item, and a beam-written cold item does
    not count as warm."""
    cold = np.array([100, 101, 102])
    items = torch.tensor([[5, 6, 7, 8], [5, 100, 6, -1], [-1, -1, -1, -1]])
    logp = torch.tensor(
        [[-1.0, -2.0, -3.0, -4.0], [-1.0, -1.5, -2.0, -torch.inf], [-torch.inf] * 4]
    )
    sims = torch.tensor([[0.9, 0.1, 0.8], [0.2, 0.9, 0.95], [0.5, 0.6, 0.7]])
    gate = ColdGate(mode="place", view="text", mix=0.0, slots=2, threshold=0.5, rank=2)
    keep = torch.topk(sims, 2, dim=1).indices  # each row's two best matches, best first
    scores = gate._placed(items, logp, cold, sims, keep)
    out = torch.full((3, 103), -torch.inf)
    out[torch.arange(3)[:, None], items.clamp(min=0)] = torch.where(items >= 0, logp, -torch.inf)
    out[:, torch.from_numpy(cold)] = scores
    ranked = [
        [
            i
            for i in torch.argsort(row, descending=True, stable=True).tolist()
            if torch.isfinite(row[i])
        ]
        for row in out
    ]
    assert ranked[0] == [5, 6, 100, 102, 7, 8]  # 0.9 before 0.8; 101 is below the threshold
    assert ranked[1] == [5, 6, 102, 101]  # two warm items only: the cold ones follow them
    assert ranked[2] == [102, 101]  # no warm item: the best two admitted, best first


def test_a_checkpointed_run_resumes_exactly(planted_embedded, tmp_path):
    """The generic checkpoint (models/training.py) serves semantic-id too: a run of 2
    epochs, resumed to 4 from its checkpoint (the codes refit alike), ends on the weights
    of a straight 4-epoch run; a checkpoint of another config is refused."""
    ds = planted_embedded
    fit = leave_one_out(ds.interactions).stage("valid")[0]
    cfg = {**TEST_SETTINGS["semantic-id"], "rq_epochs": 10, "epochs": 4}
    straight = create("semantic-id", cfg).fit(fit, ds.catalog)
    ckpt = str(tmp_path / "ckpt")
    create("semantic-id", {**cfg, "epochs": 2, "checkpoint_dir": ckpt}).fit(fit, ds.catalog)
    resumed = create("semantic-id", {**cfg, "checkpoint_dir": ckpt}).fit(fit, ds.catalog)
    assert [r["epoch"] for r in resumed.meta["train_log"]] == [1, 2, 3, 4]
    for (k, a), b in zip(
        straight.net.state_dict().items(), resumed.net.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="another config"):
        create("semantic-id", {**cfg, "dropout": 0.3, "checkpoint_dir": ckpt}).fit(fit, ds.catalog)


def test_the_codes_alone_and_the_beam_share_are_reported_beside_the_hybrid(
    hybrid, planted_embedded
):
    """`codes_only()`: the same network and beam without the ID head. Evaluated beside the
    hybrid, its own metrics match evaluating the view by itself, and `beam_share@k` is
    the share of the hybrid's top-k slots that hold items of the trie beam (hand-counted
    here from `generate` with and without the ID head's proposals)."""
    model, _ = hybrid
    fit, seen, targets = leave_one_out(planted_embedded.interactions).stage("valid")
    chosen = model.config.id_weight
    try:
        model.config.id_candidates, model.config.id_weight = 0, 0.0
        assert model.codes_only() is None  # it decodes by its codes already
        model.config.id_weight = 2.0  # the ID head re-ranks the beam's own items only
        view = model.codes_only()
        assert view.net is model.net and view.config.id_weight == 0.0
        res = evaluate(model, fit, targets, (5,), seen=seen, codes_only=view)
        assert res.metrics["beam_share@5"] == 1.0
        alone = evaluate(view, fit, targets, (5,), seen=seen).metrics
        assert res.metrics["codes_only.ndcg@5"] == pytest.approx(alone["ndcg@5"])
        assert res.metrics["codes_only.hr@5"] == pytest.approx(alone["hr@5"])

        model.config.id_candidates = 40  # the ID head's proposals may take slots
        res = evaluate(model, fit, targets, (5,), seen=seen, codes_only=model.codes_only())
        assert res.metrics["codes_only.ndcg@5"] == pytest.approx(alone["ndcg@5"])
        h = Histories.from_interactions(fit, res.users)
        width = max(model.config.beam, 5)
        listed = model.generate(h, width)[0][:, :5]
        model.config.id_candidates = 0
        beam = model.generate(h, width)[0]
        want = np.mean(
            [len(set(listed[r].tolist()) & set(beam[r].tolist())) / 5 for r in range(len(h))]
        )
        assert res.metrics["beam_share@5"] == pytest.approx(want)
        assert want < 1.0  # here some proposals did take slots (0.998 when written)
        assert model.config.id_candidates == 0  # the view left the model's config alone
    finally:
        model.config.id_weight, model.config.id_candidates = chosen, 0


def test_the_id_head_loss_is_the_masked_full_softmax_without_its_logits():
    """The ID head's loss (chunked, so 10^6 items never hold [targets, items] logits) equals
    the cross-entropy of the dense logits with never-trained items masked out, and so do
    its gradients."""
    import torch.nn.functional as F

    from directrec.models.semantic.network import SemanticNet, SemanticNetConfig

    torch.manual_seed(0)
    n = 50
    codes = torch.cat([torch.randint(0, 8, (n, 3)), torch.zeros(n, 1, dtype=torch.long)], 1)
    cfg = SemanticNetConfig(max_len=10, dim=16, heads=2, enc_layers=1, dec_layers=1, dropout=0.0)
    net = SemanticNet([8, 8, 8, 1], cfg, n, 1.0, codes)
    with torch.no_grad():
        net.item_emb.weight.normal_()
    net.allow_ids(torch.rand(n) > 0.3)
    allowed = net.id_allowed.nonzero().squeeze(1)
    hist = torch.cat([codes[:6], torch.arange(6)[:, None]], 1)[None]  # one window of 6
    nxt = allowed[torch.randint(0, len(allowed), (1, 6))]
    targets = codes[nxt]
    pad = torch.zeros(1, 6, dtype=torch.bool)

    def grads(loss):
        net.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in (net.item_emb.weight, net.tok[0].weight)]

    chunked = net(hist, pad, targets, nxt)
    g_chunked = grads(chunked)
    net.id_loss = 0.0
    codes_only = net(hist, pad, targets, nxt)
    state = net.encode(hist, pad)[0]
    dense = (state @ net.id_table().T).masked_fill(~net.id_allowed, -torch.inf)
    reference = codes_only + F.cross_entropy(dense, nxt[0])
    g_reference = grads(reference)
    assert torch.allclose(chunked, reference, atol=1e-5)
    for a, b in zip(g_chunked, g_reference, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    net.id_loss = 1.0
    barred = (~net.id_allowed).nonzero()[0]
    with pytest.raises(ValueError, match="may not train on"):  # not a silent wrong row
        net(hist, pad, targets, torch.cat([nxt[:, :-1], barred[None]], 1))


def test_the_id_heads_table_is_kept_while_scoring_and_rebuilt_when_the_weights_change():
    """Scoring reuses the ID head's [n_items, dim] table; a training step, loaded weights
    or new codes make the next call rebuild it, so scores never come from stale weights."""
    from directrec.models.semantic.network import SemanticNet, SemanticNetConfig

    torch.manual_seed(0)
    n = 30
    codes = torch.cat([torch.randint(0, 8, (n, 3)), torch.zeros(n, 1, dtype=torch.long)], 1)
    cfg = SemanticNetConfig(max_len=10, dim=16, heads=2, enc_layers=1, dec_layers=1, dropout=0.0)
    net = SemanticNet([8, 8, 8, 1], cfg, n, 1.0, codes)

    def fresh():
        with torch.enable_grad():
            return net.id_table().detach()

    with torch.no_grad():
        first = net.id_table()
        assert net.id_table() is first  # kept
        index = net.id_index(0)  # and the IVF index over it (id_search = ivf)
        assert net.id_index(0) is index
    with torch.no_grad():
        net.item_emb.weight.add_(1.0)  # an optimizer step is an in-place update like this
        assert torch.allclose(net.id_table(), fresh()) and not torch.allclose(first, fresh())
        rebuilt = net.id_index(0)
        assert rebuilt is not index
        torch.testing.assert_close(rebuilt.vectors, fresh()[rebuilt.items])
        state = {k: v + 0.5 for k, v in net.state_dict().items() if v.is_floating_point()}
    net.load_state_dict(state, strict=False)
    with torch.no_grad():
        assert torch.allclose(net.id_table(), fresh())
        net.all_codes = codes.flip(0)
        assert torch.allclose(net.id_table(), fresh())
