"""The semantic-ID generator's network: a history encoder over items' code embeddings and
a code decoder that writes the next item's code token by token."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from directrec.models.ann import IVFIndex
from directrec.models.settings import Checks, NetworkConfig, setting
from directrec.models.transformer import (
    Block,
    causal_padding_mask,
    full_softmax_ce,
    padding_mask,
)


# ----------------------------------------------------------------------------- network
@dataclasses.dataclass
class SemanticNetConfig(NetworkConfig):
    """The shape of the history encoder and the code decoder."""

    arch: str = setting("causal", "causal (decoder-only) | encdec (TIGER)")
    max_len: int = setting(50, "most recent items the model reads (context length)")
    dim: int = setting(128, "embedding and hidden width")
    heads: int = setting(4, "attention heads (must divide dim)")
    enc_layers: int = setting(2, "encoder (or decoder-only) Transformer blocks")
    dec_layers: int = setting(2, "decoder Transformer blocks (encdec)")
    dropout: float = setting(0.1, "dropout on embeddings, attention and residual paths")
    item_embedding: bool = setting(
        True, "ID + semantic hybrid: a learned input vector per item beside its codes"
    )

    def checks(self) -> Checks:
        return {
            "arch": (self.arch in ("causal", "encdec"), "causal or encdec"),
            "max_len": (self.max_len >= 1, ">= 1"),
            "dim": (self.dim >= 1, ">= 1"),
            "heads": (
                self.heads >= 1 and self.dim % self.heads == 0,
                f"≥ 1 and divide dim ({self.dim})",
            ),
            "enc_layers": (self.enc_layers >= 1, ">= 1"),
            "dec_layers": (self.dec_layers >= 1, ">= 1"),
            "dropout": (0 <= self.dropout < 1, "in [0, 1)"),
        }


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
        cfg: SemanticNetConfig,
        n_items: int = 0,
        id_loss: float = 0.0,
        codes: torch.Tensor | None = None,
    ) -> None:
        """`sizes`: each code level's vocabulary; `n_items`: the catalogue (the hybrid's
        per-item input vectors, with `cfg.item_embedding`); `id_loss` > 0: the ID head's
        weight in the loss, `codes` every item's full code (its output vectors)."""
        super().__init__()
        dim, heads, dropout = cfg.dim, cfg.heads, cfg.dropout
        self.sizes, self.max_len, self.causal = sizes, cfg.max_len, cfg.arch == "causal"
        n_items = n_items if cfg.item_embedding else 0
        self.id_loss = id_loss
        # every item's full code (levels + uniqueness), for the ID head's output vectors
        self.register_buffer("all_codes", codes if codes is not None else torch.zeros(0, 1), False)
        # items the ID head may be trained on (None: all; set by `allow_ids`): items with
        # no training interactions are never negatives, so cold items keep their codes' score
        self.id_allowed: torch.Tensor | None = None
        self.id_keep: torch.Tensor | None = None  # their indices
        self.id_at: torch.Tensor | None = None  # item → its row among them (-1: not allowed)
        self._id_cache: tuple | None = None  # (weights' key, id_table) while scoring
        self._ivf_cache: tuple | None = None  # ((weights' key, shape, seed), IVFIndex)
        self.tok = nn.ModuleList(nn.Embedding(v, dim) for v in sizes)  # one table per level
        # ID + semantic hybrid: a per-item input embedding added to the code embeddings
        # (zero at start, so an item the model never trained on reads as its codes alone)
        self.item_emb = nn.Embedding(n_items, dim) if n_items > 0 else None
        if self.item_emb is not None:
            nn.init.zeros_(self.item_emb.weight)
        self.pos = nn.Embedding(cfg.max_len, dim)
        self.level = nn.Embedding(len(sizes) + 1, dim)  # decoder: BOS + one per level
        self.drop = nn.Dropout(dropout)
        self.enc = nn.ModuleList(Block(dim, heads, dropout) for _ in range(cfg.enc_layers))
        self.enc_ln = nn.LayerNorm(dim)
        self.dec = nn.ModuleList(DecoderBlock(dim, heads, dropout) for _ in range(cfg.dec_layers))
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
            # chunked: the [targets, n_items] logits never exist whole (10^6 items)
            out = self.id_table()
            if self.id_keep is not None and self.id_at is not None:  # no negatives: cold items
                out, next_items = out[self.id_keep], self.id_at[next_items]
                if bool((next_items < 0).any()):
                    raise ValueError("an ID-head target is an item it may not train on")
            loss = loss + self.id_loss * full_softmax_ce(memory[:, -1], out, next_items)
        return loss

    def allow_ids(self, allowed: torch.Tensor | None) -> None:
        """The items the ID head trains on ([n_items] bool; None: all of them)."""
        self.id_allowed = allowed
        if allowed is None:
            self.id_keep = self.id_at = None
            return
        self.id_keep = allowed.nonzero().squeeze(1)
        self.id_at = torch.full(allowed.shape, -1, dtype=torch.long, device=allowed.device)
        self.id_at[self.id_keep] = torch.arange(len(self.id_keep), device=allowed.device)

    def id_table(self) -> torch.Tensor:
        """[n_items, dim] the ID head's output vectors: each item's input vector (its code
        embeddings + its own embedding, when it has one), tied as SASRec ties them. Without
        gradients (scoring) it is built once and kept until the weights or codes change
        (their storage or version counter): rebuilding it is O(n_items) per call, most of
        a one-user call at 10^5 items and more."""
        tables = [t.weight for t in self.tok]
        if self.item_emb is not None:
            tables.append(self.item_emb.weight)
        key = tuple((t.data_ptr(), t._version) for t in [self.all_codes, *tables])
        cache = self._id_cache
        if not torch.is_grad_enabled() and cache is not None and cache[0] == key:
            return cache[1]
        out = self.item_vectors(self.all_codes)
        if self.item_emb is not None:
            out = out + self.item_emb.weight
        if torch.is_grad_enabled():
            self._id_cache = None
            return out
        # kept stored as [dim, n_items] (returned as its [n_items, dim] view): one user's
        # scores then stream the table row by row, a fifth faster at 10^6 items on one core
        out = out.T.contiguous().T
        self._id_cache = (key, out)
        return out

    @torch.no_grad()  # an index serves inference only
    def id_index(self, seed: int) -> IVFIndex:
        """An IVF index over `id_table()` (models/ann.py), built at the first call and kept
        while the table is (the weights and codes unchanged). A service builds it in the
        canary that runs before a version is swapped in, not in a request."""
        table = self.id_table()  # without gradients: kept, with its weights' key
        key = (self._id_cache[0], table.shape, seed)  # type: ignore[index]
        if self._ivf_cache is None or self._ivf_cache[0] != key:
            self._ivf_cache = (key, IVFIndex.build(table, seed))
        return self._ivf_cache[1]

    def id_logits(self, state: torch.Tensor) -> torch.Tensor:
        """[B, dim] encoder states → [B, n_items] ID-head logits."""
        return state @ self.id_table().T

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
