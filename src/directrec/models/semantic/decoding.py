"""Decoding: batched beam search over a prefix trie of the catalogue's codes, so every
written item exists and is unseen; the ID + semantic hybrid rescores the beam with its ID
head and may add that head's own proposals."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import math
from collections.abc import Iterator
from typing import Self

import numpy as np
import torch
import torch.nn.functional as F

from directrec.data.histories import Histories
from directrec.models.base import beam_width
from directrec.models.candidates import Candidates
from directrec.models.settings import Checks, DecodingConfig, setting


# ----------------------------------------------------------------------------- settings
@dataclasses.dataclass
class SemanticDecoding(DecodingConfig):
    """How the beam search writes a list, and how the ID + semantic hybrid rescores it."""

    beam: int = setting(50, "beams kept per step (≥ the k you evaluate)")
    # ID + semantic hybrid: the ID head's best N unseen items join the beam's candidates,
    # each scored like a beam item (its code log-prob, teacher-forced through the same
    # decoder, + w · the ID head's); 0 = the beam's items alone
    id_candidates: int = setting(
        100, "the ID head's best unseen items that join the beam's candidates (0 = none)"
    )
    # w above: the ID head's weight in the beam's score (models with an ID head). Chosen
    # on validation after training from ID_WEIGHTS when the fit has a validator.
    id_weight: float = setting(
        1.0, "the ID head's weight in the beam's score (chosen on validation when validating)"
    )
    # How the ID head finds its proposals and scores the beam: `exact` scores every item;
    # `ivf` searches an inverted-file index over its output vectors (models/ann.py),
    # reading about `id_probe` of them per call (at 10^6 items the exact scan is most of a
    # one-user call). ivf may miss some of the head's best items, and the head's
    # log-softmax normaliser is estimated (a lower bound) rather than summed.
    id_search: str = setting(
        "exact", "the ID head's search: exact (every item) or ivf (an approximate index)"
    )
    id_probe: float = setting(0.05, "ivf: the share of the index's lists one query searches")
    temperature: float = setting(1.0, "sampling temperature of the code tokens")
    sample: bool = setting(False, "Gumbel top-k instead of top-k: diverse, stochastic lists")

    def checks(self) -> Checks:
        return {
            "beam": (self.beam >= 1, ">= 1"),
            "id_candidates": (self.id_candidates >= 0, ">= 0"),
            "id_weight": (self.id_weight >= 0, ">= 0"),
            "id_search": (self.id_search in ("exact", "ivf"), "exact or ivf"),
            "id_probe": (0 < self.id_probe <= 1, "in (0, 1]"),
            "temperature": (self.temperature > 0, "> 0"),
        }


# ----------------------------------------------------------------------------- trie
class CodeTrie:
    """Prefix trie of all items' codes as dense child tables: `child[j][node, token]` is the
    node at depth j+1 (at the last depth: the item index), or -1 if no item has that prefix."""

    def __init__(self, codes: np.ndarray, sizes: list[int]) -> None:
        n, depth = codes.shape
        self.child: list[torch.Tensor] = []
        self.item_node: list[torch.Tensor] = []  # [j]: each item's node at depth j + 1
        self.below: list[torch.Tensor] = []  # [j]: how many items each depth-(j+1) node holds
        parent = np.zeros(n, dtype=np.int64)  # every item starts at the root (node 0)
        n_nodes = 1
        for j in range(depth):
            table = torch.full((n_nodes, sizes[j]), -1, dtype=torch.long)
            if j == depth - 1:
                nxt, n_next = np.arange(n), n
            else:
                _, nxt = np.unique(codes[:, : j + 1], axis=0, return_inverse=True)
                nxt = nxt.ravel()
                n_next = int(nxt.max()) + 1
            table[torch.from_numpy(parent), torch.from_numpy(codes[:, j])] = torch.from_numpy(nxt)
            self.child.append(table)
            self.item_node.append(torch.from_numpy(nxt))
            self.below.append(torch.bincount(self.item_node[-1], minlength=n_next))
            parent, n_nodes = nxt, n_next

    def to(self, device: torch.device) -> CodeTrie:
        """The same trie with its tables on `device` (beam search runs where the net is)."""
        self.child = [t.to(device) for t in self.child]
        self.item_node = [t.to(device) for t in self.item_node]
        self.below = [t.to(device) for t in self.below]
        return self

    def open_nodes(
        self, rows: torch.Tensor, items: torch.Tensor, n_rows: int
    ) -> list[torch.Tensor]:
        """Per depth, [n_rows, n_nodes] bool: whether a node still has an item below it that
        its row has not seen (`rows`, `items`: the distinct seen pairs). Beams through the
        other nodes could only end on seen items. Only nodes above a seen item can close, so
        counting costs what the histories hold; the masks are one byte per (row, node)."""
        out = []
        for nodes, below in zip(self.item_node, self.below, strict=True):
            key = rows * len(below) + nodes[items]
            key, count = torch.unique(key, return_counts=True)
            mask = torch.ones(n_rows * len(below), dtype=torch.bool, device=below.device)
            mask[key[count >= below[key % len(below)]]] = False
            out.append(mask.view(n_rows, len(below)))
        return out


def blended(score: torch.Tensor, id_at: torch.Tensor | None, weight: float) -> torch.Tensor:
    """The hybrid's score of each candidate: its code log-prob + `weight` · the ID head's
    log-softmax at it (`id_at`, [B, candidates]; the code score alone without either)."""
    return score if weight <= 0 or id_at is None else score + weight * id_at


class Decoding:
    """The semantic-ID model's generation methods (mixed into `SemanticID`)."""

    def generate(
        self, histories: Histories, beam: int | None = None, exclude_seen: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Beam search over the trie: items [B, beam] (-1 where fewer exist) and their
        log-probabilities, best first. Every item is a catalogue item, unseen if asked.
        With `id_candidates` N, the ID head's proposals widen it to [B, beam + N]."""
        return self._generate(histories, beam, exclude_seen)

    def codes_only(self) -> Self | None:
        """This model decoding by its semantic codes alone: the same network and beam, no
        ID-head proposals and no ID weight in the beam's score (a view sharing the
        network, for reporting what the codes contribute). None when it already does."""
        c = self.config
        if self.net.id_loss <= 0 or (c.id_candidates == 0 and c.id_weight == 0):
            return None
        view = copy.copy(self)
        view.config = dataclasses.replace(c, id_candidates=0, id_weight=0.0)
        view._candidate_cache = None
        return view

    @torch.no_grad()  # every caller (`generate`, `_score`) is inference
    def _generate(
        self, histories: Histories, beam: int | None = None, exclude_seen: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`generate`, on the model's device until the final sort."""
        blend = self.config.id_weight if self.net.id_loss > 0 else 0.0
        cache = getattr(self, "_candidate_cache", None)
        if cache is not None:  # a weight sweep: search each batch once
            c = self.config
            digest = hashlib.sha1(histories.indptr.tobytes() + histories.items.tobytes())
            key = (digest.digest(), beam, exclude_seen, blend > 0)
            key += (c.id_candidates, c.id_search, c.id_probe, c.temperature, c.sample)
            if key not in cache:
                cache[key] = self._candidates(histories, beam, exclude_seen, blend > 0)
            items, score, id_at = cache[key]
        else:
            items, score, id_at = self._candidates(histories, beam, exclude_seen, blend > 0)
        score = blended(score, id_at, blend)
        order = score.argsort(1, descending=True)
        return items.gather(1, order).cpu(), score.gather(1, order).cpu()

    @contextlib.contextmanager
    def reusing_candidates(self) -> Iterator[dict]:
        """Within the block each batch's candidates (beam search and ID proposals) are
        searched once and reused by later scoring of the same histories with the same
        beam and proposals, so a sweep over the ID weight re-blends instead of searching
        again (same scores). Yields the cache: {key: (items, code log-probs, the ID head's
        log-softmax at those items or None)}, [B, candidates] each. Not for serving threads."""
        self._candidate_cache: dict | None = {}
        try:
            yield self._candidate_cache
        finally:
            self._candidate_cache = None

    @torch.no_grad()
    def _candidates(
        self, histories: Histories, beam: int | None, exclude_seen: bool, id_head: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The trie beam's items [B, W] (-1: none) and their code log-probs, unsorted and
        unblended, widened by the ID head's proposals (`id_candidates`); and the ID head's
        log-softmax at those items when the model has that head and `id_head` or proposals
        ask for it, else None."""
        c, net, trie = self.config, self.net, self.trie
        dev = self.device
        hist, pad = self._windows(histories.indptr[:-1], histories.indptr[1:], histories.items)
        pad = pad.to(dev)
        memory = net.encode(self._inputs(hist), pad)
        b, w = len(histories), beam or c.beam
        if net.causal:  # the newest position is the context for the next item
            memory, pad = memory[:, -1:], torch.zeros(b, 1, dtype=torch.bool, device=dev)
        kvs = net.memory_kvs(memory)
        gen = torch.Generator().manual_seed(c.seed)
        node = torch.zeros(b, 1, dtype=torch.long, device=dev)  # root
        score = torch.zeros(b, 1, device=dev)
        prefix = torch.zeros(b, 1, 0, dtype=torch.long, device=dev)
        open_nodes, seen = None, None
        if exclude_seen:
            m = histories.matrix().tocoo()
            seen = (torch.from_numpy(m.row).long().to(dev), torch.from_numpy(m.col).long().to(dev))
            open_nodes = trie.open_nodes(*seen, b)
        for j, size in enumerate(self.sizes):
            h = net.decode(prefix, kvs, pad)[:, :, -1]  # [b, k, dim]
            logp = F.log_softmax(net.level_logits(h, j) / c.temperature, -1)
            nxt = trie.child[j][node]  # [b, k, size]
            allowed = nxt >= 0
            if open_nodes is not None:  # only prefixes that can still end on an unseen item
                allowed &= open_nodes[j].gather(1, nxt.clamp(min=0).view(b, -1)).view_as(nxt)
            cand = torch.where(allowed, score.unsqueeze(-1) + logp, -torch.inf).view(b, -1)
            rank_by = cand
            if c.sample:
                u = torch.rand(cand.shape, generator=gen).clamp(1e-9, 1 - 1e-9).to(dev)
                gumbel = -torch.log(-torch.log(u))
                rank_by = cand + gumbel
            top = torch.topk(rank_by, min(w, cand.shape[1]), dim=1).indices
            score = cand.gather(1, top)
            beam_idx, tok = top // size, top % size
            node = nxt.view(b, -1).gather(1, top)
            prefix = torch.cat(
                [prefix.gather(1, beam_idx.unsqueeze(-1).expand(-1, -1, j)), tok.unsqueeze(-1)], 2
            )
        items = torch.where(torch.isfinite(score), node, torch.full_like(node, -1))
        extra = c.id_candidates if net.id_loss > 0 else 0
        if net.id_loss <= 0 or not (id_head or extra > 0):
            return items, score, None
        beam_logit, prop, prop_logit, log_norm = self._id_head(
            memory[:, -1], items, extra, histories, seen
        )
        id_at = beam_logit - log_norm.unsqueeze(1)
        if extra > 0:
            prop_at = prop_logit - log_norm.unsqueeze(1)
            items, score, id_at = self._add_id_candidates(
                items, score, id_at, prop, prop_at, kvs, pad
            )
        return items, score, id_at

    def _id_head(
        self,
        state: torch.Tensor,
        items: torch.Tensor,
        n: int,
        histories: Histories,
        seen: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """The ID head after the newest position's `state` [B, dim]: its logits at the
        beam's `items` [B, W]; its best `n` items not `seen` ((rows, items) pairs; None:
        any) and their logits ([B, n], -1 / -inf where none; None when `n` is 0); and the
        log of its softmax's normaliser [B] (exact, or with `id_search = ivf` estimated
        from the probed lists: models/ann.py)."""
        c, net, dev = self.config, self.net, state.device
        prop = prop_logit = None
        if c.id_search == "ivf":
            index = net.id_index(c.seed)
            none = np.zeros(0, np.int64)
            exclude = [histories[r] if seen is not None else none for r in range(len(state))]
            probe = math.ceil(c.id_probe * index.n_lists)
            prop, prop_logit, log_norm = (t.to(dev) for t in index.search(state, n, probe, exclude))
            table = net.id_table()
            beam_logit = (table[items.clamp(min=0)] * state.unsqueeze(1)).sum(-1).float()
            # the beam's own items are part of the sum too: a second lower bound of it
            written = torch.where(items >= 0, beam_logit, -torch.inf)
            return beam_logit, prop, prop_logit, torch.maximum(log_norm, written.logsumexp(1))
        logits = net.id_logits(state).float()
        if n > 0:
            ranked = logits
            if seen is not None:
                ranked = logits.index_put(seen, torch.tensor(-torch.inf, device=dev))
            top = torch.topk(ranked, min(n, ranked.shape[1]), dim=1)
            prop_logit = top.values
            prop = torch.where(torch.isfinite(prop_logit), top.indices, -1)
        return logits.gather(1, items.clamp(min=0)), prop, prop_logit, logits.logsumexp(-1)

    def _add_id_candidates(
        self,
        items: torch.Tensor,
        score: torch.Tensor,
        id_at: torch.Tensor,
        prop: torch.Tensor,
        prop_at: torch.Tensor,
        kvs: list,
        pad: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The beam's items [B, W], code log-probs and ID log-probs, widened by the ID
        head's proposals `prop` [B, n] (its best unseen items, -1: none) and their ID
        log-probs ([B, W + n]; -1 / -inf where a proposal duplicates a beam item). A
        proposal's code log-prob is what the beam would have given it: the sum of its code
        tokens' log-softmax, teacher-forced."""
        net, c = self.net, self.config
        dup = (prop.unsqueeze(-1) == items.unsqueeze(1)).any(-1) | (prop < 0)
        codes = net.all_codes[prop.clamp(min=0)]  # [B, n, levels + 1]
        h = net.decode(codes[..., :-1], kvs, pad)  # [B, n, levels + 1, dim]
        logp = sum(
            F.log_softmax(net.level_logits(h[:, :, j], j) / c.temperature, -1)
            .gather(-1, codes[..., j : j + 1])
            .squeeze(-1)
            for j in range(len(self.sizes))
        )
        logp = torch.where(dup, -torch.inf, logp)
        prop = torch.where(dup, -1, prop)
        return (
            torch.cat([items, prop], 1),
            torch.cat([score, logp], 1),
            torch.cat([id_at, prop_at], 1),
        )

    def _top(self, histories: Histories, k: int) -> Candidates:
        """The generated items with their beam log-probabilities. Cold items enter only
        what the beam writes; a fitted `ColdGate` stage (generate/stages.py) adds them from
        where the list points."""
        items, logp = self._generate(histories, beam_width(self.config.beam, k, self.n_items))
        return Candidates.of(items, logp)
