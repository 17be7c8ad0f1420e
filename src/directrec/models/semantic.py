"""Semantic-ID generator (TIGER-style generative retrieval): the model writes the next
item's semantic ID token by token, and beam search constrained by a prefix trie of the
catalogue's IDs guarantees every generated item exists and is unseen by the user.

- Item text → all-MiniLM-L6-v2 embeddings → RQ-VAE codes (`text/semantic_ids.py`) + a
  uniqueness token: item i ↦ (c0, c1, c2, u).
- History encoder: the user's last `max_len` items, each the sum of its code-token
  embeddings (so an item never seen in training still has a representation), plus
  position embeddings.
- Code decoder: [BOS, c0, c1, c2] → predicts (c0, c1, c2, u), one output table per level,
  tied to that level's input embeddings.
- Two architectures (`arch`), both measured in docs/benchmarks.md:
  `causal` (decoder-only): the history encoder is causal, so every position's
  state is a context and every next item is a training target in one pass; the code
  decoder cross-attends to that single state. `encdec` (TIGER, the default: it measured
  better, docs/benchmarks.md): a bidirectional encoder; the decoder cross-attends to the
  whole history; one (history, target) pair per sample.
- Generation: batched beam search over the trie; `temperature` and `sample` (Gumbel top-k,
  a stochastic beam search) trade accuracy for diversity.

Items with text but no interactions get codes too and can be generated (cold start).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from directrec.data.dataset import Catalog, Interactions
from directrec.data.histories import Histories
from directrec.models import distributed
from directrec.models.base import Capabilities, Recommender, Validator, beam_width
from directrec.models.training import (
    EpochRun,
    TrainConfig,
    check,
    make_optimizer,
    rank_zero,
    train_by_epochs,
)
from directrec.models.transformer import (
    Block,
    causal_padding_mask,
    padding_mask,
)
from directrec.text.semantic_ids import RQVAE, RQVAEConfig, code_report, make_unique, train_rqvae


# ----------------------------------------------------------------------------- trie
class CodeTrie:
    """Prefix trie of all items' codes as dense child tables: `child[j][node, token]` is the
    node at depth j+1 (at the last depth: the item index), or -1 if no item has that prefix."""

    def __init__(self, codes: np.ndarray, sizes: list[int]) -> None:
        n, depth = codes.shape
        self.child: list[torch.Tensor] = []
        self.item_node: list[torch.Tensor] = []  # [j]: each item's node at depth j + 1
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
            parent, n_nodes = nxt, n_next

    def to(self, device: torch.device) -> CodeTrie:
        """The same trie with its tables on `device` (beam search runs where the net is)."""
        self.child = [t.to(device) for t in self.child]
        self.item_node = [t.to(device) for t in self.item_node]
        return self

    def open_nodes(self, seen: torch.Tensor) -> list[torch.Tensor]:
        """Per user (rows of a [B, n_items] seen mask) and depth: which nodes still have an
        unseen item below them. Beams through other nodes could only end on seen items."""
        out = []
        for j, nodes in enumerate(self.item_node):
            n_nodes = len(self.child[j + 1]) if j + 1 < len(self.child) else len(nodes)
            total = torch.bincount(nodes, minlength=n_nodes)
            seen_below = torch.zeros(len(seen), n_nodes, device=seen.device)
            seen_below.index_add_(1, nodes, seen.float())
            out.append(seen_below < total)
        return out


# ----------------------------------------------------------------------------- network
class DecoderBlock(nn.Module):
    """Pre-norm decoder block: causal self-attention within each beam, cross-attention to
    the user's history, MLP. Cross-attention keys/values are computed once per user and
    shared by all of that user's beams (the beams ride on the query axis)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.cross_proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def split(self, x: torch.Tensor) -> torch.Tensor:  # [..., n, d] → [..., h, n, d/h]
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(memory).chunk(2, -1)
        return self.split(k), self.split(v)  # [B, h, S, d/h]

    def forward(
        self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], pad: torch.Tensor
    ) -> torch.Tensor:
        """x [B, W, t, d] (W beams per user); pad [B, S] marks history padding."""
        b, w, t, d = x.shape
        p = self.dropout if self.training else 0.0
        q, k, v = (self.split(z) for z in self.qkv(self.ln1(x)).chunk(3, -1))  # [B, W, h, t, d/h]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        x = x + F.dropout(self.proj(y.transpose(-3, -2).flatten(-2)), p, self.training)
        q = self.split(self.q(self.ln2(x)).reshape(b, w * t, d))  # [B, h, W·t, d/h]
        mask = ~pad[:, None, None, :]  # [B, 1, 1, S]
        y = F.scaled_dot_product_attention(q, *kv, attn_mask=mask, dropout_p=p)
        y = y.transpose(1, 2).reshape(b, w, t, d)
        x = x + F.dropout(self.cross_proj(y), p, self.training)
        return x + F.dropout(self.mlp(self.ln3(x)), p, self.training)


class SemanticNet(nn.Module):
    """History encoder → code decoder. Both architectures use the same pre-norm `Block`
    (GELU MLP, final LayerNorm) and differ only where they must: `causal` masks the encoder
    causally and decodes from each position's own state (every position is a training
    target); `encdec` encodes bidirectionally and the decoder cross-attends to the whole
    history (one target per sample)."""

    def __init__(
        self,
        sizes: list[int],
        max_len: int,
        dim: int,
        heads: int,
        enc_layers: int,
        dec_layers: int,
        dropout: float,
        causal: bool,
        n_items: int = 0,
        id_loss: float = 0.0,
        codes: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.sizes, self.max_len, self.causal = sizes, max_len, causal
        self.id_loss = id_loss
        # every item's full code (levels + uniqueness), for the ID head's output vectors
        self.register_buffer("all_codes", codes if codes is not None else torch.zeros(0, 1), False)
        # items the ID head may be trained on (None: all): items with no training
        # interactions are never negatives, so cold items keep their codes' score
        self.id_allowed: torch.Tensor | None = None
        self.tok = nn.ModuleList(nn.Embedding(v, dim) for v in sizes)  # one table per level
        # ID + semantic hybrid: a per-item input embedding added to the code embeddings
        # (zero at start, so an item the model never trained on reads as its codes alone)
        self.item_emb = nn.Embedding(n_items, dim) if n_items > 0 else None
        if self.item_emb is not None:
            nn.init.zeros_(self.item_emb.weight)
        self.pos = nn.Embedding(max_len, dim)
        self.level = nn.Embedding(len(sizes) + 1, dim)  # decoder: BOS + one per level
        self.drop = nn.Dropout(dropout)
        self.enc = nn.ModuleList(Block(dim, heads, dropout) for _ in range(enc_layers))
        self.enc_ln = nn.LayerNorm(dim)
        self.dec = nn.ModuleList(DecoderBlock(dim, heads, dropout) for _ in range(dec_layers))
        self.ln = nn.LayerNorm(dim)
        for e in self.tok:
            nn.init.normal_(e.weight, std=dim**-0.5)

    def forward(
        self,
        hist_codes: torch.Tensor,
        pad: torch.Tensor,
        targets: torch.Tensor,
        next_items: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The teacher-forced training pass → summed cross-entropy over the code levels
        (+ `id_loss` × the ID head's cross-entropy over all items, given `next_items`).

        hist_codes [B, S, levels] (left-padded; `pad` [B, S] marks padding). Targets are the
        next item's full code (levels + uniqueness token): encdec [B, L+1], the item after
        the whole history; causal [B, S, L+1], the item after each position (-1: none);
        `next_items` the same items as indices (encdec [B], causal [B, S])."""
        states = self.encode(hist_codes, pad)
        if self.causal:  # each real position's state is the context for its next item
            real = (targets[..., 0] >= 0) & ~pad
            memory, targets = states[real].unsqueeze(1), targets[real]
            if next_items is not None:
                next_items = next_items[real]
            pad = torch.zeros(len(memory), 1, dtype=torch.bool, device=memory.device)
        else:
            memory = states
        h = self.decode(targets[:, None, :-1], self.memory_kvs(memory), pad)[:, 0]
        loss = sum(
            F.cross_entropy(self.level_logits(h[:, j], j), targets[:, j])
            for j in range(len(self.sizes))
        )
        if self.id_loss > 0 and next_items is not None:
            logits = self.id_logits(memory[:, -1])
            if self.id_allowed is not None:
                logits = logits.masked_fill(~self.id_allowed, -torch.inf)
            loss = loss + self.id_loss * F.cross_entropy(logits, next_items)
        return loss

    def id_logits(self, state: torch.Tensor) -> torch.Tensor:
        """[B, dim] encoder states → [B, n_items] ID-head logits: the dot product with each
        item's input vector (its code embeddings + its own embedding, when it has one)."""
        out = self.item_vectors(self.all_codes)
        if self.item_emb is not None:
            out = out + self.item_emb.weight
        return state @ out.T

    def item_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """[..., levels] codes → [..., dim]: the sum of the item's code-token embeddings."""
        return sum(self.tok[j](codes[..., j]) for j in range(len(self.sizes)))

    def encode(self, hist_codes: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """hist_codes [B, S, levels + 1] (left-padded, `pad` marks padding; with the item
        embedding, one more column: the item index) → states [B, S, dim].
        Causal: position t sees items ≤ t only, so it is the context for item t + 1."""
        s = hist_codes.shape[1]
        pos = torch.arange(self.max_len - s, self.max_len, device=hist_codes.device)
        x = self.item_vectors(hist_codes.clamp(min=0)) + self.pos(pos)
        if self.item_emb is not None:
            x = x + self.item_emb(hist_codes[..., len(self.sizes)].clamp(min=0))
        x = self.drop(x) * (~pad).unsqueeze(-1)
        mask = causal_padding_mask(~pad) if self.causal else padding_mask(~pad)
        for block in self.enc:
            x = block(x, mask)
        return self.enc_ln(x)

    def memory_kvs(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder layer's cross-attention keys and values over `memory` [B, S, dim]."""
        return [block.memory_kv(memory) for block in self.dec]

    def decode(self, prefix: torch.Tensor, kvs: list, pad: torch.Tensor) -> torch.Tensor:
        """prefix [B, W, t] code tokens written so far (t < levels) → hidden [B, W, t+1, dim]."""
        b, w, t = prefix.shape
        dev = prefix.device
        x = self.level(torch.zeros(b, w, 1, dtype=torch.long, device=dev))  # BOS
        if t:
            toks = torch.stack([self.tok[j](prefix[..., j]) for j in range(t)], 2)
            x = torch.cat([x, toks + self.level(torch.arange(1, t + 1, device=dev))], 2)
        for block, kv in zip(self.dec, kvs, strict=True):
            x = block(x, kv, pad)
        return self.ln(x)

    def level_logits(self, h: torch.Tensor, level: int) -> torch.Tensor:
        return h @ self.tok[level].weight.T


def blended(score: torch.Tensor, id_at: torch.Tensor | None, weight: float) -> torch.Tensor:
    """The hybrid's score of each candidate: its code log-prob + `weight` · the ID head's
    log-softmax at it (`id_at`, [B, candidates]; the code score alone without either)."""
    return score if weight <= 0 or id_at is None else score + weight * id_at


def _id_at(items: torch.Tensor, id_logp: torch.Tensor | None) -> torch.Tensor | None:
    """The ID log-softmax [B, n_items] at the candidate items [B, C] (-1: any), or None."""
    return None if id_logp is None else id_logp.gather(1, items.clamp(min=0))


# The ID-head weights tried on validation after a hybrid is trained: up to 16, where the
# Beauty hybrid measured best (docs/results/beauty-sem-idhead-b50).
ID_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


# ----------------------------------------------------------------------------- model
class SemanticID(Recommender):
    name = "semantic-id"
    capabilities = Capabilities(
        needs_text=True, early_stopping=True, generator=True, cold_items=True, warm_start=True
    )

    @dataclasses.dataclass
    class Config(TrainConfig):
        """The codes, the network and generation; training settings in `TrainConfig`
        (`windows` there applies to `causal`: encdec's random cuts cover every history)."""

        arch: str = "encdec"  # encdec (TIGER) | causal (decoder-only); docs/benchmarks.md
        levels: int = 3  # semantic-ID code levels (+ one uniqueness token)
        codebook: int = 256
        rq_latent: int = 32
        rq_epochs: int = 200
        # what the codes quantise: item text embeddings, the items' collaborative vectors
        # (truncated SVD of the training interactions: for catalogues without useful text),
        # or both side by side
        codes_from: str = "text"
        svd_dim: int = 64
        max_len: int = 50
        dim: int = 128
        heads: int = 4
        enc_layers: int = 2
        dec_layers: int = 2
        dropout: float = 0.1
        epochs: int = 100
        batch_size: int = 256
        samples_per_user: int = 4  # encdec: random history cuts per user per epoch
        # cold items are scored against the items' own text vectors (kept as float16:
        # n_items × 384 × 2 bytes); the 32-d RQ-VAE latent alone loses the near-duplicate
        # detail that finds a new shade of what the user just bought (docs/benchmarks.md)
        cold_text: bool = True
        item_embedding: bool = False  # ID + semantic hybrid: a learned input vector per item
        # ID + semantic hybrid, output side: the encoder state also scores every item
        # (full softmax over the items' input vectors, as SASRec ties them), trained with
        # this weight beside the code loss; the beam is rescored by beam log-prob + w ·
        # that log-softmax, w chosen on validation after training (0 = no ID head)
        id_loss: float = 0.0
        # generation
        beam: int = 20  # beams kept per step (≥ the k you evaluate)
        # ID + semantic hybrid: the ID head's best N unseen items join the beam's candidates,
        # each scored like a beam item (its code log-prob, teacher-forced through the same
        # decoder, + w · the ID head's); 0 = the beam's items alone
        id_candidates: int = 0
        # w above: the ID head's weight in the beam's score (models with an ID head). Chosen
        # on validation after training from ID_WEIGHTS when the fit has a validator.
        id_weight: float = 1.0
        temperature: float = 1.0
        sample: bool = False  # Gumbel top-k instead of top-k: diverse, stochastic lists

        def __post_init__(self) -> None:
            super().__post_init__()
            proposals = self.id_candidates >= 0 and (self.id_candidates == 0 or self.id_loss > 0)
            check(
                {
                    "arch": (self.arch in ("causal", "encdec"), "causal or encdec"),
                    "codes_from": (
                        self.codes_from in ("text", "interactions", "both"),
                        "text, interactions or both",
                    ),
                    "levels": (self.levels >= 1, ">= 1"),
                    "codebook": (self.codebook >= 2, ">= 2"),
                    "beam": (self.beam >= 1, ">= 1"),
                    "id_loss": (self.id_loss >= 0, ">= 0"),
                    "id_candidates": (proposals, ">= 0, and > 0 only with id_loss > 0"),
                    "temperature": (self.temperature > 0, "> 0"),
                    "heads": (
                        self.heads >= 1 and self.dim % self.heads == 0,
                        f"≥ 1 and divide dim ({self.dim})",
                    ),
                    "max_len": (self.max_len >= 1, ">= 1"),
                    "samples_per_user": (self.samples_per_user >= 1, ">= 1"),
                },
                self,
            )

    # -------------------------------------------------------------- training
    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        c = self.config
        vectors = self._code_vectors(data, catalog)
        self.text_vectors = None
        if c.cold_text and c.codes_from != "interactions":
            text = torch.as_tensor(np.asarray(catalog.embeddings[: data.n_items]))  # type: ignore[union-attr]
            self.text_vectors = F.normalize(text.float(), dim=1).half()
        rq, rq_log = train_rqvae(vectors, self._rq_config())
        self.rq = rq.eval()
        emb = torch.as_tensor(vectors, dtype=torch.float32)
        raw = rq.encode(emb).numpy()
        with torch.no_grad():  # the exact (unquantised) latent: cold items' dense view
            self.latent = F.normalize(rq.latent(emb), dim=1)
        # Under torchrun every rank trains against rank 0's codes (the RQ-VAE runs on each).
        codes = distributed.current().share(torch.from_numpy(make_unique(raw)))
        self.codes = codes.to(self.device)
        self.meta["codes"] = code_report(raw, c.codebook) | {"rqvae_recon": rq_log[-1]["recon"]}
        self._build_index()
        self.net = self._build().to(self.device)
        self._train(data, validator)

    def _code_vectors(self, data: Interactions, catalog: Catalog | None) -> np.ndarray:
        """[n_items, d] what the RQ-VAE quantises (see `codes_from`); each part L2-normalised
        (items without interactions get a zero collaborative part)."""
        c = self.config
        text = None
        if c.codes_from in ("text", "both"):
            if catalog is None or catalog.embeddings is None:
                raise ValueError("the semantic-ID model needs item text embeddings (--items)")
            text = np.asarray(catalog.embeddings, dtype=np.float32)[: data.n_items]
            if c.codes_from == "text":
                return text
        from scipy.sparse.linalg import svds

        m = data.matrix("binary").T.tocsr().astype(np.float64)  # items × users
        k = max(1, min(c.svd_dim, min(m.shape) - 1))
        u, sv, _ = svds(m, k=k, random_state=c.seed)
        collab = (u * np.sqrt(sv)).astype(np.float32)
        norms = np.linalg.norm(collab, axis=1, keepdims=True)
        collab = np.divide(collab, norms, out=np.zeros_like(collab), where=norms > 0)
        self.meta["svd_dim"] = k
        if text is None:
            return collab
        text = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
        return np.concatenate([text, collab], axis=1) / np.sqrt(2.0)

    def _grow(self, data: Interactions, catalog: Catalog | None) -> None:
        """The codes are kept; new catalogue items get theirs from the trained RQ-VAE."""
        if data.n_items > self.n_items:
            if catalog is None or catalog.embeddings is None:
                raise ValueError("semantic-id: new items need text embeddings (a catalogue)")
            self.add_items(catalog.embeddings[self.n_items : data.n_items])

    def _train(self, data: Interactions, validator: Validator | None) -> None:
        """The epoch loop over `data` from the current weights (`train_by_epochs`: under
        torchrun every rank takes a share of each global batch, rank 0 validates; with
        `checkpoint_dir` a run resumes where one stopped, the codes being refit alike)."""
        c = self.config
        opt = make_optimizer(self.net, c)
        seqs = (data.indptr, data.item)
        histories = Histories.from_interactions(data)
        windows = torch.from_numpy(histories.training_windows(c.max_len + 1, c.windows)) - 1
        windows = windows[(windows >= 0).sum(1) >= 2]
        epoch_fn = (
            (lambda e, run: self._epoch_causal(windows, opt, e, run))
            if c.arch == "causal"
            else (lambda e, run: self._epoch(seqs, opt, e, run))
        )
        if c.id_loss > 0:  # validation during training sees the hybrid at `id_weight`
            # items without training interactions (cold) are no negatives of the ID head:
            # their item row stays zero and they keep what their codes say
            allowed = torch.from_numpy(self.popularity[: self.n_items] > 0)
            self.net.id_allowed = None if bool(allowed.all()) else allowed.to(self.device)
        train_by_epochs(self, self.net, epoch_fn, validator, opt=opt, data=data)
        valid = rank_zero(validator)
        if c.id_loss > 0 and valid is not None:
            self._choose_id_weight(valid, distributed.current())

    def _choose_id_weight(self, check: Validator, d: distributed.Dist) -> None:
        """The ID head's weight in the beam's score (`id_weight`), chosen from ID_WEIGHTS on
        the validator after training (0 = the code beam alone; ties: the smaller); rank 0
        decides under torchrun. The beam is searched once per validation batch and
        re-blended for each weight."""
        table = {}
        with self.reusing_candidates():
            for w in ID_WEIGHTS:
                self.config = dataclasses.replace(self.config, id_weight=w)
                table[w] = float(check(self))
        best = max(ID_WEIGHTS, key=lambda w: (table[w], -w))
        best = float(d.agree(best)) if d.active else best
        self.config = dataclasses.replace(self.config, id_weight=best)
        self.meta["id_weight_valid"] = {str(w): round(v, 5) for w, v in table.items()}

    def _rq_config(self) -> RQVAEConfig:
        c = self.config
        return RQVAEConfig(
            levels=c.levels,
            codebook=c.codebook,
            latent=c.rq_latent,
            epochs=c.rq_epochs,
            seed=c.seed,
        )

    def _build_index(self) -> None:
        codes = self.codes.cpu().numpy()
        self.sizes = [self.config.codebook] * self.config.levels + [int(codes[:, -1].max()) + 1]
        self.trie = CodeTrie(codes, self.sizes).to(self.device)
        self._latent = None  # item_latent() is recomputed for the new codes

    def _build(self) -> SemanticNet:
        c = self.config
        return SemanticNet(
            self.sizes,
            c.max_len,
            c.dim,
            c.heads,
            c.enc_layers,
            c.dec_layers,
            c.dropout,
            c.arch == "causal",
            self.n_items if c.item_embedding else 0,
            c.id_loss,
            self.codes,
        )

    def _epoch(
        self,
        seqs: tuple[np.ndarray, np.ndarray],
        opt: torch.optim.Optimizer,
        epoch: int,
        run: EpochRun,
    ) -> float:
        """Each user contributes `samples_per_user` (history, next item) pairs cut at random
        positions; deterministic given (seed, epoch). With several ranks each global batch
        is split over them, the loss scaled so the averaged gradient is the batch mean; the
        batches stop when `run.stop()` says the time budget is spent."""
        c, d = self.config, run.d
        indptr, items = seqs
        dev = self.device
        rng = np.random.default_rng([c.seed, epoch])
        lengths = np.diff(indptr)
        users = np.repeat(np.flatnonzero(lengths >= 2), c.samples_per_user)
        rng.shuffle(users)
        torch.manual_seed(c.seed * 100_003 + epoch)
        self.net.train()
        total, count = 0.0, 0
        for b in range(0, len(users), c.batch_size):
            if run.stop():
                break
            u = users[b : b + c.batch_size]
            cut = rng.integers(1, lengths[u])  # target position within the user's sequence
            if len(u) < d.world:
                continue  # too small to give every rank a share (all ranks skip it)
            u, cut = u[d.rank :: d.world], cut[d.rank :: d.world]
            target = items[indptr[u] + cut]
            hist, pad = self._windows(indptr[u], indptr[u] + cut, items)
            t = torch.from_numpy(target).to(dev)
            loss = run.module(self._inputs(hist), pad.to(dev), self.codes[t], t)
            share = len(u) * d.world / d.total(len(u))
            opt.zero_grad(set_to_none=True)
            (loss * share).backward()
            opt.step()
            total += float(loss.detach()) * len(u)
            count += len(u)
        return d.total(total) / max(d.total(count), 1)

    def _epoch_causal(
        self,
        windows: torch.Tensor,
        opt: torch.optim.Optimizer,
        epoch: int,
        run: EpochRun,
    ) -> float:
        """One pass over the training windows (`windows`); every position's state is the context
        for the next item, so one forward pass trains on the whole window (split over
        ranks and stopped by the budget like `_epoch`)."""
        c, d = self.config, run.d
        torch.manual_seed(c.seed * 100_003 + epoch)
        self.net.train()
        order = torch.randperm(len(windows))
        total, count = 0.0, 0
        for b in range(0, len(windows), c.batch_size):
            if run.stop():
                break
            batch = order[b : b + c.batch_size]
            if len(batch) < d.world:
                continue
            w = windows[batch[d.rank :: d.world]]
            w = w[:, (w >= 0).any(0).nonzero().min() :].to(self.device)  # trim all-padding columns
            inp, tgt = w[:, :-1], w[:, 1:]
            targets = torch.where((tgt >= 0)[..., None], self.codes[tgt.clamp(min=0)], -1)
            loss = run.module(self._inputs(inp.clamp(min=0)), inp < 0, targets, tgt)
            n = int(((inp >= 0) & (tgt >= 0)).sum())
            share = n * d.world / max(d.total(n), 1)
            opt.zero_grad(set_to_none=True)
            (loss * share).backward()
            opt.step()
            total += float(loss.detach()) * n
            count += n
        return d.total(total) / max(d.total(count), 1)

    def _inputs(self, hist: torch.Tensor) -> torch.Tensor:
        """The encoder's input per history position: the item's codes, plus its index when
        the model has the ID + semantic item embedding (padding -1 is masked later)."""
        hist = hist.to(self.codes.device)
        codes = self.codes[hist]
        if self.net.item_emb is None:
            return codes
        return torch.cat([codes, hist.clamp(min=0).unsqueeze(-1)], -1)

    def _windows(
        self, start: np.ndarray, end: np.ndarray, items: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Item windows items[max(start, end - max_len):end], left-padded (-1 = padding)."""
        width = int(min(self.config.max_len, max(int((end - start).max()), 1)))
        pos = end[:, None] - width + np.arange(width)[None, :]
        valid = pos >= start[:, None]
        hist = np.where(valid, items[np.clip(pos, 0, len(items) - 1)], -1)
        return torch.from_numpy(hist), torch.from_numpy(~valid)

    # -------------------------------------------------------------- generation
    def generate(
        self, histories: Histories, beam: int | None = None, exclude_seen: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Beam search over the trie: items [B, beam] (-1 where fewer exist) and their
        log-probabilities, best first. Every item is a catalogue item, unseen if asked.
        With `id_candidates` N, the ID head's proposals widen it to [B, beam + N]."""
        items, score, _ = self._generate(histories, beam, exclude_seen)
        return items, score

    @torch.no_grad()  # every caller (`generate`, `_score`) is inference
    def _generate(
        self,
        histories: Histories,
        beam: int | None = None,
        exclude_seen: bool = True,
        id_head: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """`generate`, plus the ID head's log-softmax over all items [B, n_items] from the
        same encoder pass when the model has that head and it is used (the beam's rescoring,
        its proposals, or `id_head`); else None."""
        blend = self.config.id_weight if self.net.id_loss > 0 else 0.0
        cache = getattr(self, "_candidate_cache", None)
        if cache is not None and not id_head:  # a weight sweep: search each batch once
            c = self.config
            digest = hashlib.sha1(histories.indptr.tobytes() + histories.items.tobytes())
            key = (digest.digest(), beam, exclude_seen, blend > 0)
            key += (c.id_candidates, c.temperature, c.sample)
            if key not in cache:
                items, score, id_logp = self._candidates(histories, beam, exclude_seen, blend > 0)
                cache[key] = (items, score, _id_at(items, id_logp))
            items, score, id_at = cache[key]
            id_logp = None
        else:
            items, score, id_logp = self._candidates(
                histories, beam, exclude_seen, id_head or blend > 0
            )
            id_at = _id_at(items, id_logp)
        score = blended(score, id_at, blend)
        order = score.argsort(1, descending=True)
        ids = None if id_logp is None else id_logp.cpu()
        return items.gather(1, order).cpu(), score.gather(1, order).cpu(), ids

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
        log-softmax [B, n_items] when the model has that head and `id_head` or proposals
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
            seen = torch.from_numpy(histories.matrix().toarray() > 0).to(dev)
            open_nodes = trie.open_nodes(seen)
        for j, size in enumerate(self.sizes):
            k = node.shape[1]
            h = net.decode(prefix, kvs, pad)[:, :, -1]  # [b, k, dim]
            logp = F.log_softmax(net.level_logits(h, j) / c.temperature, -1)
            nxt = trie.child[j][node]  # [b, k, size]
            allowed = nxt >= 0
            if open_nodes is not None:  # only prefixes that can still end on an unseen item
                ok = open_nodes[j].gather(1, nxt.clamp(min=0).view(b, -1)).view(b, k, size)
                allowed &= ok
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
        id_logp = None
        if net.id_loss > 0 and (id_head or extra > 0):  # newest position
            id_logp = F.log_softmax(net.id_logits(memory[:, -1]).float(), -1)
        if extra > 0 and id_logp is not None:
            items, score = self._add_id_candidates(items, score, id_logp, kvs, pad, extra, seen)
        return items, score, id_logp

    def _add_id_candidates(
        self,
        items: torch.Tensor,
        score: torch.Tensor,
        id_logp: torch.Tensor,
        kvs: list,
        pad: torch.Tensor,
        n: int,
        seen: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The beam's items [B, W] and code log-probs, widened by the ID head's best `n`
        unseen items that the beam did not write ([B, W + n]; -1 / -inf where a proposal
        duplicates a beam item). A proposal's code log-prob is what the beam would have
        given it: the sum of its code tokens' log-softmax, teacher-forced."""
        net, c = self.net, self.config
        ranked = id_logp if seen is None else id_logp.masked_fill(seen, -torch.inf)
        top = torch.topk(ranked, min(n, ranked.shape[1]), dim=1)
        prop = top.indices
        dup = (prop.unsqueeze(-1) == items.unsqueeze(1)).any(-1) | ~torch.isfinite(top.values)
        codes = net.all_codes[prop]  # [B, n, levels + 1]
        h = net.decode(codes[..., :-1], kvs, pad)  # [B, n, levels + 1, dim]
        logp = sum(
            F.log_softmax(net.level_logits(h[:, :, j], j) / c.temperature, -1)
            .gather(-1, codes[..., j : j + 1])
            .squeeze(-1)
            for j in range(len(self.sizes))
        )
        logp = torch.where(dup, -torch.inf, logp)
        prop = torch.where(dup, -1, prop)
        return torch.cat([items, prop], 1), torch.cat([score, logp], 1)

    def _score(self, histories: Histories, k: int) -> torch.Tensor:
        """Generated items carry their beam log-probability; everything else -inf. Cold
        items enter only what the beam writes; a fitted `ColdGate` stage
        (generate/stages.py) adds them from where the list points."""
        width = beam_width(self.config.beam, k, self.n_items)
        items, logp, _ = self._generate(histories, width)
        out = torch.full((len(histories), self.n_items), -torch.inf)
        ok = items >= 0
        rows = torch.arange(len(histories)).unsqueeze(1).expand_as(items)
        out[rows[ok], items[ok]] = logp[ok]
        return out

    # -------------------------------------------------------------- cold items
    def cold_items(self) -> np.ndarray:
        """Items the generator never saw a user take (no training interactions): TIGER's
        beam almost never writes them, since their codes were never a target."""
        return np.flatnonzero(self.popularity[: self.n_items] <= 0)

    def item_latent(self) -> torch.Tensor:
        """Each item's point in the RQ-VAE's latent space, L2-normalised: the model's own
        dense view of what an item is about. The exact encoder output where the model kept
        it (fitted since session 7), else the sum of the item's code vectors."""
        latent = getattr(self, "latent", None)
        if latent is not None and len(latent) == self.n_items:
            return latent
        if getattr(self, "_latent", None) is None or len(self._latent) != self.n_items:
            books = self.rq.codebooks.detach().cpu()
            codes = self.codes.cpu()
            z = sum(books[j][codes[:, j]] for j in range(books.shape[0]))
            self._latent = F.normalize(z, dim=1)
        return self._latent

    @torch.no_grad()
    def cold_similarity(
        self,
        histories: Histories,
        items: torch.Tensor,
        logp: torch.Tensor,
        mix: float,
        view: str = "latent",
        id_cold: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, n_cold] cosine between each cold item and where the user is heading.

        `view="latent"` (RQ-VAE latent): the generated list's centroid (items weighted by
        their beam probability), mixed with weight `mix` with the centroid of the user's
        last 3 items.
        `view="text"` (the items' text vectors): (1 − mix) · the best match among the last
        3 items (0.05 less per step back) + mix · the cosine to the beam's centroid.
        `view="id"` (models with an ID head): (1 − mix) · the head's log-probability / 10
        + mix · the text view's score; cold items were never the head's negatives, so it
        reads them through their codes (`id_cold`: those log-probabilities [B, n_cold]
        when the caller already has them, e.g. `cold_id_logp`, else they are computed).
        Either way cold items come in through the same generation step, LIGER-style dense
        scoring of the beam."""
        if view == "id":  # the ID head's own log-probability of each cold item (/10)
            ids = (self.cold_id_logp(histories) if id_cold is None else id_cold) / 10.0
            if mix > 0 and getattr(self, "text_vectors", None) is not None:
                text = self.cold_similarity(histories, items, logp, 0.0, "text")
                return (1 - mix) * ids + mix * text
            return ids
        text = view == "text"
        if text and getattr(self, "text_vectors", None) is None:
            raise ValueError("semantic-id: this model kept no text vectors for cold items")
        z = self.text_vectors.float() if text else self.item_latent()
        ok = items >= 0
        w = torch.softmax(torch.where(ok, logp, -torch.inf), dim=1).nan_to_num(0.0)
        beam = F.normalize((w.unsqueeze(-1) * z[items.clamp(min=0)]).sum(1), dim=1)
        zc = z[torch.from_numpy(self.cold_items())]
        if text:
            best = torch.full((len(histories), len(zc)), -2.0)
            lo, hi = histories.indptr[:-1], histories.indptr[1:]
            seq = histories.items if len(histories.items) else np.zeros(1, np.int64)
            for back in range(3):
                pos = hi - 1 - back
                has = torch.from_numpy(pos >= lo)
                at = torch.from_numpy(seq[np.clip(pos, 0, len(seq) - 1)])
                s = z[at] @ zc.T - 0.05 * back
                best = torch.where(has.unsqueeze(1), torch.maximum(best, s), best)
            best = torch.where(best > -2.0, best, beam @ zc.T)  # no history: the beam alone
            return (1 - mix) * best + mix * (beam @ zc.T)
        start = np.maximum(histories.indptr[1:] - 3, histories.indptr[:-1])
        hist, pad = self._windows(start, histories.indptr[1:], histories.items)
        keep = (~pad).float().unsqueeze(-1)
        recent = F.normalize((z[hist.clamp(min=0)] * keep).sum(1), dim=1)
        v = F.normalize((1 - mix) * beam + mix * recent, dim=1)
        return v @ zc.T

    @torch.no_grad()
    def cold_id_logp(self, histories: Histories) -> torch.Tensor:
        """[B, n_cold] the ID head's log-softmax of each cold item after each history (CPU),
        in batches (only the cold columns are kept: the full matrix of a validation set is
        GBs)."""
        if self.net.id_loss <= 0:
            raise ValueError("semantic-id: the `id` view needs a model with an ID head")
        cold = torch.from_numpy(self.cold_items())
        out, indptr = [], histories.indptr
        self.net.eval()
        for b in range(0, len(histories), 1024):
            lo, hi = indptr[:-1][b : b + 1024], indptr[1:][b : b + 1024]
            hist, pad = self._windows(lo, hi, histories.items)
            memory = self.net.encode(self._inputs(hist), pad.to(self.device))
            logp = F.log_softmax(self.net.id_logits(memory[:, -1]).float(), -1)
            out.append(logp.cpu()[:, cold])
        return torch.cat(out) if out else torch.zeros(0, len(cold))

    # -------------------------------------------------------------- artefacts
    @torch.no_grad()
    def add_items(self, embeddings: np.ndarray) -> np.ndarray:
        """Make new items (text embeddings only, no interactions) generable without
        retraining: the trained RQ-VAE gives their codes, a uniqueness token follows the
        items already sharing that code, the trie grows. Returns their new indices."""
        emb = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
        if emb.ndim != 2 or len(emb) == 0:
            raise ValueError("expected a non-empty [n, dim] array of embeddings")
        if self.config.codes_from == "interactions":
            raise ValueError(
                "semantic-id: codes_from=interactions has no codes for text-only items; "
                "refit with the new items' interactions, or use codes_from=text or both"
            )
        if self.config.codes_from == "both":  # text now, no interactions yet: a zero part
            emb = F.normalize(emb, dim=1)
            emb = torch.cat([emb, torch.zeros(len(emb), int(self.meta["svd_dim"]))], 1) / 2**0.5
        if getattr(self, "text_vectors", None) is not None:
            text = F.normalize(torch.as_tensor(np.asarray(embeddings)).float(), dim=1)
            self.text_vectors = torch.cat([self.text_vectors, text.half()])
        raw = self.rq.encode(emb).numpy()
        if getattr(self, "latent", None) is not None:
            self.latent = torch.cat([self.latent, F.normalize(self.rq.latent(emb), dim=1)])
        existing: dict[tuple, int] = {}
        for row in self.codes.cpu().numpy():
            key = tuple(row[:-1])
            existing[key] = max(existing.get(key, 0), int(row[-1]) + 1)
        new = np.zeros((len(raw), raw.shape[1] + 1), dtype=np.int64)
        for n, row in enumerate(raw):
            key = tuple(row)
            new[n, :-1], new[n, -1] = row, existing.get(key, 0)
            existing[key] = new[n, -1] + 1
        first = self.n_items
        self.codes = torch.cat([self.codes, torch.from_numpy(new).to(self.codes.device)])
        self.n_items += len(new)
        self.popularity = np.concatenate([self.popularity, np.zeros(len(new), dtype=np.float32)])
        old_size = self.sizes[-1]
        self._build_index()
        grow = self.sizes[-1] - old_size
        if grow > 0:  # more uniqueness tokens: new rows start at the mean of the trained ones
            table = self.net.tok[-1]
            rows = table.weight.mean(0, keepdim=True).expand(grow, -1)
            bigger = nn.Embedding(self.sizes[-1], table.weight.shape[1]).to(table.weight.device)
            bigger.weight.copy_(torch.cat([table.weight, rows]))
            self.net.tok[-1] = bigger
            self.net.sizes = self.sizes
        self.net.all_codes = self.codes  # the ID head scores new items by their codes
        if self.net.item_emb is not None:  # new items read as their codes alone (zero rows)
            old = self.net.item_emb.weight
            grown = nn.Embedding(self.n_items, old.shape[1]).to(old.device)
            grown.weight.zero_()
            grown.weight[: len(old)] = old
            self.net.item_emb = grown
        return np.arange(first, self.n_items)

    def _state(self) -> dict[str, np.ndarray]:
        state = {f"net.{k}": v.cpu().numpy() for k, v in self.net.state_dict().items()}
        state |= {f"rq.{k}": v.detach().cpu().numpy() for k, v in self.rq.state_dict().items()}
        state["codes"] = self.codes.cpu().numpy()
        if getattr(self, "latent", None) is not None:
            state["latent"] = self.latent.cpu().numpy()
        if getattr(self, "text_vectors", None) is not None:
            state["text_vectors"] = self.text_vectors.cpu().numpy()
        return state

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        c, n = self.config, self.n_items
        mean = state.get("rq.mean")  # the RQ-VAE's input size: the vectors it was fit on
        if mean is None or mean.ndim != 1:
            raise ValueError("weights.safetensors: model.rq.mean is missing or not a vector")
        self.rq = RQVAE(int(mean.shape[0]), self._rq_config())
        self._load_module(self.rq, state, "rq.")
        self.rq.eval()
        rest = {k: v for k, v in state.items() if not k.startswith(("rq.", "net.", "head."))}
        spec: dict[str, tuple] = {"codes": ((n, c.levels + 1), ("int64",))}
        if "latent" in rest:
            spec["latent"] = ((n, c.rq_latent), ("float32",))
        if "text_vectors" in rest:  # optional: cold items' text (kept in half precision)
            spec["text_vectors"] = ((n, None), ("float16",))
        self._expect(rest, spec)
        codes = state["codes"]
        if n and (codes.min() < 0 or codes[:, : c.levels].max() >= c.codebook):
            raise ValueError(f"weights.safetensors: model.codes fall outside 0..{c.codebook - 1}")
        self.codes = torch.from_numpy(codes).to(self.device)
        self.latent = torch.from_numpy(state["latent"]) if "latent" in state else None
        tv = state.get("text_vectors")
        self.text_vectors = torch.from_numpy(tv) if tv is not None else None
        self._build_index()
        self.net = self._build()
        self._load_module(self.net, state, "net.")
        self.net.to(self.device).eval()
