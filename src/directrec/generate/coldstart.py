"""Cold start for new users: a sentence ("sci-fi and thrillers from the 90s") or one or two
items is turned into a history the generator can read. The sentence is embedded with the
same text encoder as the items (all-MiniLM-L6-v2) and its nearest items become a pseudo
history, most similar last (the position a sequence model weighs most).

A history of one or two items says little, and a sequence model trained on long histories
over-reads it; `fit_prior_blend` learns, on validation users, how much popularity to mix
into the model's distribution at each short length (the `PriorBlend` stage applies it).

A pseudo history made from a sentence is not what the user watched: its items are the
sentence's nearest texts, often obscure. `fit_query_blend` learns how much of a
text-tilted popularity prior (p_i ∝ (pop_i + 1) · exp(t · s_i)) to mix into those rows'
lists; the `QueryBlend` stage applies it to every row that carries query similarities s.

s is the cosine of the sentence to the item's text, or (a learned share w of it) to the
closest of the item's category names: a film's text is mostly its title, which says
little about a request like "comedies and romances", while its genre names do."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from directrec.data.histories import Histories
from directrec.generate.stages import ColdGate, PriorBlend, QueryBlend, mix_log, query_log_prior
from directrec.models.base import Recommender

BLEND_LENGTHS = (1, 2, 3, 5, 10)


def sentence_history(
    query_vector: np.ndarray,
    item_vectors: np.ndarray,
    n: int = 5,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """The `n` items whose text is closest to the query (L2-normalised vectors), least
    similar first. `allowed` masks items the model can read (e.g. known to it)."""
    sims = item_vectors @ query_vector
    if allowed is not None:
        sims = np.where(allowed, sims, -np.inf)
    top = np.argsort(-sims, kind="stable")[:n]
    top = top[np.isfinite(sims[top])]
    return top[::-1].astype(np.int64)


def sentence_inputs(
    query_vector: np.ndarray,
    item_vectors: np.ndarray,
    model_index: np.ndarray,
    n_items: int,
    categories: CategoryIndex | None = None,
    category_weight: float = 0.0,
    n: int = 5,
) -> tuple[np.ndarray, np.ndarray | None]:
    """What a sentence-only request gives the pipeline (the service's and the CLI's):
    its `n` nearest items by text as a pseudo history (rows of `item_vectors`, least
    similar first), and every model item's similarity to it for the learned query prior
    ([n_items], text and category cosines mixed by `category_weight`; None unless every
    model item has a text row). `model_index[r]`: row r's model index, -1 if the model
    lacks it; `categories` rows follow `item_vectors`."""
    allowed = model_index >= 0
    sims = None
    if np.unique(model_index[allowed]).size == n_items:
        index = categories if category_weight > 0 else None
        sims = np.zeros(n_items, dtype=np.float32)
        mixed = query_similarities(query_vector, item_vectors, index, category_weight)[0]
        sims[model_index[allowed]] = mixed[allowed]
    return sentence_history(query_vector, item_vectors, n, allowed), sims


def category_sentence(items: Sequence[int], categories: Sequence[Sequence[str]], noun: str) -> str:
    """A request like a new user would type: the two most frequent categories of `items`
    ("Drama and Comedy movies"); "popular <noun>" when they have none."""
    counts: dict[str, int] = {}
    for i in items:
        for c in categories[int(i)]:
            counts[c] = counts.get(c, 0) + 1
    top = sorted(counts, key=lambda c: -counts[c])[:2]  # stable: first seen wins ties
    return " ".join([" and ".join(top) if top else "popular", noun]).strip()


@dataclass
class CategoryIndex:
    """The catalogue's category names as text vectors and each item's categories, so a
    sentence can be compared with what an item *is* rather than with its title."""

    vectors: np.ndarray  # [C, d] L2-normalised name embeddings
    slots: np.ndarray  # [n_items, m] each item's category numbers, -1 = none

    @classmethod
    def build(
        cls,
        categories: Sequence[Sequence[str]],
        encode: Callable[[list[str]], np.ndarray] | None = None,
    ) -> CategoryIndex:
        """`categories[i]`: item i's names; `encode` defaults to the item text encoder."""
        if encode is None:
            from directrec.text.encoder import encode
        names = sorted({c for cats in categories for c in cats})
        number = {c: j for j, c in enumerate(names)}
        m = max((len(c) for c in categories), default=0)
        slots = np.full((len(categories), max(m, 1)), -1, dtype=np.int64)
        for i, cats in enumerate(categories):
            slots[i, : len(cats)] = [number[c] for c in cats]
        vectors = encode(names) if names else np.zeros((0, 1), np.float32)
        return cls(np.asarray(vectors, dtype=np.float32), slots)

    def cosines(self, query_vectors: np.ndarray) -> np.ndarray:
        """[R, n_items]: each item's best cosine over its category names (NaN: none)."""
        q = np.atleast_2d(np.asarray(query_vectors, dtype=np.float32))
        out = np.full((len(q), len(self.slots)), -np.inf, dtype=np.float32)
        if len(self.vectors):
            by_name = q @ self.vectors.T  # [R, C]
            for j in range(self.slots.shape[1]):  # one [R, n_items] slice per slot
                has = self.slots[:, j] >= 0
                out[:, has] = np.maximum(out[:, has], by_name[:, self.slots[has, j]])
        out[np.isneginf(out)] = np.nan
        return out


def query_similarities(
    query_vectors: np.ndarray,
    item_vectors: np.ndarray,
    categories: CategoryIndex | None = None,
    category_weight: float = 0.0,
) -> np.ndarray:
    """s [R, n_items] = (1 - w) · cos(query, item text) + w · cos(query, the item's closest
    category name); items without categories keep their text cosine."""
    text = (np.atleast_2d(query_vectors) @ item_vectors.T).astype(np.float32)
    if categories is None or category_weight <= 0.0:
        return text
    return with_categories(text, categories.cosines(query_vectors), category_weight)


def with_categories(text: np.ndarray, by_category: np.ndarray, w: float) -> np.ndarray:
    """(1 - w) · text cosines + w · category cosines (NaN, no category: the text's)."""
    cat = np.where(np.isnan(by_category), text, by_category)
    return ((1.0 - w) * text + w * cat).astype(np.float32)


def fit_query_blend(
    model: Recommender,
    histories: Sequence[np.ndarray],
    sims: np.ndarray,
    truths: Sequence[set[int]],
    k: int = 10,
    alphas: Sequence[float] = tuple(np.linspace(0.0, 1.0, 21)),
    temperatures: Sequence[float] = (0.0, 2.0, 5.0, 10.0, 20.0, 40.0),
    category_sims: np.ndarray | None = None,
    category_weights: Sequence[float] = (0.0, 0.5, 1.0),
) -> tuple[QueryBlend, dict]:
    """Learn (alpha, t, w) of the query prior on validation requests: each row is a pseudo
    history made from a sentence (`sentence_history`), its item text cosines to the
    sentence, optionally its category cosines (`CategoryIndex.cosines`, mixed in with
    weight w by `query_similarities`), and the user's true next items. The best Recall@k
    wins (ties: the smaller t, then w, then alpha). Returns the stage, and a table with
    the choice and the recall of the model alone, of popularity (alpha 1, t 0) and of the
    blend. The pseudo history's items stay eligible: the user never saw them (the service
    does not exclude them from sentence-only lists either). `model.score` is the model's
    own: no stage is applied while this one is fitted."""
    hist = Histories.from_lists(list(histories), model.n_items)
    log_p = torch.log_softmax(model.score(hist).float(), dim=1)
    views = {0.0: sims}  # each category share's similarities, mixed once
    for w in category_weights if category_sims is not None else ():
        if w > 0.0:
            views[float(w)] = with_categories(sims, category_sims, float(w))

    def recall(scores: torch.Tensor) -> float:
        top = torch.topk(scores, k, dim=1).indices.numpy()
        return float(
            np.mean([len(t & set(r.tolist())) / k for r, t in zip(top, truths, strict=True)])
        )

    best = {"alpha": 0.0, "t": 0.0, "w": 0.0, "recall": recall(log_p)}
    table = {"recall_model": best["recall"]}
    for t, (w, s) in itertools.product(temperatures, views.items()):
        if t == 0.0 and w > 0.0:
            continue  # without a tilt the similarities do not matter
        prior = query_log_prior(torch.as_tensor(s, dtype=torch.float32), model.popularity, t)
        for a in alphas:
            if a <= 0.0:
                continue
            rec = recall(mix_log(log_p, prior, float(a)))
            if t == 0.0 and a >= 1.0:
                table["recall_popularity"] = rec
            if rec > best["recall"] + 1e-12:
                best = {"alpha": float(a), "t": float(t), "w": float(w), "recall": rec}
    stage = QueryBlend(best["alpha"], best["t"], best["w"])
    return stage, table | {
        "alpha": best["alpha"],
        "t": best["t"],
        "w": best["w"],
        "recall_blend": best["recall"],
        "cases": len(truths),
    }


def fit_prior_blend(
    model: Recommender,
    sequences: Sequence[np.ndarray],
    lengths: Sequence[int] = BLEND_LENGTHS,
    k: int = 10,
    grid: Sequence[float] = tuple(np.linspace(0.0, 1.0, 21)),
) -> tuple[PriorBlend | None, dict]:
    """Learn the popularity weight per history length on validation users' sequences (not
    trained on): each is cut to its first L items, the next `k` items are the targets, and
    the weight with the best Recall@k wins (ties: the smaller). Returns the stage (None
    when no length had 20 cases) and the table with each length's recall before and after."""
    pop = torch.from_numpy(model.popularity).float()
    pop = pop / pop.sum().clamp(min=1e-12)
    table = {"lengths": [], "alpha": [], "cases": [], "recall_model": [], "recall_blend": []}
    for length in lengths:
        rows = [s for s in sequences if len(s) >= length + 1]
        if len(rows) < 20:
            continue
        hist = Histories.from_lists([s[:length] for s in rows], model.n_items)
        truth = [set(s[length : length + k].tolist()) for s in rows]
        scores = model.score(hist)
        seen = torch.from_numpy(hist.matrix("binary").toarray() > 0)
        p = torch.softmax(scores, dim=1)
        best, recalls = (0.0, -1.0), []
        for a in grid:
            mixed = ((1 - a) * p + a * pop).masked_fill(seen, -1.0)
            top = torch.topk(mixed, k, dim=1).indices.numpy()
            rec = float(
                np.mean([len(t & set(r.tolist())) / k for r, t in zip(top, truth, strict=True)])
            )
            recalls.append(rec)
            if rec > best[1] + 1e-12:
                best = (float(a), rec)
        table["lengths"].append(int(length))
        table["alpha"].append(best[0])
        table["cases"].append(len(rows))
        table["recall_model"].append(recalls[0])
        table["recall_blend"].append(best[1])
    if not table["lengths"]:
        return None, table
    return PriorBlend(tuple(table["lengths"]), tuple(table["alpha"])), table


def fit_cold_gate(
    model: Recommender,
    histories: Histories,
    targets: np.ndarray,
    k: int = 10,
    min_warm: float = 0.95,
    mixes: Sequence[float] = (0.0, 0.5, 1.0),
    scales: Sequence[float] = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0),
    biases: Sequence[float] | None = None,
    slots: Sequence[int] = (1, 2, 3),
    admit: Sequence[float] = tuple(np.linspace(0.0, 0.9, 10)),
    modes: Sequence[str] = ("score", "place"),
) -> tuple[ColdGate | None, dict]:
    """Learn, on validation cases (one target item per history row), how cold items enter
    a semantic-ID model's lists. Two gate families, one grid:

    - `score`: a cold item scores `bias + scale * cos(...)` against the beam's
      log-probabilities (`SemanticID.cold_similarity` with `mix`), so it enters
      high where the beam is unsure and low where it is confident (`biases` by default
      reach 10 below the 1st percentile of the lists' k-th log-probability);
    - `place`: reserved slots. A user's best-matching cold items whose similarity clears
      `threshold` enter the generated list at rank `rank` (0-based), pushing the warm items
      from there down; the threshold is a quantile (`admit`) of validation users' best
      cold similarity, so the gate can learn to reserve a slot only when a match is good.

    Either way at most `slots` cold items (a user's best-matching ones) may enter a list;
    `modes` names the families searched.
    The gate kept is the one with the best Recall@k on cold-target cases whose warm-case
    NDCG@k stays at least `min_warm` of the model's without the gate (ties: the better
    NDCG@k over all cases). Returns the gate (None when no gate beats the model without
    one on cold recall) and its validation figures."""
    cold = model.cold_items()
    beam = max(int(model.config.beam), k)
    parts = [  # in batches: a wide beam over every validation user at once is GBs
        model.generate(histories.take(np.arange(b, min(b + 2048, len(histories)))), beam)
        for b in range(0, len(histories), 2048)
    ]  # every batch has the same width (the beam, or what the trie allows)
    items, logp = (torch.cat(x) for x in zip(*parts, strict=True))
    items, logp = items.numpy(), logp.numpy()
    targets = np.asarray(targets)
    cold_index = {int(c): j for j, c in enumerate(cold)}
    t_cold = np.array([cold_index.get(int(t), -1) for t in targets])  # column in `sims`
    is_cold = t_cold >= 0
    c_rows = np.flatnonzero(is_cold)
    gain = lambda r: np.where(r < k, 1.0 / np.log2(np.minimum(r, k) + 2.0), 0.0)  # noqa: E731
    # Without the gate: the target's place in the generated list (k or more if absent).
    hit = items == targets[:, None]
    base_rank = np.where(hit.any(1), hit.argmax(1), k)
    warm_rows = np.flatnonzero(~is_cold)
    base_warm = float(gain(base_rank[warm_rows]).mean()) if len(warm_rows) else 0.0
    # With the gate, generated cold items are replaced by the gated cold scores: warm
    # targets move down by the cold items that overtake them.
    warm_beam = np.where(np.isin(items, cold) | (items < 0), -np.inf, logp)
    order = np.argsort(-warm_beam, axis=1, kind="stable")
    warm_sorted = np.take_along_axis(warm_beam, order, 1)
    warm_items = np.take_along_axis(items, order, 1)
    w_hit = warm_items == targets[:, None]
    w_pos = np.where(w_hit.any(1), w_hit.argmax(1), k)
    n_warm = np.isfinite(warm_sorted).sum(1)  # generated warm items per row
    if biases is None:  # down to below (nearly) every list's k-th log-probability: a
        # confident model (or a large ID-head blend) puts it far under -30
        kth = warm_sorted[:, min(k, warm_sorted.shape[1]) - 1]
        kth = kth[np.isfinite(kth)]
        low = np.floor(np.percentile(kth, 1)) - 10.0 if len(kth) else -30.0
        biases = tuple(np.arange(min(low, -30.0), 5.01, 0.5))
    t_logp = np.where(
        w_hit.any(1), warm_sorted[np.arange(len(items)), w_pos.clip(max=beam - 1)], -np.inf
    )
    best: dict = {}
    by_view: dict[str, float] = {}  # each view's best valid cold recall within the warm rule
    grid = [("latent", m) for m in mixes]
    if getattr(model, "text_vectors", None) is not None:
        grid += [("text", m) for m in mixes]
    if getattr(getattr(model, "net", None), "id_loss", 0.0) > 0:  # the ID head's own view
        grid += [("id", m) for m in (0.0, 0.25, 0.5, 0.75)]

    def consider(gate: dict, warm_rank: np.ndarray, c_rank: np.ndarray) -> None:
        """Score one candidate gate from the ranks it gives warm and cold targets (k or
        more: out of the list); keep it if it beats the best within the warm rule."""
        nonlocal best
        warm_rank = np.where(w_hit.any(1), warm_rank, k)
        g_warm = gain(warm_rank[warm_rows]).mean() if len(warm_rows) else 0.0
        retention = g_warm / base_warm if base_warm > 0 else 1.0
        if retention < min_warm:
            return
        recall = float((c_rank < k).mean()) if len(c_rows) else 0.0
        overall = (g_warm * len(warm_rows) + gain(c_rank).sum()) / max(len(targets), 1)
        name = f"{gate['view']} mix={gate['mix']:g}" + (" place" if gate["mode"] == "place" else "")
        by_view[name] = max(by_view.get(name, 0.0), recall)
        if not best or (recall, overall) > best["key"]:
            best = {
                "key": (recall, overall),
                "gate": gate,
                "valid_cold_recall": recall,
                "valid_warm_retention": float(retention),
                "valid_ndcg": float(overall),
            }

    # the ID head's view of the cold items is one encoder pass, shared by its grid points
    id_cold = model.cold_id_logp(histories) if any(g[0] == "id" for g in grid) else None
    for view, mix in grid:
        sims = model.cold_similarity(
            histories,
            torch.from_numpy(items),
            torch.from_numpy(logp),
            mix=mix,
            view=view,
            id_cold=id_cold,
        ).numpy()
        top = -np.sort(-sims, axis=1)[:, :k]  # each row's k best cold similarities
        s_t = sims[c_rows, t_cold[c_rows]]
        above = (sims[c_rows] > s_t[:, None]).sum(1)  # cold items ahead of the target
        caps = sorted({min(int(m), k) for m in slots} | {k})  # k: no cap
        view_of = {"view": view, "mix": float(mix)}
        for scale, bias, m in itertools.product(scales, biases, caps if "score" in modes else ()):
            c_rank = above + (warm_sorted[c_rows] > (bias + scale * s_t)[:, None]).sum(1)
            consider(
                {
                    "mode": "score",
                    **view_of,
                    "scale": float(scale),
                    "bias": float(bias),
                    "slots": m,
                },
                w_pos + (bias + scale * top[:, :m] > t_logp[:, None]).sum(1),
                np.where(above < m, c_rank, k),  # only the best m cold items enter
            )
        # Reserved slots: admitted cold items take ranks rank, rank + 1, … of the list.
        use = "place" in modes and len(top)
        taus = sorted({float(t) for t in np.quantile(top[:, 0], admit)}) if use else []
        for m, tau, place in itertools.product(caps, taus, range(k)):
            admitted = (top[:, :m] >= tau).sum(1)
            c_rank = np.minimum(place, n_warm[c_rows]) + above
            consider(
                {"mode": "place", **view_of, "threshold": tau, "rank": place, "slots": m},
                np.where(w_pos >= place, w_pos + admitted, w_pos),
                np.where((above < m) & (s_t >= tau), c_rank, k),
            )
    table = {
        "cases": len(targets),
        "cold_cases": int(is_cold.sum()),
        "cold_items": len(cold),
        "valid_cold_recall_without": float((base_rank[is_cold] < k).mean())
        if is_cold.any()
        else 0.0,
        "valid_warm_ndcg_without": base_warm,
        "valid_cold_recall_by_view": {v: round(r, 4) for v, r in by_view.items()},
    }
    if best and best["valid_cold_recall"] > table["valid_cold_recall_without"]:
        table |= {k2: v for k2, v in best.items() if k2 != "key"}
        return ColdGate(**best["gate"]), table
    table["gate"] = None
    return None, table


def sentence_cases(
    sequences: Sequence[np.ndarray],
    categories: Sequence[Sequence[str]],
    item_vectors: np.ndarray,
    noun: str = "",
    shown: int = 5,
    k: int = 10,
) -> tuple[list[str], list[np.ndarray], np.ndarray, np.ndarray, list[set[int]]]:
    """Requests as new users would type them, from held-out users' sequences: the sentence
    names the categories of their first `shown` items, its `shown` nearest items are the
    pseudo history, and their next `k` items are the truth. Returns (sentences, pseudo
    histories, item text cosines [R, n_items], item category cosines [R, n_items] (NaN:
    no category), truths); `item_vectors` are L2-normalised."""
    from directrec.text.encoder import encode

    rows = [s for s in sequences if len(s) > shown]
    sentences = [category_sentence(s[:shown], categories, noun) for s in rows]
    q = encode(sentences) if sentences else np.zeros((0, item_vectors.shape[1]), np.float32)
    sims = query_similarities(q, item_vectors)
    by_category = CategoryIndex.build(categories, encode).cosines(q)
    hists = [sentence_history(v, item_vectors, shown) for v in q]
    truths = [set(s[shown : shown + k].tolist()) for s in rows]
    return sentences, hists, sims, by_category, truths
