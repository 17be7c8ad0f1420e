"""New users: the popularity prior blended by history length is learned on validation
users, never hurts them (the grid includes no blend), and is applied exactly as stated."""

from __future__ import annotations

import numpy as np
import torch

from directrec.data.histories import Histories
from directrec.generate.coldstart import fit_prior_blend
from directrec.generate.pipeline import ranked
from directrec.generate.stages import ColdGate, PriorBlend, Stages, load_pipeline, prior_weights
from directrec.models import create
from tests.models.settings import TEST_SETTINGS


def test_prior_weights_take_the_longest_tabled_length_not_above():
    got = prior_weights(np.array([0, 1, 2, 3, 4, 5, 6]), (1, 2, 5), (0.8, 0.5, 0.2))
    assert got.tolist() == [0.0, 0.8, 0.5, 0.5, 0.5, 0.2, 0.0]


def test_blend_is_learned_on_held_out_users_and_applied_as_stated(planted, tmp_path):
    data = planted.interactions
    held = np.arange(0, data.n_users, 5)  # every fifth user is a "new user" for tuning
    model = create("sasrec-ce", TEST_SETTINGS["sasrec-ce"]).fit(
        data.select(~np.isin(data.user, held))
    )
    seqs = data.sequences()
    blend, table = fit_prior_blend(model, [seqs[u] for u in held], lengths=(1, 2, 5))
    assert table["lengths"] == [1, 2, 5] and isinstance(blend, PriorBlend)
    assert blend.lengths == (1, 2, 5) and list(blend.alpha) == table["alpha"]
    assert all(b >= m for b, m in zip(table["recall_blend"], table["recall_model"], strict=True))
    assert all(0.0 <= a <= 1.0 for a in table["alpha"])
    assert any(a > 0 for a in blend.alpha)  # the planted sets' short rows need popularity
    # Applied exactly by the pipeline: log((1 - a) softmax(raw) + a popularity) for short
    # rows only; the model's own scores stay raw.
    h = Histories.from_lists([seqs[1][:1], seqs[1][:2], seqs[1][:8]], model.n_items)
    stages = Stages(prior_blend=blend)
    n = model.n_items
    got = ranked(model, h, n, exclude_seen=False, stages=stages).dense(n)
    raw = model.score(h)
    pop = torch.from_numpy(model.popularity / model.popularity.sum()).float()
    for row, a in zip(
        range(3), prior_weights(h.lengths(), blend.lengths, blend.alpha), strict=True
    ):
        want = torch.log((1 - a) * torch.softmax(raw[row], 0) + a * pop + 1e-30) if a else raw[row]
        torch.testing.assert_close(got[row], want, rtol=1e-4, atol=1e-5)
    # the stage travels with the artefact (stages.json, in the model's atomic save)
    loaded, loaded_stages = load_pipeline(model.save(tmp_path / "m", extra=stages.files()))
    assert loaded_stages == stages
    again = ranked(loaded, h, n, exclude_seen=False, stages=loaded_stages).dense(n)
    torch.testing.assert_close(again, got, rtol=1e-4, atol=1e-5)


def test_cold_gate_generates_held_out_items_for_the_right_users(planted_embedded, tmp_path):
    """TIGER's protocol on planted data: two items per topic never appear in training.
    The beam alone (almost) never writes them; with the gate learned on validation cases,
    a cold item enters the lists of users of its own topic, and survives save/load."""
    from directrec.data.split import leave_one_out
    from directrec.evaluate.protocol import validator
    from directrec.generate.coldstart import fit_cold_gate

    ds = planted_embedded
    data = ds.interactions
    item_topic = np.array([int(i[1:]) // 20 for i in ds.items.ids])  # ids are "i{n}"
    user_topic = np.array([int(u[1:]) % 6 for u in ds.users.ids])  # user u loves u % 6
    cold = np.flatnonzero(np.array([int(i[1:]) % 20 < 2 for i in ds.items.ids]))
    split = leave_one_out(data)
    v_fit, v_hist, v_t = split.stage("valid")
    warm = lambda d: d.select(~np.isin(d.item, cold))  # noqa: E731
    settings = TEST_SETTINGS["semantic-id"] | {"epochs": 30, "eval_every": 5}
    model = create("semantic-id", settings).fit(
        warm(v_fit), ds.catalog, validator=validator(warm(v_fit), v_t, seen=warm(v_hist))
    )
    assert set(model.cold_items().tolist()) == set(cold.tolist())
    h = Histories.from_interactions(warm(v_hist), v_t.users)
    gate, table = fit_cold_gate(model, h, v_t.items[v_t.indptr[:-1]], k=10)
    assert table["cold_cases"] > 0 and isinstance(gate, ColdGate)
    assert table["valid_cold_recall"] > table["valid_cold_recall_without"]
    assert table["valid_warm_retention"] >= 0.95
    users = np.arange(data.n_users)
    hist = Histories.from_interactions(warm(v_hist), users)
    # The right users: the best-placed cold item of a list is mostly from the user's own
    # topic (the gate may add more below it: with 12 cold items that pays on recall).
    model, stages = load_pipeline(model.save(tmp_path / "m", extra=Stages(cold_gate=gate).files()))
    assert stages.cold_gate == gate
    top = ranked(model, hist, 10, stages=stages).head(10).items.numpy()
    in_cold = np.isin(top, cold)
    assert in_cold.any(1).mean() > 0.3  # cold items are written, for many users
    assert in_cold.sum(1).max() <= gate.slots  # never more than the gate allows
    own = item_topic[top] == user_topic[:, None]
    first = in_cold.argmax(1)[in_cold.any(1)]  # each list's best-placed cold item
    assert own[in_cold.any(1), first].mean() > 0.8
    items, logp = model.generate(hist, 10)
    # The text view (the items' own text vectors, saved with the model): the best match
    # among the last 3 items, 0.05 less per step back; it too points at the user's topic.
    assert model.text_vectors is not None and len(model.text_vectors) == model.n_items
    sims = model.cold_similarity(hist, items, logp, mix=0.0, view="text").numpy()
    z = model.text_vectors.float()
    zc = z[torch.from_numpy(cold)]
    row = hist.items[hist.indptr[0] : hist.indptr[1]]
    want = torch.stack([z[row[-1 - b]] @ zc.T - 0.05 * b for b in range(min(3, len(row)))])
    torch.testing.assert_close(torch.from_numpy(sims[0]), want.max(0).values)
    # (it follows single items, not the topic's centre, so an off-topic item among the
    # last 3 can win: chance would be 1/6)
    assert (item_topic[cold[sims.argmax(1)]] == user_topic).mean() > 0.6
    grown = model.add_items(ds.catalog.embeddings[:2])  # new items keep their text too
    assert len(model.text_vectors) == model.n_items == grown[-1] + 1


def test_query_prior_is_learned_on_sentences_and_applied_by_the_pipeline(planted_embedded):
    """A model that ignores the request (popularity) gets a text-tilted prior: learned on
    half of the users' sentences, it lifts the other half's recall far above popularity,
    and the pipeline applies exactly the learned mixture to rows that carry a query."""
    from directrec.generate.coldstart import category_sentence, fit_query_blend, sentence_cases
    from directrec.generate.pipeline import ListOptions, recommend
    from directrec.generate.stages import mix_log, query_log_prior
    from tests.conftest import TOPICS

    ds = planted_embedded
    # The sentence a user would type: the words of the topic of their first items.
    topic_words = [[TOPICS[int(c[0].removeprefix("topic"))]] for c in ds.catalog.categories]
    assert category_sentence([0, 1], topic_words, "") == TOPICS[0]
    model = create("pop").fit(ds.interactions)
    seqs = ds.interactions.sequences()
    vecs = ds.catalog.embeddings
    tune, test = seqs[::2], seqs[1::2]
    _, hists, sims, _, truth = sentence_cases(tune, topic_words, vecs)
    blend, table = fit_query_blend(model, hists, sims, truth)
    assert table["alpha"] > 0 and table["t"] > 0
    assert (blend.alpha, blend.t, blend.w) == (table["alpha"], table["t"], table["w"])
    stages = Stages(query_blend=blend)
    assert table["recall_blend"] >= max(table["recall_model"], table["recall_popularity"])
    _, hists, sims, _, truth = sentence_cases(test, topic_words, vecs)
    h = Histories.from_lists(hists, model.n_items)

    def recall(lists):
        return np.mean(
            [len(set(r.items.tolist()) & t) / 10 for r, t in zip(lists, truth, strict=True)]
        )

    plain = recall(recommend(model, h, stages=stages))  # no sentence: the stage is idle
    opts = [ListOptions(query_sims=s, exclude_seen=False) for s in sims]  # as the service
    prior = recall(recommend(model, h, opts, stages=stages))
    assert prior > 2 * plain, (prior, plain, table)
    # Exactly the learned mixture, seen (pseudo-history) items masked afterwards.
    n = model.n_items
    got = ranked(model, h.take([0]), n, query_sims=[sims[0]], stages=stages).dense(n)
    want = mix_log(
        torch.log_softmax(model.score(h.take([0])), 1),
        query_log_prior(torch.from_numpy(sims[:1]), model.popularity, blend.t),
        blend.alpha,
    )
    want[0, torch.from_numpy(hists[0])] = -torch.inf
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_category_cosines_take_each_items_closest_category_name():
    """By hand: names a, b, c are unit axes; an item scores its best name, an item with no
    category has none (NaN), and the mixed view falls back to its text there."""
    from directrec.generate.coldstart import CategoryIndex, query_similarities

    axes = {"a": [1.0, 0.0, 0.0], "b": [0.0, 1.0, 0.0], "c": [0.0, 0.0, 1.0]}
    index = CategoryIndex.build(
        [["a"], ["b", "a"], [], ["c"]], lambda names: np.array([axes[n] for n in names])
    )
    q = np.array([[0.6, 0.8, 0.0]], dtype=np.float32)
    got = index.cosines(q)[0]
    np.testing.assert_allclose(got[[0, 1, 3]], [0.6, 0.8, 0.0], atol=1e-6)
    assert np.isnan(got[2])
    items = np.array([[0, 0, 1], [0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    mixed = query_similarities(q, items, index, 0.25)[0]
    np.testing.assert_allclose(mixed, [0.15, 0.2, 0.6, 0.6], atol=1e-6)  # .75 text + .25 cat
    np.testing.assert_allclose(query_similarities(q, items)[0], [0.0, 0.0, 0.6, 0.8])


def test_query_prior_learns_to_read_category_names_when_titles_say_nothing(planted):
    """Titles of random words from every topic (like film titles, they say nothing about
    the genre); the category names are the topics. On text alone the prior cannot find
    the user's topic; given the category view it learns to use it (w > 0) and the other
    half's recall rises well above both."""
    from directrec.generate.coldstart import fit_query_blend, sentence_cases, with_categories
    from directrec.generate.pipeline import ListOptions, recommend
    from directrec.text.encoder import encode
    from tests.conftest import TOPICS

    rng = np.random.default_rng(0)
    words = " ".join(TOPICS).split()
    n = planted.interactions.n_items
    vecs = encode([" ".join(rng.choice(words, 3, replace=False)) for _ in range(n)])
    names = [
        [TOPICS[int(c[0].removeprefix("topic"))].split()[0]] for c in planted.catalog.categories
    ]
    model = create("pop").fit(planted.interactions)
    seqs = planted.interactions.sequences()
    _, hists, sims, cat, truth = sentence_cases(seqs[::2], names, vecs)
    text_blend, text = fit_query_blend(model, hists, sims, truth)
    both_blend, both = fit_query_blend(model, hists, sims, truth, category_sims=cat)
    assert both["w"] > 0 and both["alpha"] > 0 and both["t"] > 0, both
    assert both["recall_blend"] > text["recall_blend"] + 0.05, (both, text)
    _, hists, sims, cat, truth = sentence_cases(seqs[1::2], names, vecs)
    h = Histories.from_lists(hists, model.n_items)

    def recall(s: np.ndarray, blend) -> float:
        opts = [ListOptions(query_sims=row, exclude_seen=False) for row in s]
        lists = recommend(model, h, opts, stages=Stages(query_blend=blend))
        return float(
            np.mean(
                [len(set(r.items.tolist()) & t) / 10 for r, t in zip(lists, truth, strict=True)]
            )
        )

    with_cat = recall(with_categories(sims, cat, both["w"]), both_blend)
    text_only = recall(sims, text_blend)
    assert with_cat > 1.5 * max(text_only, text["recall_popularity"]), (with_cat, text_only, text)


def test_id_head_view_reads_cold_items_through_their_codes(planted_embedded):
    """The ID + semantic hybrid with cold items held out: they are never the ID head's
    negatives (their item rows stay exactly zero), so the head scores them by their codes
    alone, and its best cold item is mostly from the user's own topic. The gate grid
    tries the head's view beside the text and latent views."""
    from directrec.data.split import leave_one_out
    from directrec.evaluate.protocol import validator
    from directrec.generate.coldstart import fit_cold_gate

    ds = planted_embedded
    data = ds.interactions
    item_topic = np.array([int(i[1:]) // 20 for i in ds.items.ids])
    user_topic = np.array([int(u[1:]) % 6 for u in ds.users.ids])
    cold = np.flatnonzero(np.array([int(i[1:]) % 20 < 2 for i in ds.items.ids]))
    v_fit, v_hist, v_t = leave_one_out(data).stage("valid")
    warm = lambda d: d.select(~np.isin(d.item, cold))  # noqa: E731
    settings = TEST_SETTINGS["semantic-id"] | {
        "arch": "causal",
        "item_embedding": True,
        "id_loss": 1.0,
        "epochs": 30,
        "eval_every": 5,
    }
    model = create("semantic-id", settings).fit(
        warm(v_fit), ds.catalog, validator=validator(warm(v_fit), v_t, seen=warm(v_hist))
    )
    allowed = model.net.id_allowed.cpu().numpy()
    assert not allowed[cold].any() and allowed[np.setdiff1d(np.arange(model.n_items), cold)].all()
    rows = model.net.item_emb.weight.detach().cpu()[torch.from_numpy(cold)]
    assert torch.count_nonzero(rows) == 0  # no gradient ever reached a cold item's row
    users = np.arange(data.n_users)
    hist = Histories.from_interactions(warm(v_hist), users)
    items, logp = model.generate(hist, 10)
    sims = model.cold_similarity(hist, items, logp, mix=0.0, view="id").numpy()
    assert sims.shape == (len(users), len(cold)) and (sims <= 0).all()  # log-probs / 10
    assert (item_topic[cold[sims.argmax(1)]] == user_topic).mean() > 0.5  # chance: 1/6
    h = Histories.from_interactions(warm(v_hist), v_t.users)
    _, table = fit_cold_gate(model, h, v_t.items[v_t.indptr[:-1]], k=10)
    assert {"id mix=0", "id mix=0.5", "text mix=0"} <= set(table["valid_cold_recall_by_view"])
    assert table["valid_cold_recall"] > table["valid_cold_recall_without"]
    # The validation estimate is what scoring does: for each gate family, the gate's
    # validation cold recall and warm retention are the ones its lists really get.
    targets = v_t.items[v_t.indptr[:-1]]
    is_cold = np.isin(targets, model.cold_items())
    ndcg = lambda top: np.where(  # noqa: E731
        (hit := top == targets[:, None]).any(1), 1.0 / np.log2(hit.argmax(1) + 2.0), 0.0
    )
    base = ndcg(torch.topk(model.score(h, k=10), 10, dim=1).indices.numpy())[~is_cold].mean()
    for mode in ("score", "place"):
        gate, table = fit_cold_gate(model, h, targets, k=10, modes=(mode,))
        assert gate is not None and gate.mode == mode
        scores = model.score(h, k=10)
        Stages(cold_gate=gate).apply_scores(model, h, scores)
        top = torch.topk(scores, 10, dim=1).indices.numpy()
        recall = (top[is_cold] == targets[is_cold, None]).any(1).mean()
        assert abs(recall - table["valid_cold_recall"]) < 0.03, (mode, recall, table)
        retention = ndcg(top)[~is_cold].mean() / base
        assert abs(retention - table["valid_warm_retention"]) < 0.02, (mode, retention, table)
        assert retention >= 0.94
        if mode == "place":  # admitted cold items sit at the gate's rank and below it
            in_cold = np.isin(top, model.cold_items())
            pos = np.nonzero(in_cold)[1]
            assert len(pos) and pos.min() >= gate.rank
            assert in_cold.sum(1).max() <= gate.slots
    # An id-view score gate gives every admitted cold item bias + scale · the ID head's
    # log-probability / 10, by hand.
    cold_t = torch.from_numpy(model.cold_items())
    gate = ColdGate(mode="score", view="id", mix=0.0, slots=len(cold_t), bias=-5.0, scale=1.0)
    scores = model.score(h, k=10)
    Stages(cold_gate=gate).apply_scores(model, h, scores)
    expected = -5.0 + model.cold_id_logp(h) / 10.0
    torch.testing.assert_close(scores[:, cold_t], expected, atol=1e-5, rtol=0)
